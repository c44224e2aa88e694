"""The FastAPI application: :func:`create_app` builds it from :class:`ServiceSettings`.

Every response carries ``X-Request-ID`` (the client's, or a new one) and ``X-Model-Version``;
every request is logged as one JSON line with its id, route, status and milliseconds, and
timed in the ``avrec_request_seconds`` histogram per route. Errors are JSON
``{"code", "message"}``: 401/403 for keys and scopes, 404 for unknown items, 413 for bodies
over the limit, 422 for invalid fields (the field named), 429 over the rate limit; an
unexpected error is a logged 500 with the request id, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from avrec import __version__
from avrec.errors import (
    AvrecError,
    ConfigError,
    DataError,
    StoreUnavailableError,
    UnknownEntityError,
)
from avrec.service.deps import ApiError, scrub_paths
from avrec.service.metrics import LATENCY
from avrec.service.settings import ServiceSettings

__all__ = ["create_app"]

log = logging.getLogger("avrec.service")
access = logging.getLogger("avrec.access")
STATIC = Path(__file__).parent / "static"


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def _configure_logging(as_json: bool) -> None:
    root = logging.getLogger("avrec")
    if any(getattr(h, "_avrec", False) for h in root.handlers):
        return
    handler = logging.StreamHandler()
    handler._avrec = True  # type: ignore[attr-defined]
    if as_json:
        handler.setFormatter(_JsonFormatter())
    root.addHandler(handler)
    root.setLevel(logging.INFO)


class _Middleware:
    """Pure ASGI: request id, body size limit, timing, metrics, the model version header."""

    def __init__(self, app: Any, fastapi: FastAPI, max_body: int) -> None:
        self.app, self.fastapi, self.max_body = app, fastapi, max_body

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await _send_json(send, 413, "too_large", f"body over {self.max_body:,} bytes", rid)
            self._log(scope, 413, start, rid)
            return
        seen = 0

        async def limited_receive() -> dict:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_body:
                    raise _TooLarge
            return msg

        status = 500

        async def send_wrapper(msg: dict) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
                st = getattr(self.fastapi.state, "service", None)
                b = getattr(st, "bundle", None)
                extra = [(b"x-request-id", rid.encode("latin-1"))]
                if b is not None:
                    extra.append((b"x-model-version", b.label.encode()))
                msg["headers"] = [*msg.get("headers", []), *extra]
            await send(msg)

        try:
            await self.app(scope, limited_receive, send_wrapper)
        except _TooLarge:
            status = 413
            await _send_json(send, 413, "too_large", f"body over {self.max_body:,} bytes", rid)
        self._log(scope, status, start, rid)

    def _log(self, scope: dict, status: int, start: float, rid: str) -> None:
        seconds = time.perf_counter() - start
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        LATENCY.labels(scope["method"], route, str(status)).observe(seconds)
        access.info(
            "%s %s %s",
            scope["method"],
            scope["path"],
            status,
            extra={
                "fields": {
                    "request_id": rid,
                    "method": scope["method"],
                    "path": scope["path"],
                    "route": route,
                    "status": status,
                    "ms": round(seconds * 1000, 2),
                }
            },
        )


class _TooLarge(Exception):
    pass


async def _send_json(send: Any, status: int, code: str, message: str, rid: str) -> None:
    body = json.dumps({"code": code, "message": message, "request_id": rid}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", rid.encode("latin-1")),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _error(request: Request, status: int, code: str, message: str, detail: Any = None,
           headers: dict[str, str] | None = None) -> JSONResponse:  # fmt: skip
    rid = request.scope.get("state", {}).get("request_id")
    body = {"code": code, "message": message, "request_id": rid}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=status, headers=headers)


def _internal(request: Request, exc: Exception, what: str) -> JSONResponse:
    """A 500: the detail goes to the log, the answer carries the request id only (no
    message, no path, no traceback)."""
    rid = request.scope.get("state", {}).get("request_id")
    log.error(what, exc_info=exc, extra={"fields": {"path": request.url.path, "request_id": rid}})
    return _error(request, 500, "internal", "internal error; the request id is in the log")


def create_app(settings: ServiceSettings | None = None, state: Any = None) -> FastAPI:
    """The service for ``settings`` (default: from the environment). ``state`` is a ready
    :class:`ServiceState` (tests); by default the workspace's is opened.

    Raises:
        ConfigError: no workspace, bad keys (placeholders outside dev mode), a bad limit.
    """
    from fastapi.middleware.cors import CORSMiddleware

    from avrec.service.routes import (
        catalogue,
        events,
        health,
        language,
        online,
        recommend,
        tokens,
    )  # fmt: skip
    from avrec.service.security import AuthFailures, KeyRing, RateLimiter, UserTokens
    from avrec.service.state import ServiceState
    from avrec.storage import open_store
    from avrec.workspace import Workspace

    cfg = settings or ServiceSettings()
    _configure_logging(cfg.log_json)
    if state is None:
        if cfg.workspace is None:
            raise ConfigError("no workspace: pass --workspace or set AVREC_WORKSPACE")
        ws = Workspace(cfg.workspace)
        ws.store_wait_s = cfg.store_wait_s
        state = ServiceState(
            ws, model=cfg.model, durable=cfg.durable, refresh_s=cfg.refresh_s,
            cache_s=cfg.cache_s,
        )  # fmt: skip
    keys_file = cfg.api_keys_file
    if keys_file is None and (state.ws.root / "api-keys.txt").is_file():
        keys_file = state.ws.root / "api-keys.txt"
    keys = KeyRing.from_settings(cfg.api_keys, keys_file, cfg.dev)

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> Any:
        import anyio.to_thread

        # CPU-bound requests: a few threads per process, not anyio's forty fighting for
        # the GIL
        anyio.to_thread.current_default_thread_limiter().total_tokens = cfg.threads
        yield
        if state.impressions is not None:  # what is still in the journal goes to the store
            state.impressions.close()
            if state.impressions.store is not state.store:  # its own connection
                state.impressions.store.close()

    app = FastAPI(
        lifespan=lifespan,
        title="avrec",
        version=__version__,
        summary="Recommendations for audio and video catalogues",
        description="Send events, get recommendations that follow them at once, search and "
        "ask in words. Authenticate with `Authorization: Bearer <key>`; keys have the scopes "
        "read, write or admin.",
    )
    app.state.settings = cfg
    app.state.service = state
    app.state.keys = keys
    # the counters' store: a connection of its own, since the checks run before every request
    # and must not queue behind the process lock that the event writer holds through each
    # commit's fsync; a shared store (a database) also counts the rate limit, so that it
    # holds across every node, and is safe across threads without a lock
    counters = open_store(state.ws.store_url)
    app.state.limiter = RateLimiter(cfg.rate_limit, counters if counters.shared else None)
    app.state.tokens = UserTokens.for_workspace(
        state.ws.root, cfg.token_secret, cfg.token_max_ttl_s
    )
    app.state.auth_failures = AuthFailures(
        counters, contextlib.nullcontext() if counters.shared else threading.Lock(),
        cfg.auth_fail_limit, cfg.auth_fail_window_s,
    )  # fmt: skip

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = getattr(exc, "code", None) or {404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "error"
        )
        return _error(request, exc.status_code, code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        first = errs[0] if errs else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        detail = [
            {"field": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg")}
            for e in errs[:20]
        ]
        return _error(request, 422, "invalid", f"{where}: {first.get('msg')}", detail)

    @app.exception_handler(AvrecError)
    async def domain(request: Request, exc: AvrecError) -> JSONResponse:
        if isinstance(exc, UnknownEntityError):
            return _error(request, 404, "unknown", scrub_paths(str(exc)))
        if isinstance(exc, (ConfigError, DataError)):  # an argument the request gave
            return _error(request, 400, "bad_request", scrub_paths(str(exc)))
        if isinstance(exc, StoreUnavailableError):  # the database is restarting: retry
            log.warning("%s %s: %s", request.method, request.url.path, exc)
            return _error(
                request, 503, "store_unavailable",
                "the store is unavailable for a moment; retry shortly",
                headers={"Retry-After": "1"},
            )  # fmt: skip
        # anything else (a broken bundle, the store) is the server's fault
        return _internal(request, exc, "request failed")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return _internal(request, exc, "unexpected error")

    for r in (recommend, events, catalogue, language, health, tokens, online):
        app.include_router(r.router)

    from fastapi.responses import FileResponse

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        """The web page: pick a user, see cards, like or dislike, ask in words."""
        return FileResponse(STATIC / "index.html")

    @app.get("/admin", include_in_schema=False)
    def dashboard() -> FileResponse:
        """The operator dashboard (its data needs an admin key: /v1/admin/overview)."""
        return FileResponse(STATIC / "admin.html")

    vendored = {"uPlot.iife.min.js": "text/javascript", "uPlot.min.css": "text/css"}

    @app.get("/admin/assets/{name}", include_in_schema=False)
    def asset(name: str) -> FileResponse:
        """The dashboard's vendored chart library (uPlot, MIT): these two files only."""
        if name not in vendored:
            raise ApiError(404, "not_found", "no such asset")
        return FileResponse(STATIC / "vendor" / name, media_type=vendored[name])

    origins = [o.strip() for o in cfg.cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "X-Model-Version"],
        )
    from avrec.privacy.pseudonyms import PseudonymMiddleware, Pseudonyms

    pseudonyms = Pseudonyms.from_config(state.ws.config.privacy)
    if pseudonyms is not None:  # inside the size limit: paths and bodies carry pseudonyms
        app.add_middleware(PseudonymMiddleware, pseudonyms=pseudonyms)
    app.add_middleware(_Middleware, fastapi=app, max_body=cfg.max_body_bytes)
    if cfg.retrain_every_s > 0:
        _schedule(state, cfg.retrain_every_s)
    return app


def _schedule(state: Any, every_s: float) -> None:
    """Retrain every ``every_s`` seconds; with several processes, the one that takes the
    store's lease for this period does it. A failing turn (the store busy or broken) is
    logged and the next period tries again: the thread never dies."""

    def loop() -> None:
        while True:
            time.sleep(every_s)
            scheduled_turn(state, every_s)

    threading.Thread(target=loop, name="avrec-schedule", daemon=True).start()


def scheduled_turn(state: Any, every_s: float) -> bool:
    """One turn of the schedule: take this period's lease and retrain; ``True`` when this
    process took it. Errors are logged, never raised."""
    try:
        period = int(time.time() // every_s)
        with state.lock, state.store.transaction():  # BEGIN IMMEDIATE: one taker
            taken = state.store.get_state("lease", f"retrain-{period}") is not None
            if not taken:
                state.store.put_state("lease", f"retrain-{period}", {"pid": os.getpid()}, every_s)
        if not taken:
            state.retrain()
        return not taken
    except Exception:  # noqa: BLE001 - the schedule must outlive a bad moment of the store
        log.exception("scheduled retraining failed; trying again next period")
        return False
