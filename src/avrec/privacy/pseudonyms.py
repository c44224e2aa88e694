"""Pseudonymous user ids: the platform's own ids replaced by a keyed HMAC-SHA256.

With ``[privacy] pseudonymous_ids = true`` every user id that comes in (event and user
files, the HTTP API's paths and JSON bodies, the CLI's ``--user``) is replaced by
``p`` + the first 32 hex digits of HMAC-SHA256(key, id) before anything is stored or
looked up. The key is read from the environment variable ``[privacy] id_key_env``
(``AVREC_ID_KEY``), never from the store or ``avrec.toml``: without it the store's ids
cannot be traced back to people, and the same id always gets the same pseudonym, so
events, models and answers still meet. Answers name users by their pseudonym.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import urllib.parse
from typing import Any

import polars as pl

from avrec.errors import ConfigError

__all__ = ["Pseudonyms", "PseudonymMiddleware"]

#: the shortest key accepted (bytes)
MIN_KEY = 16
_USER_PATH = re.compile(r"^(/v1/users/)([^/]+)(/.*)?$")


class Pseudonyms:
    """``pseudonyms(user_id)``: the id the store holds for ``user_id``.

    Args:
        key: the HMAC key (at least :data:`MIN_KEY` bytes).
    """

    prefix = "p"

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY:
            raise ConfigError(f"the pseudonym key must be at least {MIN_KEY} bytes")
        self._key = key

    @classmethod
    def from_config(cls, privacy: Any) -> Pseudonyms | None:
        """The workspace's pseudonyms (``[privacy]``), or ``None`` when they are off.

        Raises:
            ConfigError: they are on and the key's environment variable is unset or short.
        """
        if not getattr(privacy, "pseudonymous_ids", False):
            return None
        env = privacy.id_key_env
        key = os.environ.get(env, "")
        if not key:
            raise ConfigError(
                f"[privacy] pseudonymous_ids is on but {env} is not set: export the key "
                "(the same on every machine; it is never stored)"
            )
        return cls(key.encode())

    def __call__(self, user_id: str) -> str:
        # every id is hashed, even one that looks like a pseudonym: an id the platform
        # chose must never reach the store as it is
        mac = hmac.new(self._key, user_id.encode(), hashlib.sha256).hexdigest()
        return f"{self.prefix}{mac[:32]}"

    def frame(self, df: pl.DataFrame, column: str = "user_id") -> pl.DataFrame:
        """``df`` with ``column`` replaced by pseudonyms (each distinct id hashed once)."""
        if column not in df.columns or not df.height:
            return df
        distinct = df[column].drop_nulls().unique().to_list()
        mapping = {u: self(u) for u in distinct}
        return df.with_columns(pl.col(column).replace_strict(mapping, default=None))

    def body(self, data: Any) -> Any:
        """A JSON body with every ``user_id`` string (at the top, in a list of objects, in
        an ``events`` list) replaced."""
        if isinstance(data, list):
            return [self.body(x) for x in data]
        if isinstance(data, dict):
            out = dict(data)
            if isinstance(out.get("user_id"), str) and out["user_id"]:
                out["user_id"] = self(out["user_id"])
            if isinstance(out.get("events"), list):
                out["events"] = self.body(out["events"])
            return out
        return data


class PseudonymMiddleware:
    """Pure ASGI: ``/v1/users/{id}/...`` paths, JSON bodies' ``user_id`` fields and the
    query string's ``user_id`` carry pseudonyms before any route reads them."""

    def __init__(self, app: Any, pseudonyms: Pseudonyms) -> None:
        self.app, self.p = app, pseudonyms

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        m = _USER_PATH.match(scope.get("path", ""))
        if m:
            # in place: the access log (the middleware around this one) then writes the
            # pseudonym too, never the raw id
            path = f"{m.group(1)}{self.p(m.group(2))}{m.group(3) or ''}"
            scope["path"], scope["raw_path"] = path, path.encode()
        query = scope.get("query_string") or b""
        if b"user_id=" in query:  # a user id in the query string (GET /v1/live) is one too
            pairs = urllib.parse.parse_qsl(query.decode("latin-1"), keep_blank_values=True)
            pairs = [(k, self.p(v) if k == "user_id" and v else v) for k, v in pairs]
            scope["query_string"] = urllib.parse.urlencode(pairs).encode("latin-1")
        ctype = dict(scope.get("headers") or []).get(b"content-type", b"")
        if scope.get("method") in ("POST", "PUT", "PATCH") and b"json" in ctype:
            chunks = []
            while True:
                msg = await receive()
                if msg["type"] != "http.request":
                    break
                chunks.append(msg.get("body", b""))
                if not msg.get("more_body"):
                    break
            raw = b"".join(chunks)
            try:
                body = json.dumps(self.p.body(json.loads(raw))).encode()
            except ValueError:
                body = raw  # not JSON: the route says what is wrong
            headers = [(k, v) for k, v in scope.get("headers") or [] if k != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            scope = {**scope, "headers": headers}
            sent = False

            async def replay() -> dict:
                nonlocal sent
                if sent:
                    return await receive()
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}

            await self.app(scope, replay, send)
            return
        await self.app(scope, receive, send)
