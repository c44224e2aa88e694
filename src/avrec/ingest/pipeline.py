"""Ingest files into a store: read in chunks, validate, write rejects, upsert, log.

One file is one transaction: a crash in the middle leaves the store as it was before the file.
Bad rows go to a rejects CSV (``file, line, reason, row``) and the rest is ingested; the report says
how many rows were read, accepted, rejected (by reason), new, updated and duplicate.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import polars as pl

from avrec.config import WorkspaceConfig
from avrec.data.loaders.base import PublicData
from avrec.errors import DataError
from avrec.ingest.readers import ERROR, LINE, detect_format, read_batches, read_header
from avrec.ingest.validate import (
    apply_mapping,
    validate_events,
    validate_items,
    validate_users,
)
from avrec.storage.base import IngestRecord, Store

__all__ = [
    "IngestReport",
    "RejectsWriter",
    "ingest_file",
    "ingest_frames",
    "ingest_public",
    "sha256_file",
]

log = logging.getLogger(__name__)

Kind = Literal["items", "events", "users"]
T = TypeVar("T")
_REQUIRED: dict[str, tuple[str, ...]] = {
    "items": ("item_id",),
    "events": ("user_id", "item_id"),
    "users": ("user_id",),
}


@dataclass
class IngestReport:
    """What one ingest did."""

    kind: str
    source: str
    rows: int = 0
    accepted: int = 0
    rejected: int = 0
    inserted: int = 0
    updated: int = 0
    duplicates: int = 0
    new_users: int = 0
    new_items: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    rejects_path: str | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """A few human-readable lines."""
        lines = [
            f"{self.kind} from {self.source}: {self.rows:,} rows read, {self.accepted:,} accepted,"
            f" {self.rejected:,} rejected",
            f"  new {self.inserted:,}, updated {self.updated:,}, duplicates collapsed"
            f" {self.duplicates:,}",
        ]
        if self.kind == "events":
            lines.append(
                f"  new users {self.new_users:,}, items not in the catalogue"
                f" {self.new_items:,} (kept as placeholders)"
            )
        for reason, n in self.reasons.most_common(10):
            lines.append(f"  rejected {n:,}: {reason}")
        if self.rejects_path:
            lines.append(f"  rejects written to {self.rejects_path}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


class RejectsWriter:
    """Writes rejects lazily: the file appears only when there is a reject."""

    def __init__(self, path: Path, source: str) -> None:
        self.path = path
        self.source = source
        self._fh = None
        self._writer: csv.writer | None = None  # type: ignore[valid-type]

    def write(self, rejects: pl.DataFrame) -> None:
        if rejects.height == 0:
            return
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "w", newline="", encoding="utf-8")  # noqa: SIM115
            self._writer = csv.writer(self._fh)
            self._writer.writerow(["file", "line", "reason", "row"])
        assert self._writer is not None
        for line, reason, row in rejects.iter_rows():
            self._writer.writerow([self.source, line, reason, row])

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def sha256_file(path: Path, block: int = 8 * 1024 * 1024) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def _check_columns(kind: str, columns: list[str], source: str, mapping: dict[str, str]) -> None:
    present = set(columns)
    missing = [c for c in _REQUIRED[kind] if c not in present]
    if missing:
        shown = [c for c in columns if c not in (LINE, ERROR)]
        hint = ", ".join(f"{m}=<column>" for m in missing)
        raise DataError(
            f"{source}: missing required column(s) {missing} for {kind} (columns: {shown});"
            f" name them in the file or map them with --map {hint}"
        )


def ingest_file(
    store: Store,
    path: str | Path,
    kind: Kind,
    config: WorkspaceConfig | None = None,
    mapping: dict[str, str] | None = None,
    fmt: str | None = None,
    rejects_dir: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
    cancel: threading.Event | None = None,
) -> IngestReport:
    """Ingest one file of ``kind`` into ``store`` in a single transaction.

    Args:
        mapping: canonical name -> column in the file.
        fmt: ``csv``, ``tsv``, ``jsonl`` or ``parquet``; taken from the extension when omitted.
        rejects_dir: where the rejects CSV goes (default: next to the file).
        progress: called with bytes read, for progress bars.
        cancel: see :func:`ingest_frames`.

    Raises:
        DataError: the file cannot be read, lacks a required column, or more rows were rejected
            than ``[ingest] max_reject_ratio`` allows (then nothing is ingested).
    """
    path = Path(path)
    config = config or WorkspaceConfig()
    mapping = mapping or {}
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    fmt = detect_format(path, fmt)
    limits = config.ingest
    header = read_header(path, fmt, limits.max_row_bytes, limits.max_columns)
    if header:
        mapped = [{v: k for k, v in mapping.items()}.get(c, c) for c in header]
        if mapping:
            absent = [s for s in mapping.values() if s not in header]
            if absent:
                raise DataError(
                    f"{path}: mapped column(s) {absent} not in the file (columns: {header})"
                )
        _check_columns(kind, mapped, str(path), mapping)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rdir = Path(rejects_dir) if rejects_dir else path.parent
    rejects = RejectsWriter(rdir / f"{path.name}.{stamp}.rejects.csv", str(path))
    batches = read_batches(
        path, fmt, limits.chunk_bytes, progress, limits.max_row_bytes, limits.max_columns
    )
    try:
        report = ingest_frames(
            store,
            (apply_mapping(b, mapping) for b in batches),
            kind,
            config,
            str(path),
            rejects,
            sha256=sha256_file(path),
            check_columns=not header,
            cancel=cancel,
        )
    finally:
        rejects.close()
    return report


def ingest_frames(
    store: Store,
    batches: Iterator[pl.DataFrame] | list[pl.DataFrame],
    kind: Kind,
    config: WorkspaceConfig | None = None,
    source: str = "<frames>",
    rejects: RejectsWriter | None = None,
    sha256: str = "",
    check_columns: bool = True,
    cancel: threading.Event | None = None,
) -> IngestReport:
    """Ingest batches of text columns (as from :func:`read_batches`) in one transaction.

    Loaders for public datasets use this directly with frames they build, so their rows pass the
    same validation as a user's file.

    Args:
        cancel: set (by a Ctrl-C handler) to stop before the next batch: the transaction rolls
            back and ``KeyboardInterrupt`` is raised. Once every batch is written the commit
            goes ahead, so a late cancel never leaves a file half kept or a report that lies.
    """
    from avrec.privacy import Pseudonyms

    config = config or WorkspaceConfig()
    report = IngestReport(kind=kind, source=source)
    started = time.time()
    pseudonyms = Pseudonyms.from_config(config.privacy)  # None: ids are stored as given
    known = config.event_types()
    window = config.ingest.event_window(started)

    def validated() -> Iterator[tuple[int, pl.DataFrame, pl.DataFrame]]:
        first = True
        offset = 1
        for raw in batches:
            if LINE not in raw.columns:  # frames without line numbers count rows across batches
                raw = raw.with_row_index(LINE, offset=offset).with_columns(
                    pl.col(LINE).cast(pl.Int64)
                )
            offset += raw.height
            if ERROR not in raw.columns:
                raw = raw.with_columns(pl.lit(None, pl.String).alias(ERROR))
            # the columns are judged on the first batch that has any (a JSON-lines block of
            # unreadable lines has none, and is only rejects)
            has_columns = raw.width > 2
            if first and has_columns and check_columns:
                _check_columns(kind, raw.columns, source, {})
            fallback_ts = kind == "events" and "timestamp" not in raw.columns
            if first and has_columns and fallback_ts:
                report.notes.append("no timestamp column: events are ordered by line number")
            first = first and not has_columns
            if kind == "events":
                good, bad = validate_events(
                    raw,
                    known,
                    config.events.default_type,
                    fallback_ts,
                    window,
                    config.ingest.timestamp_unit,
                )
            elif kind == "items":
                good, bad = validate_items(raw)
            else:
                good, bad = validate_users(raw)
            if pseudonyms is not None and kind != "items":
                good = pseudonyms.frame(good)
            yield raw.height, good, bad

    with store.transaction():
        # Reading and validating the next chunk (polars, mostly outside the GIL) overlaps with
        # writing this one; the store is only touched from this thread.
        for n_rows, good, bad in prefetch(validated()):
            if cancel is not None and cancel.is_set():
                raise KeyboardInterrupt
            report.rows += n_rows
            if kind == "events":
                res = store.add_events(good)
                report.inserted += res.inserted
                report.duplicates += res.duplicates
                report.new_users += res.new_users
                report.new_items += res.new_items
            else:
                upsert = store.upsert_items if kind == "items" else store.upsert_users
                ins, upd = upsert(good)
                report.inserted += ins
                report.updated += upd
            report.accepted += good.height
            report.rejected += bad.height
            report.reasons.update(_reason_kind(r) for r in bad["reason"].to_list())
            if rejects is not None:
                rejects.write(bad)
        if cancel is not None and cancel.is_set():
            raise KeyboardInterrupt
        if report.rows and report.rejected / report.rows > config.ingest.max_reject_ratio:
            raise DataError(
                f"{source}: {report.rejected:,} of {report.rows:,} rows rejected, above"
                f" max_reject_ratio={config.ingest.max_reject_ratio}; nothing was ingested"
            )
        if rejects is not None and rejects._fh is not None:
            report.rejects_path = str(rejects.path)
        report.seconds = time.time() - started
        store.record_ingest(
            IngestRecord(
                kind=kind,
                source=source,
                sha256=sha256,
                rows=report.rows,
                accepted=report.accepted,
                rejected=report.rejected,
                duplicates=report.duplicates,
                started_at=started,
                finished_at=time.time(),
                rejects_path=report.rejects_path,
            )
        )
    log.info("ingested %s", report.summary())
    return report


def prefetch(items: Iterator[T], depth: int = 1) -> Iterator[T]:
    """Run ``items`` in a background thread, ``depth`` results ahead of the consumer.

    An exception in the producer is raised in the consumer; a consumer that stops early (an
    exception while writing) stops the producer too.
    """
    q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put(("error", exc))

    thread = threading.Thread(target=produce, name="avrec-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            tag, value = q.get()
            if tag == "end":
                return
            if tag == "error":
                raise value
            yield value
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


def _reason_kind(reason: str) -> str:
    """Group reasons for the summary: drop the quoted value ("unknown event type 'x'")."""
    return (
        reason.split(" '", 1)[0] if "'" in reason and not reason.startswith("invalid") else reason
    )


def _as_text(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(pl.all().cast(pl.String))


def ingest_public(
    store: Store,
    data: PublicData,
    config: WorkspaceConfig | None = None,
    progress: Callable[[int], None] | None = None,
    batch_rows: int = 200_000,
) -> list[IngestReport]:
    """Ingest a loaded public dataset (items, users, then events) through the same validation
    as any file, each part in its own transaction.

    Args:
        progress: called with the number of rows handled.
    """
    tick = progress or (lambda n: None)
    reports = []
    source = f"dataset:{data.name}"

    def batches(df: pl.DataFrame) -> Iterator[pl.DataFrame]:
        for start in range(0, df.height, batch_rows):
            part = df.slice(start, batch_rows)
            yield (
                _as_text(part)
                .with_row_index(LINE, offset=start + 1)
                .with_columns(pl.col(LINE).cast(pl.Int64))
            )
            tick(part.height)

    reports.append(ingest_frames(store, batches(data.items), "items", config, f"{source}/items"))
    if data.users.height:
        reports.append(
            ingest_frames(store, batches(data.users), "users", config, f"{source}/users")
        )
    events = data.events.rename({"ts": "timestamp"})
    reports.append(ingest_frames(store, batches(events), "events", config, f"{source}/events"))
    return reports
