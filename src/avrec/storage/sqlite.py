"""The embedded SQLite backend (WAL mode), the default store.

Layout: ``items`` and ``users`` map external ids to dense integer keys (``idx``); ``events`` holds
integer keys only, with a unique index on (timestamp, user, item, type) that makes re-ingest an
upsert. The index leads with the timestamp because logs arrive roughly in time order: new keys land
at the right edge of the B-tree, which keeps bulk ingest several times faster than a user-first key.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl

from avrec.data.schema import ITEM_STORE_SCHEMA
from avrec.errors import StoreError, UnknownEntityError
from avrec.storage.base import (
    EVENT_SCHEMA,
    EVENT_SQL,
    IMPRESSION_SCHEMA,
    ITEM_FIELDS,
    EventWriteResult,
    IngestRecord,
    ModelRecord,
    Store,
    register_backend,
)

__all__ = ["SQLiteStore"]


_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    idx INTEGER PRIMARY KEY,
    item_id TEXT NOT NULL UNIQUE,
    title TEXT, description TEXT, tags TEXT, categories TEXT, language TEXT,
    duration REAL, created_at REAL, video TEXT, audio TEXT, image TEXT, subtitles TEXT,
    people TEXT, available_from REAL, available_until REAL, attributes TEXT,
    placeholder INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    idx INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL UNIQUE,
    attributes TEXT,
    excluded INTEGER NOT NULL DEFAULT 0,
    exclude_reason TEXT,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    user_idx INTEGER NOT NULL,
    item_idx INTEGER NOT NULL,  -- -1: no item (a search)
    type TEXT NOT NULL,
    ts REAL NOT NULL,
    value REAL,
    session_id TEXT,
    text TEXT,
    context TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS events_key ON events (ts, user_idx, item_idx, type);
CREATE TABLE IF NOT EXISTS ingests (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL, source TEXT NOT NULL, sha256 TEXT NOT NULL,
    rows INTEGER NOT NULL, accepted INTEGER NOT NULL, rejected INTEGER NOT NULL,
    duplicates INTEGER NOT NULL, started_at REAL NOT NULL, finished_at REAL NOT NULL,
    rejects_path TEXT
);
CREATE TABLE IF NOT EXISTS states (
    kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    updated_at REAL NOT NULL, expires_at REAL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS idempotency (key TEXT PRIMARY KEY, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS counters (
    kind TEXT NOT NULL, key TEXT NOT NULL, window INTEGER NOT NULL,
    count INTEGER NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (kind, key, window)
);
CREATE TABLE IF NOT EXISTS changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL, key TEXT NOT NULL,
    floor INTEGER NOT NULL,  -- the largest event id left after the change
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS models (
    name TEXT NOT NULL, version INTEGER NOT NULL, kind TEXT NOT NULL, path TEXT NOT NULL,
    config TEXT NOT NULL, metrics TEXT NOT NULL, created_at REAL NOT NULL,
    active INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (name, version)
);
"""


#: the schema's versions, in order; each runs once, in one transaction (``meta``'s
#: ``schema_version``). Version 1 is the layout every release so far has written.
MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "items, users, events, ingest log, states, counters, changes, models", _DDL),
    (
        2,
        "impressions (what was shown), events by user and item (their attribution)",
        """
CREATE TABLE IF NOT EXISTS impressions (
    id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL, position INTEGER NOT NULL,
    user_id TEXT, item_id TEXT NOT NULL, surface TEXT NOT NULL,
    model_version TEXT, variant TEXT, propensity REAL, ts REAL NOT NULL,
    UNIQUE (request_id, position)
);
CREATE INDEX IF NOT EXISTS impressions_ts ON impressions (ts);
CREATE INDEX IF NOT EXISTS impressions_user ON impressions (user_id);
CREATE INDEX IF NOT EXISTS events_user_item ON events (user_idx, item_idx, ts);
""",
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


class SQLiteStore(Store):
    """SQLite store. ``path`` may be ``":memory:"`` for tests.

    Args:
        path: database file; its folder is created.
        cache_mb: SQLite page cache size.
    """

    def __init__(self, path: str | Path, cache_mb: int = 256) -> None:
        self.path = str(path)
        self.url = f"sqlite:///{self.path}"
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(f"PRAGMA cache_size=-{int(cache_mb) * 1024}")
            self._conn.execute("PRAGMA busy_timeout=10000")
            self.migrated = self.migrate()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from None
        self._depth = 0
        self._data_version = -1
        self._counters_swept = 0.0
        self._user_map: pl.DataFrame | None = None
        self._item_map: pl.DataFrame | None = None

    # -- schema -------------------------------------------------------------------------------
    def schema_version(self) -> int:
        """The version the file's schema is at (0: none yet)."""
        has_meta = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()
        if not has_meta:
            return 0
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    def migrate(self) -> list[int]:
        """Run the migrations the file has not had, in order, each in one transaction.
        Returns the versions run.

        Raises:
            StoreError: the file was written by a newer avrec.
        """
        have = self.schema_version()
        if have > SCHEMA_VERSION:
            raise StoreError(
                f"the SQLite store {self.path} is at schema version {have}, newer than this "
                f"avrec's {SCHEMA_VERSION}: upgrade avrec"
            )
        done = []
        for version, _name, sql in MIGRATIONS:
            if version > have:
                self._conn.executescript(
                    f"BEGIN IMMEDIATE;\n{sql}\nINSERT OR REPLACE INTO meta(key, value) "
                    f"VALUES ('schema_version', '{int(version)}');\nCOMMIT;"
                )
                done.append(version)
        return done

    # -- transactions -------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._depth == 0:
            self._conn.execute("BEGIN IMMEDIATE")
            # another connection may have committed since our id maps were read
            version = self._conn.execute("PRAGMA data_version").fetchone()[0]
            if version != self._data_version:
                self._user_map = self._item_map = None
                self._data_version = version
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                self._conn.execute("ROLLBACK")
                self._user_map = self._item_map = None  # may hold rolled-back ids
            raise
        self._depth -= 1
        if self._depth == 0:
            self._conn.execute("COMMIT")

    # -- id maps ------------------------------------------------------------------------------
    def _map(self, table: str) -> pl.DataFrame:
        attr = "_user_map" if table == "users" else "_item_map"
        cached = getattr(self, attr)
        if cached is None:
            key = "user_id" if table == "users" else "item_id"
            rows = self._conn.execute(f"SELECT {key}, idx FROM {table}").fetchall()
            cached = pl.DataFrame(rows, schema={key: pl.String, "idx": pl.Int64}, orient="row")
            setattr(self, attr, cached)
        return cached

    def _ensure_ids(self, table: str, ids: pl.Series, placeholder_items: bool = True) -> int:
        """Create rows for ids not yet in ``table``. Returns how many were created."""
        key = "user_id" if table == "users" else "item_id"
        mapping = self._map(table)
        uniq = ids.drop_nulls().unique(maintain_order=True)  # ids in the order they came
        new = uniq.filter(~uniq.is_in(mapping[key].implode())).to_list()
        if not new:
            return 0
        start = int(mapping["idx"].max()) + 1 if mapping.height else 0  # type: ignore[arg-type]
        idx = list(range(start, start + len(new)))
        now = time.time()
        if table == "users":
            self._conn.executemany(
                "INSERT INTO users(idx, user_id, updated_at) VALUES (?, ?, ?)",
                zip(idx, new, [now] * len(new), strict=True),
            )
        else:
            self._conn.executemany(
                "INSERT INTO items(idx, item_id, placeholder, updated_at) VALUES (?, ?, ?, ?)",
                zip(idx, new, [int(placeholder_items)] * len(new), [now] * len(new), strict=True),
            )
        added = pl.DataFrame({key: new, "idx": idx}, schema={key: pl.String, "idx": pl.Int64})
        setattr(self, "_user_map" if table == "users" else "_item_map", pl.concat([mapping, added]))
        return len(new)

    # -- writes -------------------------------------------------------------------------------
    def upsert_items(self, items: pl.DataFrame) -> tuple[int, int]:
        if items.height == 0:
            return 0, 0
        fields = [f for f in ITEM_FIELDS if f in items.columns]
        with self.transaction():
            before = self._map("items")
            existing = items["item_id"].is_in(before["item_id"].implode()).sum()
            self._ensure_ids("items", items["item_id"], placeholder_items=False)
            mapping = self._map("items")
            df = items.join(mapping, on="item_id", how="left")
            cols = ["idx", *fields]
            sets = ", ".join(f"{f} = excluded.{f}" for f in fields)
            named = "".join(f"{f}, " for f in fields)  # none: the id alone
            sql = (
                f"INSERT INTO items(idx, item_id, {named}placeholder, updated_at) "
                f"VALUES (?, ?, {''.join('?, ' for _ in fields)}0, ?) "
                f"ON CONFLICT(item_id) DO UPDATE SET {sets}{',' if sets else ''} "
                "placeholder = 0, updated_at = excluded.updated_at"
            )
            now = time.time()
            data = [df[c].to_list() for c in cols]
            self._conn.executemany(
                sql,
                zip(data[0], df["item_id"].to_list(), *data[1:], [now] * df.height, strict=True),
            )
        return items.height - int(existing), int(existing)

    def upsert_users(self, users: pl.DataFrame) -> tuple[int, int]:
        if users.height == 0:
            return 0, 0
        with self.transaction():
            existing = users["user_id"].is_in(self._map("users")["user_id"].implode()).sum()
            self._ensure_ids("users", users["user_id"])
            attrs = (
                users["attributes"].to_list()
                if "attributes" in users.columns
                else [None] * users.height
            )
            now = time.time()
            self._conn.executemany(
                "UPDATE users SET attributes = ?, updated_at = ? WHERE user_id = ?",
                zip(attrs, [now] * users.height, users["user_id"].to_list(), strict=True),
            )
        return users.height - int(existing), int(existing)

    def _lookup(self, table: str, ids: list[str]) -> pl.DataFrame:
        key = "user_id" if table == "users" else "item_id"
        rows: list = []
        for lo in range(0, len(ids), 500):
            part = ids[lo : lo + 500]
            rows += self._conn.execute(
                f"SELECT {key}, idx FROM {table} WHERE {key} IN ({','.join('?' * len(part))})",
                part,
            ).fetchall()
        return pl.DataFrame(rows, schema={key: pl.String, "idx": pl.Int64}, orient="row")

    def _small_ids(self, table: str, ids: pl.Series) -> tuple[int, pl.DataFrame]:
        """:meth:`_ensure_ids` for a few ids (a served batch): only these are looked up,
        so a write never reads a million-row id map that another process' commit made
        stale. Returns how many were created and their map."""
        key = "user_id" if table == "users" else "item_id"
        uniq = ids.drop_nulls().unique(maintain_order=True).to_list()
        found = self._lookup(table, uniq)
        have = set(found[key].to_list())
        new = [x for x in uniq if x not in have]
        if new:
            top = self._conn.execute(f"SELECT coalesce(max(idx), -1) FROM {table}").fetchone()
            idx = list(range(int(top[0]) + 1, int(top[0]) + 1 + len(new)))
            now = time.time()
            if table == "users":
                self._conn.executemany(
                    "INSERT INTO users(idx, user_id, updated_at) VALUES (?, ?, ?)",
                    [(i, u, now) for i, u in zip(idx, new, strict=True)],
                )
                self._user_map = None
            else:
                self._conn.executemany(
                    "INSERT INTO items(idx, item_id, placeholder, updated_at) VALUES (?,?,1,?)",
                    [(i, t, now) for i, t in zip(idx, new, strict=True)],
                )
                self._item_map = None
            added = pl.DataFrame({key: new, "idx": idx}, schema={key: pl.String, "idx": pl.Int64})
            found = pl.concat([found, added])
        return len(new), found

    def add_events(self, events: pl.DataFrame) -> EventWriteResult:
        if events.height == 0:
            return EventWriteResult(0, 0, 0, 0)
        with self.transaction():
            if events.height <= 5000:  # a served batch: look up its own ids only
                new_users, umap = self._small_ids("users", events["user_id"])
                new_items, imap = self._small_ids("items", events["item_id"])
                umap = umap.rename({"idx": "user_idx"})
                imap = imap.rename({"idx": "item_idx"})
            else:
                new_users = self._ensure_ids("users", events["user_id"])
                new_items = self._ensure_ids("items", events["item_id"])
                umap = self._map("users").rename({"idx": "user_idx"})
                imap = self._map("items").rename({"idx": "item_idx"})
            df = (
                events.join(umap, on="user_id", how="left")
                .join(imap, on="item_id", how="left")
                .with_columns(pl.col("item_idx").fill_null(-1))
            )
            before = self._max_event_id()
            # Bind only the optional columns this batch uses: most logs carry no session, text
            # or context, and every bound parameter costs on millions of rows.
            cols = ["user_idx", "item_idx", "type", "ts", "value"]
            names = ["user_idx", "item_idx", "event", "ts", "value"]
            for name in ("session_id", "text", "context"):
                if name in df.columns and df[name].null_count() < df.height:
                    cols.append(name)
                    names.append(name)
            if "value" not in df.columns:
                df = df.with_columns(pl.lit(None, pl.Float64).alias("value"))
            updates = ", ".join(f"{c} = excluded.{c}" for c in cols[4:])
            sql = (
                f"INSERT INTO events({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
                f"ON CONFLICT(ts, user_idx, item_idx, type) DO UPDATE SET {updates}"
            )
            for start in range(0, df.height, 200_000):  # bounded Python lists per call
                part = df.slice(start, 200_000)
                self._conn.executemany(sql, zip(*(part[n].to_list() for n in names), strict=True))
            inserted = self._max_event_id() - before
        return EventWriteResult(inserted, events.height - inserted, new_users, new_items)

    def add_events_once(
        self, events: pl.DataFrame, keys: list[str | None]
    ) -> tuple[EventWriteResult, list[bool]]:
        if len(keys) != events.height:
            raise StoreError(f"{len(keys)} idempotency keys for {events.height} events")
        with self.transaction():
            given = [k for k in keys if k]
            known: set[str] = set()
            for lo in range(0, len(given), 500):
                part = given[lo : lo + 500]
                q = f"SELECT key FROM idempotency WHERE key IN ({','.join('?' * len(part))})"
                known.update(r[0] for r in self._conn.execute(q, part))
            dup, fresh = [], set()
            for k in keys:  # a key twice in one batch: the second is the duplicate
                dup.append(bool(k) and (k in known or k in fresh))
                if k:
                    fresh.add(k)
            keep = pl.Series([not d for d in dup])
            result = self.add_events(events.filter(keep)) if not all(dup) else None
            now = time.time()
            self._conn.executemany(
                "INSERT OR IGNORE INTO idempotency(key, created_at) VALUES (?, ?)",
                [(k, now) for k in fresh - known],
            )
        res = result or EventWriteResult(0, 0, 0, 0)
        total = EventWriteResult(
            res.inserted, res.duplicates + sum(dup), res.new_users, res.new_items
        )
        return total, dup

    def last_event_id(self) -> int:
        return self._max_event_id()

    def events_after(self, event_id: int, limit: int = 1_000_000) -> list[tuple]:
        return self._conn.execute(
            "SELECT e.id, u.user_id, i.item_id, e.type, e.value, e.ts FROM events e "
            "JOIN users u ON u.idx = e.user_idx LEFT JOIN items i ON i.idx = e.item_idx "
            "WHERE e.id > ? ORDER BY e.id LIMIT ?",
            (int(event_id), int(limit)),
        ).fetchall()

    def user_events(self, user_id: str, limit: int = 100, offset: int = 0) -> pl.DataFrame:
        row = self._conn.execute("SELECT idx FROM users WHERE user_id = ?", (user_id,)).fetchone()
        if row is None:
            return pl.DataFrame(schema=EVENT_SCHEMA)
        # the user's own rows through the (ts, user, ...) index would scan it all: events
        # carry the user's key, so an index-free filter on user_idx is one pass; fine for
        # the API's pages, and the overlay never reads this way
        return self._frame(
            EVENT_SQL + "WHERE e.user_idx = ? ORDER BY e.ts DESC, e.id DESC LIMIT ? OFFSET ?",
            EVENT_SCHEMA,
            (row[0], int(limit), int(offset)),
        )

    def _change(self, kind: str, key: str) -> None:
        self._conn.execute(
            "INSERT INTO changes(kind, key, floor, at) VALUES (?, ?, ?, ?)",
            (kind, key, self._max_event_id(), time.time()),
        )

    def record_change(self, kind: str, key: str) -> None:
        with self.transaction():
            self._change(kind, key)

    def changes_after(self, change_id: int) -> list[tuple[int, str, str, int]]:
        return self._conn.execute(
            "SELECT id, kind, key, floor FROM changes WHERE id > ? ORDER BY id", (int(change_id),)
        ).fetchall()

    def last_change_id(self) -> int:
        return int(self._conn.execute("SELECT coalesce(max(id), 0) FROM changes").fetchone()[0])

    def get_items(self, item_ids: list[str]) -> pl.DataFrame:
        schema = {"item_id": pl.String, **{f: ITEM_STORE_SCHEMA[f] for f in ITEM_FIELDS}}
        rows = []
        for lo in range(0, len(item_ids), 500):
            part = item_ids[lo : lo + 500]
            rows += self._conn.execute(
                f"SELECT item_id, {', '.join(ITEM_FIELDS)} FROM items "
                f"WHERE placeholder = 0 AND item_id IN ({','.join('?' * len(part))})",
                part,
            ).fetchall()
        return pl.DataFrame(rows, schema=schema, orient="row")

    def delete_items(self, item_ids: list[str]) -> dict[str, int]:
        out = {"items": 0, "events": 0}
        with self.transaction():
            for item in item_ids:
                row = self._conn.execute(
                    "SELECT idx FROM items WHERE item_id = ?", (item,)
                ).fetchone()
                if row is None:
                    continue
                out["events"] += self._conn.execute(
                    "DELETE FROM events WHERE item_idx = ?", (row[0],)
                ).rowcount
                self._conn.execute("DELETE FROM items WHERE idx = ?", (row[0],))
                self._item_map = None
                out["items"] += 1
                self._change("item_deleted", item)
        return out

    def get_user(self, user_id: str) -> dict[str, Any] | None:
        row = self._conn.execute(
            "SELECT idx, attributes, excluded, exclude_reason FROM users WHERE user_id = ?",
            (user_id,),
        ).fetchone()
        if row is None:
            return None
        n = self._conn.execute(
            "SELECT count(*) FROM events WHERE user_idx = ?", (row[0],)
        ).fetchone()[0]
        return {
            "user_id": user_id,
            "attributes": json.loads(row[1]) if row[1] else {},
            "excluded": bool(row[2]),
            "exclude_reason": row[3] or None,
            "events": int(n),
        }

    def erase_user(self, user_id: str) -> dict[str, int]:
        out = {"events": 0, "conversations": 0, "user": 0, "pages": 0, "impressions": 0}
        with self.transaction():
            row = self._conn.execute(
                "SELECT idx FROM users WHERE user_id = ?", (user_id,)
            ).fetchone()
            if row is not None:
                out["events"] = self._conn.execute(
                    "DELETE FROM events WHERE user_idx = ?", (row[0],)
                ).rowcount
                out["user"] = self._conn.execute(
                    "DELETE FROM users WHERE idx = ?", (row[0],)
                ).rowcount
                self._user_map = None
            out["conversations"] = self._conn.execute(
                "DELETE FROM states WHERE kind = 'conversation' "
                "AND json_extract(value, '$.user') = ?",
                (user_id,),
            ).rowcount
            out["pages"] = self._conn.execute(
                "DELETE FROM states WHERE kind = 'page' AND key = ?", (user_id,)
            ).rowcount
            out["impressions"] = self._conn.execute(
                "DELETE FROM impressions WHERE user_id = ?", (user_id,)
            ).rowcount
            self._change("user_erased", user_id)
        return out

    def drop_events_before(self, ts: float) -> int:
        with self.transaction():
            self._conn.execute("DELETE FROM impressions WHERE ts < ?", (float(ts),))
            gone = self._conn.execute("DELETE FROM events WHERE ts < ?", (float(ts),)).rowcount
            if gone:
                self._change("events_dropped", f"{float(ts):.0f}")
        return int(gone)

    def set_durable(self, durable: bool = True) -> None:
        # FULL: a commit is on disk (fsync) before it returns; NORMAL survives a killed
        # process but not a power cut
        self._conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")

    def _max_event_id(self) -> int:
        # Without AUTOINCREMENT a new rowid is max+1 and upserts that update consume none, so the
        # growth of max(id) is the number of inserted rows.
        return int(self._conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0])

    def set_users_excluded(self, user_ids: list[str], excluded: bool, reason: str = "") -> int:
        with self.transaction():
            cur = self._conn.executemany(
                "UPDATE users SET excluded = ?, exclude_reason = ? WHERE user_id = ?",
                [(int(excluded), reason if excluded else None, u) for u in user_ids],
            )
        return cur.rowcount

    def record_ingest(self, record: IngestRecord) -> int:
        with self.transaction():
            cur = self._conn.execute(
                "INSERT INTO ingests(kind, source, sha256, rows, accepted, rejected, duplicates,"
                " started_at, finished_at, rejects_path) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    record.kind,
                    record.source,
                    record.sha256,
                    record.rows,
                    record.accepted,
                    record.rejected,
                    record.duplicates,
                    record.started_at,
                    record.finished_at,
                    record.rejects_path,
                ),
            )
        record.id = int(cur.lastrowid or 0)
        return record.id

    def register_model(
        self,
        name: str,
        kind: str,
        path: str,
        config: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        activate: bool = True,
    ) -> ModelRecord:
        with self.transaction():
            version = int(
                self._conn.execute(
                    "SELECT coalesce(max(version), 0) + 1 FROM models WHERE name = ?", (name,)
                ).fetchone()[0]
            )
            now = time.time()
            self._conn.execute(
                "INSERT INTO models VALUES (?,?,?,?,?,?,?,0)",
                (
                    name,
                    version,
                    kind,
                    path,
                    json.dumps(config or {}),
                    json.dumps(metrics or {}),
                    now,
                ),
            )
            if activate:
                self.activate_model(name, version)
        return self.active_model(name) if activate else self.models(name)[-1]

    def activate_model(self, name: str, version: int) -> None:
        with self.transaction():
            found = self._conn.execute(
                "SELECT 1 FROM models WHERE name = ? AND version = ?", (name, version)
            ).fetchone()
            if not found:
                raise UnknownEntityError(f"model {name!r} has no version {version}")
            self._conn.execute(
                "UPDATE models SET active = (version = ?) WHERE name = ?", (version, name)
            )

    def user_texts(
        self, user_id: str, types: tuple[str, ...] = ("search", "comment"), limit: int = 20
    ) -> list[str]:
        rows = self._conn.execute(
            "SELECT e.text FROM events e JOIN users u ON u.idx = e.user_idx "
            f"WHERE u.user_id = ? AND e.type IN ({','.join('?' * len(types))}) "
            "AND e.text IS NOT NULL AND e.text != '' ORDER BY e.ts DESC, e.id DESC LIMIT ?",
            (user_id, *types, int(limit)),
        ).fetchall()
        return [r[0] for r in rows]

    # -- short-lived state (conversations, sessions) ------------------------------------------
    def put_state(self, kind: str, key: str, value: Any, ttl_s: float | None = None) -> None:
        now = time.time()
        with self.transaction():
            self._conn.execute(
                "INSERT OR REPLACE INTO states VALUES (?,?,?,?,?)",
                (
                    kind,
                    key,
                    json.dumps(value, ensure_ascii=False),
                    now,
                    None if ttl_s is None else now + ttl_s,
                ),
            )

    def put_states(self, kind: str, values: dict[str, Any], ttl_s: float | None = None) -> None:
        now = time.time()
        expires = None if ttl_s is None else now + ttl_s
        with self.transaction():
            self._conn.executemany(
                "INSERT OR REPLACE INTO states VALUES (?,?,?,?,?)",
                [(kind, k, json.dumps(v, ensure_ascii=False), now, expires)
                 for k, v in values.items()],
            )  # fmt: skip

    def get_state(self, kind: str, key: str) -> Any | None:
        row = self._conn.execute(
            "SELECT value, expires_at FROM states WHERE kind = ? AND key = ?", (kind, key)
        ).fetchone()
        if row is None or (row[1] is not None and row[1] <= time.time()):
            return None
        return json.loads(row[0])

    def count_hit(self, kind: str, key: str, window: int, ttl_s: float = 3600.0) -> int:
        now = time.time()
        with self.transaction():
            if now > self._counters_swept + 60:  # old windows go, once a minute at most
                self._conn.execute("DELETE FROM counters WHERE expires_at <= ?", (now,))
                self._counters_swept = now
            row = self._conn.execute(
                "INSERT INTO counters VALUES (?,?,?,1,?) ON CONFLICT (kind, key, window) "
                "DO UPDATE SET count = count + 1 RETURNING count",
                (kind, key, int(window), now + ttl_s),
            ).fetchone()
        return int(row[0])

    def hit_count(self, kind: str, key: str, window: int) -> int:
        row = self._conn.execute(
            "SELECT count FROM counters WHERE kind = ? AND key = ? AND window = ?",
            (kind, key, int(window)),
        ).fetchone()
        return int(row[0]) if row else 0

    def states(self, kind: str) -> dict[str, Any]:
        rows = self._conn.execute(
            "SELECT key, value FROM states WHERE kind = ? "
            "AND (expires_at IS NULL OR expires_at > ?) ORDER BY key",
            (kind, time.time()),
        ).fetchall()
        return {k: json.loads(v) for k, v in rows}

    def delete_state(self, kind: str, key: str | None = None) -> int:
        with self.transaction():
            if key is None:  # every expired entry of this kind
                cur = self._conn.execute(
                    "DELETE FROM states WHERE kind = ? AND expires_at <= ?", (kind, time.time())
                )
            else:
                cur = self._conn.execute(
                    "DELETE FROM states WHERE kind = ? AND key = ?", (kind, key)
                )
        return int(cur.rowcount or 0)

    # -- reads --------------------------------------------------------------------------------
    def _frame(self, sql: str, schema: dict[str, Any], params: tuple = ()) -> pl.DataFrame:
        rows = self._conn.execute(sql, params).fetchall()
        return pl.DataFrame(rows, schema=schema, orient="row")

    def items(self, include_placeholders: bool = True) -> pl.DataFrame:
        schema = {
            "item_id": pl.String,
            **{f: ITEM_STORE_SCHEMA[f] for f in ITEM_FIELDS},
            "placeholder": pl.Boolean,
        }
        where = "" if include_placeholders else "WHERE placeholder = 0"
        df = self._frame(
            f"SELECT item_id, {', '.join(ITEM_FIELDS)}, placeholder FROM items {where} "
            "ORDER BY idx",
            schema,
        )
        return df

    def users(self) -> pl.DataFrame:
        return self._frame(
            "SELECT user_id, attributes, excluded, exclude_reason FROM users ORDER BY idx",
            {
                "user_id": pl.String,
                "attributes": pl.String,
                "excluded": pl.Boolean,
                "exclude_reason": pl.String,
            },
        )

    def events(self, include_excluded: bool = True) -> pl.DataFrame:
        where = "" if include_excluded else "WHERE u.excluded = 0 "
        return self._frame(EVENT_SQL + where + "ORDER BY e.ts, e.id", EVENT_SCHEMA)

    def iter_events(self, batch_size: int = 1_000_000) -> Iterator[pl.DataFrame]:
        cur = self._conn.execute(EVENT_SQL + "ORDER BY e.ts, e.id")
        while rows := cur.fetchmany(batch_size):
            yield pl.DataFrame(rows, schema=EVENT_SCHEMA, orient="row")

    def counts(self) -> dict[str, int]:
        q = self._conn.execute
        return {
            "users": int(q("SELECT count(*) FROM users").fetchone()[0]),
            "items": int(q("SELECT count(*) FROM items").fetchone()[0]),
            "placeholder_items": int(
                q("SELECT count(*) FROM items WHERE placeholder = 1").fetchone()[0]
            ),
            "events": int(q("SELECT count(*) FROM events").fetchone()[0]),
            "excluded_users": int(q("SELECT count(*) FROM users WHERE excluded = 1").fetchone()[0]),
        }

    def event_type_counts(self) -> dict[str, int]:
        rows = self._conn.execute(
            "SELECT type, count(*) FROM events GROUP BY type ORDER BY count(*) DESC"
        ).fetchall()
        return {t: int(n) for t, n in rows}

    def time_span(self) -> tuple[float | None, float | None]:
        lo, hi = self._conn.execute("SELECT min(ts), max(ts) FROM events").fetchone()
        return lo, hi

    def ingests(self) -> list[IngestRecord]:
        rows = self._conn.execute(
            "SELECT kind, source, sha256, rows, accepted, rejected, duplicates, started_at,"
            " finished_at, rejects_path, id FROM ingests ORDER BY id"
        ).fetchall()
        return [IngestRecord(*r) for r in rows]

    def models(self, name: str | None = None) -> list[ModelRecord]:
        sql = "SELECT name, version, kind, path, config, metrics, created_at, active FROM models"
        rows = self._conn.execute(
            sql + (" WHERE name = ?" if name else "") + " ORDER BY name, version",
            (name,) if name else (),
        ).fetchall()
        return [
            ModelRecord(n, v, k, p, json.loads(c), json.loads(m), t, bool(a))
            for n, v, k, p, c, m, t, a in rows
        ]

    def dump_table(self, name: str, batch: int = 500_000) -> Iterator[pl.DataFrame]:
        from avrec.storage.copy import TABLES

        schema, key = TABLES[name]
        cols = ", ".join(schema)
        if not key:  # a small table
            yield self._frame(f"SELECT {cols} FROM {name}", schema)
            return
        last = None
        while True:  # keyset pages: each one an index range, never an OFFSET scan
            where, params = ("", ()) if last is None else (f"WHERE {key} > ?", (last,))
            df = self._frame(
                f"SELECT {cols} FROM {name} {where} ORDER BY {key} LIMIT ?",
                schema,
                (*params, int(batch)),
            )
            if not df.height:
                return
            yield df
            last = df[key][-1]

    def load_table(self, name: str, rows: pl.DataFrame) -> None:
        if not rows.height:
            return
        cols = ", ".join(rows.columns)
        with self.transaction():
            self._conn.executemany(
                f"INSERT INTO {name} ({cols}) VALUES ({', '.join('?' * rows.width)})",
                rows.iter_rows(),
            )
        self._user_map = self._item_map = None

    # -- impressions --------------------------------------------------------------------------
    def add_impressions(self, rows: pl.DataFrame) -> int:
        if not rows.height:
            return 0
        cols = list(IMPRESSION_SCHEMA)
        with self.transaction():
            before = self._conn.total_changes
            self._conn.executemany(
                f"INSERT OR IGNORE INTO impressions ({', '.join(cols)}) "
                f"VALUES ({', '.join('?' * len(cols))})",
                rows.select(cols).iter_rows(),
            )
            return self._conn.total_changes - before

    def impressions(self, since: float = 0.0, until: float = float("inf"),
                    user_id: str | None = None) -> pl.DataFrame:  # fmt: skip
        cols = ", ".join(IMPRESSION_SCHEMA)
        where, params = "ts >= ? AND ts < ?", [float(since), min(float(until), 1e300)]
        if user_id is not None:
            where += " AND user_id = ?"
            params.append(user_id)
        return self._frame(
            f"SELECT {cols} FROM impressions WHERE {where} ORDER BY ts, request_id, position",
            IMPRESSION_SCHEMA, tuple(params),
        )  # fmt: skip

    def integrity_check(self) -> str:
        """SQLite's own consistency check; ``"ok"`` when the file is sound."""
        return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        try:
            self._conn.close()
        except sqlite3.Error:  # pragma: no cover - closing twice is harmless
            pass


def _open(url: str, wait_s: float = 0.0) -> SQLiteStore:  # a file: nothing to wait for
    path = url.split("://", 1)[1]
    # sqlite:///relative.db -> "/relative.db"; sqlite:////abs.db -> "//abs.db"; keep SQLAlchemy's
    # convention: three slashes then a relative path, four for an absolute one.
    if path.startswith("/"):
        path = path[1:]
    if path in ("", ":memory:"):
        return SQLiteStore(":memory:")
    return SQLiteStore(path)


register_backend("sqlite", _open)
