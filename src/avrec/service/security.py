"""API keys with scopes, kept hashed, compared in constant time; and rate limits per key.

A key is a random string the operator hands to a client; the service keeps only its SHA-256
(high-entropy keys need no slow hash) and compares the hash of what a request presents with
every stored hash through :func:`hmac.compare_digest`, without stopping at the first match, so
the time taken says nothing about which key came close.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path

from avrec.errors import ConfigError

__all__ = ["SCOPES", "KeyRing", "RateLimiter", "hash_key", "new_key"]

#: each scope includes the ones before it
SCOPES = ("read", "write", "admin")

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
            if scope not in SCOPES:
                raise ConfigError(
                    f"API key {name!r}: unknown scope {scope!r} ({', '.join(SCOPES)})"
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
        return scope is not None and SCOPES.index(scope) >= SCOPES.index(needed)

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
    """A moving-window limit per client (``limits`` in memory: per process).

    Args:
        rule: e.g. ``"2000/second"`` or ``"100/minute;10/second"``.
    """

    def __init__(self, rule: str) -> None:
        from limits import parse_many
        from limits.storage import MemoryStorage
        from limits.strategies import MovingWindowRateLimiter

        try:
            self.items = parse_many(rule)
        except ValueError as exc:
            raise ConfigError(f"AVREC_RATE_LIMIT {rule!r}: {exc}") from None
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def hit(self, who: str) -> float | None:
        """Count one request of ``who``; ``None`` when allowed, else seconds to wait."""
        for item in self.items:
            if not self._limiter.hit(item, who):
                reset, _ = self._limiter.get_window_stats(item, who)
                import time

                return max(0.0, reset - time.time())
        return None
