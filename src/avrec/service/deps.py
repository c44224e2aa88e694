"""Dependencies of the routes: the process state, and authentication with scopes and rate
limits (``Authorization: Bearer <key>``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Depends, HTTPException, Request

from avrec.service.security import KeyRing, RateLimiter, hash_key
from avrec.service.settings import ServiceSettings
from avrec.service.state import Bundle, ServiceState

__all__ = ["ApiError", "bundle", "require", "service_state", "settings"]


class ApiError(HTTPException):
    """An error answered as ``{"code", "message"}`` with its HTTP status."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status_code=status, detail=message, headers=headers)
        self.code = code


def service_state(request: Request) -> ServiceState:
    return request.app.state.service


def settings(request: Request) -> ServiceSettings:
    return request.app.state.settings


def bundle(st: ServiceState = Depends(service_state)) -> Bundle:
    """The bundle this request is served by (the same one to its end, even when a newer one
    is swapped in meanwhile); events and changes by any process are read first."""
    st.maybe_reload()
    b = st.bundle
    if b is None:
        raise ApiError(503, "no_model", "no trained model yet: run avrec train")
    st.refresh()
    return b


def require(scope: str) -> Callable[..., Any]:
    """A dependency that lets a request through when its key has ``scope`` (or more) and its
    rate limit is not spent; 401 without a valid key, 403 with too small a scope, 429 over
    the limit (with ``Retry-After``)."""

    def check(request: Request) -> str:
        keys: KeyRing = request.app.state.keys
        limiter: RateLimiter = request.app.state.limiter
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else None
        got = keys.scope_of(token)
        if got is None:
            raise ApiError(
                401,
                "unauthorized",
                "a valid API key is required: Authorization: Bearer <key>",
                {"WWW-Authenticate": "Bearer"},
            )
        who = hash_key(token)[:16] if token else (request.client.host if request.client else "-")
        wait = limiter.hit(who)
        if wait is not None:
            raise ApiError(
                429,
                "rate_limited",
                f"too many requests for this key; try again in {wait:.1f} s",
                {"Retry-After": str(max(1, int(wait + 0.999)))},
            )
        if not keys.allows(got, scope):
            raise ApiError(403, "forbidden", f"this key's scope is {got!r}; {scope!r} is needed")
        request.state.scope = got
        return got

    return check
