"""Where media comes from: local paths inside allowed roots, or http(s) URLs with limits.

A catalogue names media by path or URL; analysing it must not become a way to read arbitrary
files or to fetch without bounds. :class:`MediaSource` resolves a reference to a local file:

- ``http://`` and ``https://`` are downloaded into a cache folder (named by the URL's hash, so a
  second analysis does not download again), refusing bodies over ``max_bytes`` and requests over
  ``timeout_s``;
- ``file://`` and plain paths must lie inside one of ``roots`` (when roots are given), after
  resolving symlinks and ``..``;
- any other scheme is refused.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from avrec.errors import MediaError

__all__ = ["MediaSource"]


@dataclass
class MediaSource:
    """Resolves media references to local files.

    Args:
        roots: folders local media may come from (empty: any path).
        cache_dir: where downloads go.
        max_bytes: largest download accepted.
        timeout_s: network timeout per request.
        base_dir: relative paths are resolved against it.
    """

    roots: list[Path] = field(default_factory=list)
    cache_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "avrec-media")
    max_bytes: int = 500 * 1024 * 1024
    timeout_s: float = 30.0
    base_dir: Path | None = None

    def resolve(self, ref: str) -> Path:
        """A local path for ``ref``.

        Raises:
            MediaError: an unsupported scheme, a path outside the roots, a missing file, or a
                download that fails or exceeds the limits.
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
        try:
            real = path.resolve()
        except (OSError, ValueError) as exc:
            raise MediaError(f"{ref}: {exc}") from None
        if self.roots and not any(_inside(real, r.resolve()) for r in self.roots):
            raise MediaError(
                f"{ref}: outside the allowed media roots {[str(r) for r in self.roots]}"
            )
        return real

    def _download(self, url: str) -> Path:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        suffix = Path(urllib.parse.urlparse(url).path).suffix[:10]
        target = self.cache_dir / (hashlib.sha256(url.encode()).hexdigest()[:32] + suffix)
        if target.is_file():
            return target
        tmp = target.with_suffix(target.suffix + ".part")
        try:
            req = urllib.request.Request(url, headers={"User-Agent": "avrec"})
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                length = resp.headers.get("Content-Length")
                if length is not None and int(length) > self.max_bytes:
                    raise MediaError(
                        f"{url}: {int(length):,} bytes is over the limit of {self.max_bytes:,}"
                    )
                size = 0
                with open(tmp, "wb") as out:
                    while chunk := resp.read(1 << 20):
                        size += len(chunk)
                        if size > self.max_bytes:
                            raise MediaError(f"{url}: more than {self.max_bytes:,} bytes")
                        out.write(chunk)
            os.replace(tmp, target)
        except MediaError:
            tmp.unlink(missing_ok=True)
            raise
        except (urllib.error.URLError, OSError, ValueError) as exc:
            tmp.unlink(missing_ok=True)
            reason = getattr(exc, "reason", exc)
            raise MediaError(f"{url}: download failed ({reason})") from None
        return target


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True
