"""Move a workspace's store between backends (``avrec store copy SRC_URL DST_URL``).

Every table is copied as it is, row keys included (item and user keys, event ids, the change
log's ids), so a model bundle's ``last_event_id`` and a serving process' cursors mean the same
in the copy. The destination must be empty. Afterwards each table is compared on both sides by
its row count and a checksum of its rows (the sum of per-row hashes of the same typed
columns, so the order rows come back in does not matter); any difference is an error.
Rate-limit counters are not copied (they live for minutes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from avrec.data.schema import ITEM_STORE_SCHEMA
from avrec.errors import StoreError
from avrec.storage.base import IMPRESSION_SCHEMA, ITEM_FIELDS, Store

__all__ = ["TABLES", "CopyReport", "copy_store", "table_checksum"]


#: every copied table: its columns with their types (booleans as 0/1) and its key column
TABLES: dict[str, tuple[dict[str, pl.DataType], str]] = {
    "items": (
        {
            "idx": pl.Int64,
            "item_id": pl.String,
            **{f: ITEM_STORE_SCHEMA[f] for f in ITEM_FIELDS},
            "placeholder": pl.Int8,
            "updated_at": pl.Float64,
        },
        "idx",
    ),
    "users": (
        {
            "idx": pl.Int64,
            "user_id": pl.String,
            "attributes": pl.String,
            "excluded": pl.Int8,
            "exclude_reason": pl.String,
            "updated_at": pl.Float64,
        },
        "idx",
    ),  # fmt: skip
    "events": (
        {
            "id": pl.Int64,
            "user_idx": pl.Int64,
            "item_idx": pl.Int64,
            "type": pl.String,
            "ts": pl.Float64,
            "value": pl.Float64,
            "session_id": pl.String,
            "text": pl.String,
            "context": pl.String,
        },
        "id",
    ),  # fmt: skip
    "ingests": (
        {
            "id": pl.Int64,
            "kind": pl.String,
            "source": pl.String,
            "sha256": pl.String,
            "rows": pl.Int64,
            "accepted": pl.Int64,
            "rejected": pl.Int64,
            "duplicates": pl.Int64,
            "started_at": pl.Float64,
            "finished_at": pl.Float64,
            "rejects_path": pl.String,
        },
        "id",
    ),  # fmt: skip
    "changes": (
        {"id": pl.Int64, "kind": pl.String, "key": pl.String, "floor": pl.Int64, "at": pl.Float64},
        "id",
    ),  # fmt: skip
    "states": (
        {
            "kind": pl.String,
            "key": pl.String,
            "value": pl.String,
            "updated_at": pl.Float64,
            "expires_at": pl.Float64,
        },
        "",
    ),  # fmt: skip
    "idempotency": ({"key": pl.String, "created_at": pl.Float64}, ""),
    "impressions": (
        {
            "id": pl.Int64,
            **{c: (pl.Int64 if c == "position" else t) for c, t in IMPRESSION_SCHEMA.items()},
        },
        "id",
    ),  # fmt: skip
    "models": (
        {
            "name": pl.String,
            "version": pl.Int64,
            "kind": pl.String,
            "path": pl.String,
            "config": pl.String,
            "metrics": pl.String,
            "created_at": pl.Float64,
            "active": pl.Int8,
        },
        "",
    ),  # fmt: skip
}


@dataclass
class CopyReport:
    """What :func:`copy_store` copied: rows and checksum per table (the same on both sides)."""

    rows: dict[str, int]
    checksums: dict[str, str]


def _typed(name: str, df: pl.DataFrame) -> pl.DataFrame:
    schema = TABLES[name][0]
    return df.select(pl.col(c).cast(t) for c, t in schema.items())


def _hash_sum(df: pl.DataFrame) -> int:
    if not df.height:
        return 0
    # polars' row hashes: stable within one process, which computes both sides
    return int(np.sum(df.hash_rows(seed=0).to_numpy(), dtype=np.uint64))


def table_checksum(store: Store, name: str, batch: int = 500_000) -> tuple[int, str]:
    """``(rows, checksum)`` of one table of ``store`` (independent of row order)."""
    n, total = 0, 0
    for df in store.dump_table(name, batch):
        df = _typed(name, df)
        n += df.height
        total = (total + _hash_sum(df)) % (1 << 64)
    return n, f"{total:016x}"


def copy_store(
    src: Store,
    dst: Store,
    batch: int = 500_000,
    progress: Callable[[str, int], None] | None = None,
) -> CopyReport:
    """Copy every table of ``src`` into the empty ``dst`` and verify it.

    Raises:
        StoreError: ``dst`` is not empty, or a table differs after the copy.
    """
    have = dst.counts()
    if any(have.values()) or dst.models() or dst.ingests():
        raise StoreError(
            f"the destination store {dst.url} is not empty ({have['events']:,} events, "
            f"{have['items']:,} items, {have['users']:,} users): copy into a new one"
        )
    for name in TABLES:
        for df in src.dump_table(name, batch):
            dst.load_table(name, _typed(name, df))
            if progress is not None:
                progress(name, df.height)
    dst.after_load()
    rows, sums = {}, {}
    for name in TABLES:
        a, b = table_checksum(src, name, batch), table_checksum(dst, name, batch)
        if a != b:
            raise StoreError(
                f"table {name} differs after the copy: {a[0]:,} rows (checksum {a[1]}) in "
                f"{src.url}, {b[0]:,} ({b[1]}) in {dst.url}"
            )
        rows[name], sums[name] = a
    return CopyReport(rows, sums)
