"""Impressions: every item a served list showed, logged without slowing the request.

A request appends one JSON line per list to its process's journal (``spool/impressions/
<pid>-<random>.jsonl`` in the workspace: one ``write`` on a file opened for appending, no
fsync, so a killed process loses nothing the kernel has). A background thread moves what
the journal holds into the store every ``flush_s`` seconds, in one transaction, and then
records how far it got (``.offset`` beside the journal). A process that starts claims the
journals of processes that are gone (each live journal is held under an exclusive
``flock``; a journal nobody holds is an orphan) and moves what is left of them first. A
line moved twice (killed between the commit and the offset) is stored once: the store's
key is ``(request_id, position)``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import polars as pl

from avrec.storage.base import IMPRESSION_SCHEMA

__all__ = ["ImpressionLog", "rows_of"]

log = logging.getLogger(__name__)

#: a journal is emptied (truncated) once everything in it is stored and it is this big
ROTATE_BYTES = 4 << 20


def rows_of(lines: list[bytes]) -> pl.DataFrame:
    """Journal lines (one served list each) as impression rows; a torn last line (the
    process died in the middle of a write) is skipped."""
    cols: dict[str, list[Any]] = {c: [] for c in IMPRESSION_SCHEMA}
    for raw in lines:
        try:
            d = json.loads(raw)
        except ValueError:
            continue
        props = d.get("propensities") or [None] * len(d["items"])
        for j, (item, p) in enumerate(zip(d["items"], props, strict=False)):
            cols["request_id"].append(d["request_id"])
            cols["position"].append(int(d["offset"]) + j)
            cols["user_id"].append(d.get("user_id"))
            cols["item_id"].append(item)
            cols["surface"].append(d["surface"])
            cols["model_version"].append(d.get("model_version"))
            cols["variant"].append(d.get("variant"))
            cols["propensity"].append(p)
            cols["ts"].append(float(d["ts"]))
    return pl.DataFrame(cols, schema=IMPRESSION_SCHEMA)


class _Journal:
    """One journal file and its offset file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset_path = path.with_suffix(".offset")

    def offset(self) -> int:
        try:
            return int(self.offset_path.read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def set_offset(self, n: int) -> None:
        tmp = self.offset_path.with_suffix(".offset.tmp")
        tmp.write_text(str(n))
        os.replace(tmp, self.offset_path)

    def pending(self) -> tuple[list[bytes], int]:
        """Complete lines after the offset, and the offset after them."""
        start = self.offset()
        with open(self.path, "rb") as f:
            f.seek(start)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line still being written waits
        return data[:end].splitlines(), start + end


class ImpressionLog:
    """The process's impression journal and the thread that stores it.

    Args:
        folder: the spool folder (``<workspace>/spool/impressions``).
        store: where impressions go (opened by the caller; used from the flush thread only
            inside ``guard()``).
        guard: a context manager factory that makes the store ours (the process's lock,
            the workspace's write turn).
        flush_s: seconds between moves to the store.
    """

    def __init__(self, folder: Path, store: Any, guard: Any, flush_s: float = 1.0) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.store = store
        self.guard = guard
        self.flush_s = flush_s
        name = f"{os.getpid()}-{secrets.token_hex(4)}.jsonl"
        self.journal = _Journal(self.folder / name)
        self._fd = os.open(self.journal.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours while we live
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self.logged = 0
        self.stored = 0
        self._thread = threading.Thread(target=self._run, name="avrec-impressions", daemon=True)
        self._thread.start()

    # -- the request's side --------------------------------------------------------------------
    def log(
        self,
        request_id: str,
        surface: str,
        items: list[str],
        user_id: str | None = None,
        model_version: str | None = None,
        offset: int = 0,
        variant: str | None = None,
        propensities: list[float] | None = None,
        ts: float | None = None,
    ) -> None:
        """One served list: a single append to the journal (microseconds)."""
        if not items:
            return
        line = {
            "request_id": request_id,
            "surface": surface,
            "items": list(items),
            "user_id": user_id,
            "model_version": model_version,
            "offset": int(offset),
            "variant": variant,
            "ts": time.time() if ts is None else ts,
        }
        if propensities is not None:
            line["propensities"] = [float(p) for p in propensities]
        data = (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        with self._write_lock:
            os.write(self._fd, data)
            self.logged += len(items)

    # -- the thread's side ---------------------------------------------------------------------
    def _run(self) -> None:
        with contextlib.suppress(Exception):  # a store that is not there yet: next time
            self.recover()
        while not self._stop.wait(self.flush_s):
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - kept in the journal; tried again
                log.exception("storing impressions failed; kept in the journal")

    def _move(self, journal: _Journal) -> int:
        lines, end = journal.pending()
        if not lines:
            return 0
        rows = rows_of(lines)
        with self.guard():
            self.store.add_impressions(rows)
        journal.set_offset(end)
        return rows.height

    def flush(self) -> int:
        """Move what this process's journal holds into the store; returns the rows moved."""
        n = self._move(self.journal)
        self.stored += n
        with self._write_lock:  # nothing is appended while the journal is emptied
            if self.journal.offset() >= ROTATE_BYTES and self._caught_up():
                os.ftruncate(self._fd, 0)
                self.journal.set_offset(0)
        return n

    def _caught_up(self) -> bool:
        return os.fstat(self._fd).st_size == self.journal.offset()

    def recover(self) -> int:
        """Move what journals of processes that are gone still hold, then delete them."""
        moved = 0
        for path in sorted(self.folder.glob("*.jsonl")):
            if path == self.journal.path:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live process's
                j = _Journal(path)
                moved += self._move(j)
                path.unlink(missing_ok=True)
                j.offset_path.unlink(missing_ok=True)
            finally:
                os.close(fd)
        if moved:
            log.info("stored %d impressions from the journals of stopped processes", moved)
        return moved

    def close(self) -> None:
        """Stop the thread, store what is left, and remove the journal."""
        self._stop.set()
        self._thread.join(10)
        try:
            self.flush()
            if self._caught_up():
                self.journal.path.unlink(missing_ok=True)
                self.journal.offset_path.unlink(missing_ok=True)
        except Exception:  # noqa: BLE001 - the next process recovers it
            log.exception("storing impressions at shutdown failed; kept in the journal")
        finally:
            os.close(self._fd)
