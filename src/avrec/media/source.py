"""Where media comes from: local paths inside allowed roots, or http(s) URLs with limits.

A catalogue names media by path or URL; analysing or serving it must not become a way to read
arbitrary files of the server or to reach hosts the operator did not allow.
:class:`MediaSource` resolves a reference to a local file:

- ``file://`` and plain paths must lie inside one of ``roots`` after resolving symlinks and
  ``..`` (a symlink that leaves a root is refused); ``roots=None`` allows any path, for
  library use on a trusted catalogue only: a workspace always passes its roots;
- ``http://`` and ``https://`` are downloaded into a cache folder (named by the URL's hash, so
  a second analysis does not download again). The address every connection actually reaches
  must be public: loopback, private, link-local, multicast, reserved and unspecified
  addresses are refused (checked on the connected socket, so DNS rebinding cannot slip past,
  and again on every redirect), unless the host is named in ``allowed_hosts``. Redirects go
  to http(s) only, at most five; bodies over ``max_bytes`` and downloads over ``total_s``
  are cut off, besides the ``timeout_s`` of each read;
- any other scheme is refused.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import ipaddress
import os
import socket
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from avrec.errors import MediaError

__all__ = ["MediaSource", "public_address"]

MAX_REDIRECTS = 5


def public_address(ip: str) -> bool:
    """Whether ``ip`` is a public unicast address (IPv4-mapped IPv6 judged as IPv4)."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_global and not (
        addr.is_multicast or addr.is_loopback or addr.is_link_local or addr.is_reserved
        or addr.is_private or addr.is_unspecified
    )  # fmt: skip


@dataclass
class MediaSource:
    """Resolves media references to local files.

    Args:
        roots: folders local media may come from; ``None``: any path (trusted library use).
        cache_dir: where downloads go.
        max_bytes: largest download accepted.
        timeout_s: network timeout of each connect and read.
        total_s: the most one download may take, redirects included.
        allowed_hosts: host names (or IP addresses, or CIDR networks) that may be reached
            although they are internal: a platform's own media store.
        base_dir: relative paths are resolved against it.
    """

    roots: list[Path] | None = None
    cache_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "avrec-media")
    max_bytes: int = 500 * 1024 * 1024
    timeout_s: float = 30.0
    total_s: float = 300.0
    allowed_hosts: list[str] = field(default_factory=list)
    base_dir: Path | None = None

    def resolve(self, ref: str) -> Path:
        """A local path for ``ref``.

        Raises:
            MediaError: an unsupported scheme, a path outside the roots, a missing file, a
                host that is not public (and not allowed), or a download that fails or
                exceeds the limits.
        """
        real = self.check(ref)
        if real is None:
            return self._download(ref.strip())
        try:
            found = real.is_file()
        except OSError as exc:  # a name too long for the file system, say
            raise MediaError(f"{ref}: {exc.strerror or exc}") from None
        if not found:
            raise MediaError(f"{ref}: media file not found")
        return real

    def check(self, ref: str) -> Path | None:
        """Whether ``ref`` may be used, without reading or fetching it: the local path it
        names (which may not exist yet), or ``None`` for an http(s) URL.

        Raises:
            MediaError: an unsupported scheme, control characters, or a path outside the
                roots.
        """
        ref = ref.strip()
        if any(ord(ch) < 32 for ch in ref):
            raise MediaError(f"{ref!r}: control characters in a media reference")
        parsed = urllib.parse.urlparse(ref)
        scheme = parsed.scheme.lower()
        if scheme in ("http", "https"):
            if not parsed.hostname:
                raise MediaError(f"{ref}: no host in the URL")
            return None
        if scheme == "file":
            ref = urllib.parse.unquote(parsed.path)
        elif scheme and len(scheme) > 1:  # "c:" style drive letters are paths
            raise MediaError(
                f"{ref}: unsupported media URL scheme {scheme!r} (use a path or http(s))"
            )
        path = Path(ref)
        if not path.is_absolute() and self.base_dir is not None:
            path = self.base_dir / path
        real = _resolved(path, ref)  # symlinks and .. resolved: a link out of a root is out
        if self.roots is not None and not any(_inside(real, _resolved(r, ref)) for r in self.roots):
            raise MediaError(f"{ref}: outside the allowed media roots")
        return real

    # -- downloads -------------------------------------------------------------------------------
    def host_allowed(self, host: str) -> bool:
        """Whether ``host`` is named in ``allowed_hosts`` (by name, address or network)."""
        host = host.lower().strip("[]")
        for entry in self.allowed_hosts:
            entry = entry.lower().strip()
            if entry == host:
                return True
            try:
                if ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
        return False

    def _vet_host(self, url: str) -> None:
        """Refuse a URL whose host resolves to an address that is not public (before
        connecting; the connected socket is checked again)."""
        host = urllib.parse.urlparse(url).hostname or ""
        if self.host_allowed(host):
            return
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except (socket.gaierror, UnicodeError) as exc:
            raise MediaError(f"{url}: download failed (cannot resolve {host!r}: {exc})") from None
        for info in infos:
            if not public_address(str(info[4][0])):
                raise MediaError(
                    f"{url}: refused: {host} resolves to {info[4][0]}, which is not a public "
                    "address (name the host in [content] media_allowed_hosts to allow it)"
                )

    def _download(self, url: str) -> Path:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        suffix = Path(urllib.parse.urlparse(url).path).suffix[:10]
        target = self.cache_dir / (hashlib.sha256(url.encode()).hexdigest()[:32] + suffix)
        if target.is_file():
            return target
        tmp = target.with_suffix(target.suffix + ".part")
        deadline = time.monotonic() + self.total_s
        try:
            self._vet_host(url)
            opener = urllib.request.build_opener(
                _Redirects(self),
                _GuardedHTTP(self),
                _GuardedHTTPS(self),
            )
            req = urllib.request.Request(url, headers={"User-Agent": "avrec"})
            with opener.open(req, timeout=self._left(deadline, url)) as resp:
                length = resp.headers.get("Content-Length")
                if length is not None and length.isdigit() and int(length) > self.max_bytes:
                    raise MediaError(
                        f"{url}: {int(length):,} bytes is over the limit of {self.max_bytes:,}"
                    )
                size = 0
                with open(tmp, "wb") as out:
                    while True:
                        _settimeout(resp, self._left(deadline, url))
                        chunk = resp.read1(1 << 16)  # one socket read: the deadline holds
                        if not chunk:
                            break
                        size += len(chunk)
                        if size > self.max_bytes:
                            raise MediaError(f"{url}: more than {self.max_bytes:,} bytes")
                        self._left(deadline, url)
                        out.write(chunk)
            os.replace(tmp, target)
        except MediaError:
            tmp.unlink(missing_ok=True)
            raise
        except urllib.error.URLError as exc:
            tmp.unlink(missing_ok=True)
            if isinstance(exc.reason, MediaError):
                raise exc.reason from None
            raise MediaError(f"{url}: download failed ({exc.reason})") from None
        except (OSError, ValueError, http.client.HTTPException) as exc:
            tmp.unlink(missing_ok=True)
            if time.monotonic() >= deadline:
                raise MediaError(
                    f"{url}: download took over the limit of {self.total_s:g} s"
                ) from None
            raise MediaError(f"{url}: download failed ({exc})") from None
        return target

    def _left(self, deadline: float, url: str) -> float:
        """Seconds to wait for the next network step: the per-read timeout, or less when
        the whole download's time is nearly spent."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise MediaError(f"{url}: download took over the limit of {self.total_s:g} s")
        return min(self.timeout_s, left)


def _settimeout(resp: object, seconds: float) -> None:
    """The next read waits at most ``seconds`` (http.client exposes no public way to change
    an open response's socket timeout; without one, the whole-download limit holds only
    between reads)."""
    sock = getattr(getattr(getattr(resp, "fp", None), "raw", None), "_sock", None)
    if sock is not None:
        sock.settimeout(seconds)


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Redirects to http(s) only, at most :data:`MAX_REDIRECTS`, each target vetted."""

    max_redirections = MAX_REDIRECTS

    def __init__(self, source: MediaSource) -> None:
        self.source = source

    def http_error_302(self, req, fp, code, msg, headers):  # noqa: ANN001, ANN201
        to = headers.get("location") or headers.get("uri")
        if to:  # the scheme is judged before urllib's own check, which lets ftp:// through
            self._scheme(req, urllib.parse.urljoin(req.full_url, to))
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    @staticmethod
    def _scheme(req, newurl: str) -> None:  # noqa: ANN001
        scheme = urllib.parse.urlparse(newurl).scheme.lower()
        if scheme not in ("http", "https"):
            raise MediaError(
                f"{req.full_url}: refused: redirected to {scheme or 'a relative'!s} URL "
                "(only http(s) is followed)"
            )

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201
        self._scheme(req, newurl)
        self.source._vet_host(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _guard(conn: http.client.HTTPConnection, source: MediaSource) -> None:
    """After connecting: the peer's address must be public, or its host allowed."""
    if source.host_allowed(conn.host):
        return
    peer = conn.sock.getpeername()[0]
    if not public_address(peer):
        conn.close()
        raise MediaError(
            f"refused: {conn.host} connected to {peer}, which is not a public address "
            "(name the host in [content] media_allowed_hosts to allow it)"
        )


def _guarded(base: type, source: MediaSource) -> type:
    """``base`` (an HTTP or HTTPS connection class) that checks its peer once connected."""

    class Conn(base):  # type: ignore[misc, valid-type]
        def connect(self) -> None:
            super().connect()
            _guard(self, source)

    return Conn


class _GuardedHTTP(urllib.request.HTTPHandler):
    def __init__(self, source: MediaSource) -> None:
        super().__init__()
        self.source = source

    def http_open(self, req):  # noqa: ANN001, ANN201
        return self.do_open(_guarded(http.client.HTTPConnection, self.source), req)


class _GuardedHTTPS(urllib.request.HTTPSHandler):
    def __init__(self, source: MediaSource) -> None:
        super().__init__()
        self.source = source

    def https_open(self, req):  # noqa: ANN001, ANN201
        conn = _guarded(http.client.HTTPSConnection, self.source)
        return self.do_open(conn, req, context=self._context)


def _resolved(path: Path, ref: str) -> Path:
    """``path`` with symlinks and ``..`` resolved; a symlink loop, a name too long and the
    like become a :class:`MediaError` that names ``ref`` only (not the server paths the
    resolution went through)."""
    try:
        return path.resolve()
    except RuntimeError:  # pathlib's symlink loop (Python < 3.13)
        raise MediaError(f"{ref}: symlink loop") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # Python >= 3.13 raises this for a loop
            raise MediaError(f"{ref}: symlink loop") from None
        raise MediaError(f"{ref}: {exc.strerror or type(exc).__name__}") from None
    except ValueError as exc:  # a NUL byte, say
        raise MediaError(f"{ref}: {exc}") from None


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True
