"""API keys with scopes, kept hashed, compared in constant time; per-user tokens; rate limits
per key, and for failed authentication per client address across every worker.

A key is a random string the operator hands to a client; the service keeps only its SHA-256
(high-entropy keys need no slow hash) and compares the hash of what a request presents with
every stored hash through :func:`hmac.compare_digest`, without stopping at the first match, so
the time taken says nothing about which key came close.

A key is for a platform's servers. A person's browser or app gets a **user token** instead:
a short-lived JWT (HS256, PyJWT) that an ``admin`` or ``tokens`` key mints for one user id
(``POST /v1/tokens``). It lets its bearer read that user's recommendations, search, ask and
post that user's events, nothing else. The signing secret is ``AVREC_TOKEN_SECRET``, or a
random one the first process writes to the workspace's ``token-secret`` (mode 0600), which
every worker then reads.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

from avrec.errors import ConfigError

__all__ = [
    "KEY_SCOPES",
    "SCOPES",
    "AuthFailures",
    "KeyRing",
    "Principal",
    "RateLimiter",
    "UserTokens",
    "hash_key",
    "looks_like_token",
    "new_key",
]

#: each scope includes the ones before it
SCOPES = ("read", "write", "admin")
#: what a key may carry: the scopes above, or ``tokens`` (it only mints user tokens)
KEY_SCOPES = (*SCOPES, "tokens")
#: the scope of a request made with a user token
USER = "user"

#: keys that are examples, not secrets: refused outside dev mode
PLACEHOLDERS = frozenset(
    {"changeme", "change-me", "secret", "password", "test", "dev", "key", "apikey", "api-key",
     "example", "default", "admin", "read", "write", "demo", "xxx", "1234", "12345678"}
)  # fmt: skip
MIN_LENGTH = 16


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A new random key (32 bytes, URL-safe)."""
    return "avrec_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class _Entry:
    digest: str
    scope: str
    name: str


class KeyRing:
    """The hashed keys and their scopes.

    Args:
        entries: ``(sha256 hex, scope, name)`` triples.
        open_access: no keys at all, in dev mode: every request gets ``admin``.
    """

    def __init__(self, entries: list[tuple[str, str, str]], open_access: bool = False) -> None:
        for _, scope, name in entries:
            if scope not in KEY_SCOPES:
                raise ConfigError(
                    f"API key {name!r}: unknown scope {scope!r} ({', '.join(KEY_SCOPES)})"
                )
        self._entries = [_Entry(d, s, n) for d, s, n in entries]
        self.open_access = open_access

    @classmethod
    def from_settings(cls, keys: str, path: Path | None, dev: bool) -> KeyRing:
        """Keys from ``"key:scope,..."`` and a keys file (lines ``sha256:<hex> scope name``
        or ``key:scope``; ``#`` comments).

        Raises:
            ConfigError: a malformed entry, an unknown scope, a placeholder or short key
                outside dev mode, or no key at all outside dev mode.
        """
        entries: list[tuple[str, str, str]] = []
        for n, part in enumerate(p.strip() for p in keys.split(",")):
            if part:
                entries.append(_plain(part, f"AVREC_API_KEYS entry {n + 1}", dev))
        if path is not None:
            if not path.is_file():
                raise ConfigError(f"API keys file not found: {path}")
            for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                line = line.split("#", 1)[0].strip()
                if not line:
                    continue
                where = f"{path}:{line_no}"
                if line.startswith("sha256:"):
                    fields = line.split()
                    digest = fields[0][len("sha256:") :]
                    if len(fields) < 2 or len(digest) != 64:
                        raise ConfigError(f"{where}: expected 'sha256:<64 hex> scope [name]'")
                    entries.append(
                        (digest.lower(), fields[1], fields[2] if len(fields) > 2 else where)
                    )
                else:
                    entries.append(_plain(line, where, dev))
        if not entries and not dev:
            raise ConfigError(
                "no API keys: set AVREC_API_KEYS='key:scope,...' or add one with "
                "'avrec keys add' (or AVREC_DEV=1 for open access on a development machine)"
            )
        return cls(entries, open_access=dev and not entries)

    def scope_of(self, presented: str | None) -> str | None:
        """The scope of the presented key, or ``None`` when it matches none."""
        if self.open_access:
            return "admin"
        if not presented:
            return None
        digest = hash_key(presented)
        found = None
        for e in self._entries:  # every entry compared, whatever matched
            if hmac.compare_digest(e.digest, digest):
                found = e.scope
        return found

    @staticmethod
    def allows(scope: str | None, needed: str) -> bool:
        """Whether a key of ``scope`` may do what needs ``needed``: read < write < admin;
        ``tokens`` only mints user tokens, which ``admin`` may do too."""
        if scope is None:
            return False
        if needed == "tokens":
            return scope in ("tokens", "admin")
        if scope not in SCOPES or needed not in SCOPES:
            return False
        return SCOPES.index(scope) >= SCOPES.index(needed)

    def __len__(self) -> int:
        return len(self._entries)


def _plain(entry: str, where: str, dev: bool) -> tuple[str, str, str]:
    key, sep, scope = entry.rpartition(":")
    if not sep or not key:
        raise ConfigError(f"{where}: expected 'key:scope'")
    scope = scope.strip()
    if not dev and (key.lower() in PLACEHOLDERS or len(key) < MIN_LENGTH):
        raise ConfigError(
            f"{where}: a placeholder or short API key (under {MIN_LENGTH} characters) is "
            "refused outside dev mode; make one with 'avrec keys add'"
        )
    return hash_key(key), scope, f"{where} ({scope})"


class RateLimiter:
    """A limit per client: a moving window in memory (``limits``: per process), or, given a
    shared ``store`` (a database that several serving nodes use), fixed windows counted in
    the store (``Store.count_hit``), so the limit holds across every node.

    Args:
        rule: e.g. ``"2000/second"`` or ``"100/minute;10/second"``.
        store: the shared store to count in (its own connection), or ``None``.
    """

    KIND = "rate"

    def __init__(self, rule: str, store: object | None = None) -> None:
        from limits import parse_many
        from limits.storage import MemoryStorage
        from limits.strategies import MovingWindowRateLimiter

        try:
            self.items = parse_many(rule)
        except ValueError as exc:
            raise ConfigError(f"AVREC_RATE_LIMIT {rule!r}: {exc}") from None
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self.store = store
        # one counter update at a time per process: every request of a key updates the same
        # row, and queueing here holds no database connection, where a transaction waiting
        # on the row's lock holds one of the pool's (not measured apart: load runs here
        # vary by more than the difference)
        self._lock = threading.Lock()

    def hit(self, who: str) -> float | None:
        """Count one request of ``who``; ``None`` when allowed, else seconds to wait."""
        if self.store is not None:
            return self._hit_shared(who)
        for item in self.items:
            if not self._limiter.hit(item, who):
                reset, _ = self._limiter.get_window_stats(item, who)
                import time

                return max(0.0, reset - time.time())
        return None

    def _hit_shared(self, who: str) -> float | None:
        import time

        now = time.time()
        for item in self.items:
            span = float(item.get_expiry())
            w = int(now // span)
            with self._lock:
                n = self.store.count_hit(  # type: ignore[attr-defined]
                    f"{self.KIND}:{item}", who, w, ttl_s=span * 2
                )
            if n > item.amount:
                return (w + 1) * span - now
        return None


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: a key's ``scope``, or ``"user"`` with the ``user`` of a token."""

    scope: str
    user: str | None = None

    @property
    def is_user(self) -> bool:
        return self.scope == USER


class UserTokens:
    """Short-lived signed tokens for one user (JWT, HS256).

    Args:
        secret: the signing secret (at least 32 bytes).
        max_ttl_s: the longest life a token may be given.
    """

    AUDIENCE = "avrec-user"

    def __init__(self, secret: bytes, max_ttl_s: float = 86_400.0) -> None:
        if len(secret) < 32:
            raise ConfigError("the token secret must be at least 32 bytes")
        self._secret = secret
        self.max_ttl_s = max_ttl_s

    @classmethod
    def for_workspace(cls, root: Path, secret: str = "", max_ttl_s: float = 86_400.0
                      ) -> UserTokens:  # fmt: skip
        """The secret from ``secret`` (``AVREC_TOKEN_SECRET``), else the workspace's
        ``token-secret`` file, made once (the first process to get there writes it)."""
        import os

        if secret:
            return cls(secret.encode("utf-8"), max_ttl_s)
        path = root / "token-secret"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            for _ in range(50):  # another worker is writing it this instant
                raw = path.read_text(encoding="ascii").strip()
                if raw:
                    return cls(raw.encode("ascii"), max_ttl_s)
                import time

                time.sleep(0.02)
            raise ConfigError(f"{path} is empty: delete it to make a new secret") from None
        raw = secrets.token_hex(32)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(raw + "\n")
        return cls(raw.encode("ascii"), max_ttl_s)

    def mint(self, user_id: str, ttl_s: float) -> tuple[str, float]:
        """A token for ``user_id`` living ``ttl_s`` seconds (at most ``max_ttl_s``), and when
        it expires (unix seconds)."""
        import time

        import jwt

        now = time.time()
        exp = now + min(float(ttl_s), self.max_ttl_s)
        claims = {"sub": user_id, "aud": self.AUDIENCE, "iat": int(now), "exp": int(exp),
                  "jti": secrets.token_hex(8)}  # fmt: skip
        return jwt.encode(claims, self._secret, algorithm="HS256"), float(int(exp))

    def user_of(self, token: str) -> str | None:
        """The user a valid, unexpired token was minted for; ``None`` otherwise."""
        import jwt

        try:
            claims = jwt.decode(
                token, self._secret, algorithms=["HS256"], audience=self.AUDIENCE,
                options={"require": ["sub", "exp", "aud"]},
            )  # fmt: skip
        except jwt.PyJWTError:
            return None
        sub = claims.get("sub")
        return sub if isinstance(sub, str) and sub else None


def looks_like_token(presented: str) -> bool:
    """A JWT has three dot-separated parts; our keys have none."""
    return presented.count(".") == 2


class AuthFailures:
    """Failed authentication counted per client address in the store, so the limit holds
    across every worker process: past ``limit`` failures in a window of ``window_s``
    seconds, every request from that address is refused (429) until the window ends,
    whatever key it presents.

    Args:
        store: a connection to the workspace's store (``Store.count_hit``,
            ``Store.hit_count``), best its own: the check runs before every request.
        lock: what serialises the use of ``store`` in this process.
    """

    KIND = "auth_failures"

    def __init__(self, store: object, lock: object, limit: int = 20, window_s: float = 60.0
                 ) -> None:  # fmt: skip
        self.store, self.lock = store, lock
        self.limit, self.window_s = limit, window_s

    def _window(self) -> tuple[int, float]:
        import time

        now = time.time()
        w = int(now // self.window_s)
        return w, (w + 1) * self.window_s - now

    def blocked(self, address: str) -> float | None:
        """Seconds until ``address`` may try again, or ``None`` when it is not blocked."""
        if self.limit <= 0:
            return None
        w, left = self._window()
        with self.lock:  # type: ignore[attr-defined]
            n = self.store.hit_count(self.KIND, address, w)  # type: ignore[attr-defined]
        return left if n >= self.limit else None

    def failed(self, address: str) -> float | None:
        """Count one failure; seconds to wait when that reached the limit."""
        if self.limit <= 0:
            return None
        w, left = self._window()
        with self.lock:  # type: ignore[attr-defined]
            n = self.store.count_hit(self.KIND, address, w, ttl_s=self.window_s * 2)  # type: ignore[attr-defined]
        return left if n >= self.limit else None
