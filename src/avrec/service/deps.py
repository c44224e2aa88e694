"""Dependencies of the routes: the process state, and authentication with scopes and rate
limits (``Authorization: Bearer <key>``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fastapi import Depends, HTTPException, Request

from avrec.service.security import USER, KeyRing, Principal, hash_key, looks_like_token
from avrec.service.settings import ServiceSettings
from avrec.service.state import Bundle, ServiceState

__all__ = ["ApiError", "act_for", "bundle", "require", "scrub_paths", "service_state", "settings"]

_PATH = re.compile(r"(?<![\w.:/])(?:~|\.{1,2})?/(?:[^\s/'\"<>]+/)+[^\s/'\"<>]*")


def scrub_paths(message: str) -> str:
    """A message with the server's file paths taken out: no path leaves the server."""
    return _PATH.sub("<path>", message)


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


def require(scope: str, users: bool = False) -> Callable[..., Any]:
    """A dependency that lets a request through when it is authenticated with ``scope`` (or
    more) and its rate limit is not spent, and returns who it acts as (:class:`Principal`).

    ``users``: a user token (``POST /v1/tokens``) is accepted too; the route then checks the
    user it acts for (:func:`act_for`). 401 without valid credentials, 403 with too small a
    scope (or a user token where only keys are accepted), 429 over the rate limit or after
    too many failed attempts from the client's address (counted in the store, so across
    every worker), with ``Retry-After``."""

    def check(request: Request) -> Principal:
        app = request.app.state
        keys: KeyRing = app.keys
        addr = request.client.host if request.client else "-"
        wait = app.auth_failures.blocked(addr)
        if wait is not None:
            raise _too_many("too many failed authentications from this address", wait)
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else None
        principal: Principal | None = None
        if token and looks_like_token(token):
            user = app.tokens.user_of(token)
            if user is not None:
                principal = Principal(USER, user)
        else:
            got = keys.scope_of(token)
            if got is not None:
                principal = Principal(got)
        if principal is None:
            wait = app.auth_failures.failed(addr)
            if wait is not None:
                raise _too_many("too many failed authentications from this address", wait)
            raise ApiError(
                401,
                "unauthorized",
                "a valid API key or user token is required: Authorization: Bearer <key>",
                {"WWW-Authenticate": "Bearer"},
            )
        if principal.is_user:
            who = "user:" + str(principal.user)
        else:
            who = hash_key(token)[:16] if token else addr
        wait = app.limiter.hit(who)
        if wait is not None:
            raise _too_many("too many requests for this key", wait)
        if principal.is_user:
            if not users:
                raise ApiError(
                    403, "forbidden", "a user token may read its user's recommendations, "
                    "search, ask and post its user's events; this needs an API key",
                )  # fmt: skip
        elif not keys.allows(principal.scope, scope):
            raise ApiError(
                403, "forbidden", f"this key's scope is {principal.scope!r}; {scope!r} is needed"
            )
        request.state.principal = principal
        return principal

    return check


def act_for(principal: Principal, user_id: str | None) -> None:
    """A user token acts for its own user only (403 for any other)."""
    if principal.is_user and user_id is not None and user_id != principal.user:
        raise ApiError(403, "forbidden", "this user token is for another user")


def _too_many(what: str, wait: float) -> ApiError:
    return ApiError(
        429,
        "rate_limited",
        f"{what}; try again in {wait:.1f} s",
        {"Retry-After": str(max(1, int(wait + 0.999)))},
    )
