"""The store interface and its registry of backends, opened by URL.

A :class:`Store` keeps the catalogue (items), users, behaviour events, the ingest log and the model
registry. Callers speak only this interface, in polars DataFrames with external ids; a backend turns
ids into its own integer keys. Backends register under a URL scheme (Gorse's way), so a PostgreSQL
backend is a new module that calls :func:`register_backend`, not an edit to callers.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from avrec.errors import StoreError, UnknownEntityError

__all__ = [
    "EventWriteResult",
    "IngestRecord",
    "ModelRecord",
    "Store",
    "Watch",
    "open_store",
    "redact_url",
    "register_backend",
    "registered_schemes",
]


#: the catalogue's columns as every backend stores them (besides ``item_id``)
ITEM_FIELDS = (
    "title", "description", "tags", "categories", "language", "duration", "created_at",
    "video", "audio", "image", "subtitles", "people", "available_from", "available_until",
    "attributes",
)  # fmt: skip

#: events as every backend reads them back: external ids, in the file's field names
EVENT_SQL = (
    "SELECT u.user_id, i.item_id, e.type, e.value, e.ts, e.session_id, e.text, e.context "
    "FROM events e JOIN users u ON u.idx = e.user_idx "
    "LEFT JOIN items i ON i.idx = e.item_idx "
)
EVENT_SCHEMA = {
    "user_id": pl.String,
    "item_id": pl.String,
    "event": pl.String,
    "value": pl.Float64,
    "ts": pl.Float64,
    "session_id": pl.String,
    "text": pl.String,
    "context": pl.String,
}

#: an impression: one item shown at one position of one served list (avrec.online)
IMPRESSION_SCHEMA = {
    "request_id": pl.String,
    "position": pl.Int64,
    "user_id": pl.String,
    "item_id": pl.String,
    "surface": pl.String,
    "model_version": pl.String,
    "variant": pl.String,
    "propensity": pl.Float64,
    "ts": pl.Float64,
}
#: an event attributed to an impression
OUTCOME_SCHEMA = {
    "request_id": pl.String,
    "position": pl.Int64,
    "event_id": pl.Int64,
    "event": pl.String,
    "value": pl.Float64,
}


@dataclass(frozen=True)
class EventWriteResult:
    """What one :meth:`Store.add_events` call did."""

    inserted: int
    duplicates: int
    new_users: int
    new_items: int


@dataclass
class IngestRecord:
    """One line of the ingest log."""

    kind: str
    source: str
    sha256: str
    rows: int
    accepted: int
    rejected: int
    duplicates: int
    started_at: float
    finished_at: float
    rejects_path: str | None = None
    id: int | None = None


@dataclass
class ModelRecord:
    """A model in the registry: where its bundle lives and how it scored."""

    name: str
    version: int
    kind: str
    path: str
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    active: bool = False


#: the exclusion reason of a user who withdrew consent to personalisation
NO_CONSENT = "no consent to personalisation"


def event_rows(df: pl.DataFrame) -> list[dict[str, Any]]:
    """A user's events (:meth:`Store.user_events`) as JSON rows named as in event files
    (``event``, ``timestamp``), without the user id and the empty fields."""
    rows = [{k: v for k, v in r.items() if v is not None and k != "user_id"} for r in df.to_dicts()]
    for r in rows:
        if "ts" in r:
            r["timestamp"] = r.pop("ts")
    return rows


class Store(abc.ABC):
    """Catalogue, users, events, ingest log and model registry behind one interface.

    Writes made inside :meth:`transaction` are atomic: a crash leaves the state from before the
    transaction or after it, never a part.
    """

    url: str
    #: the schema versions that opening this store ran (empty: it was up to date)
    migrated: list[int]

    # -- schema -------------------------------------------------------------------------------
    @abc.abstractmethod
    def schema_version(self) -> int:
        """The version the store's schema is at (0: none yet)."""

    @abc.abstractmethod
    def migrate(self) -> list[int]:
        """Bring the schema to this avrec's version (opening a store does it); returns the
        versions run, oldest first.

        Raises:
            StoreError: the store was written by a newer avrec.
        """

    # -- transactions -------------------------------------------------------------------------
    @abc.abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """A context in which every write commits together, or not at all. Re-entrant."""

    # -- writes -------------------------------------------------------------------------------
    @abc.abstractmethod
    def upsert_items(self, items: pl.DataFrame) -> tuple[int, int]:
        """Insert or update items (canonical columns; absent columns keep stored values).

        Returns:
            (inserted, updated)
        """

    @abc.abstractmethod
    def upsert_users(self, users: pl.DataFrame) -> tuple[int, int]:
        """Insert or update users (``user_id``, ``attributes`` as JSON text). Returns (ins, upd)."""

    @abc.abstractmethod
    def add_events(self, events: pl.DataFrame) -> EventWriteResult:
        """Add events; an event with the same (user, item, type, timestamp) replaces the stored one.

        ``events`` has ``user_id, item_id, event, value, ts, session_id, text, context``. Users and
        items not yet known are created (items as placeholders until the catalogue names them).
        """

    @abc.abstractmethod
    def set_users_excluded(self, user_ids: list[str], excluded: bool, reason: str = "") -> int:
        """Mark users as excluded from training (e.g. bots), or clear the mark. Returns count."""

    @abc.abstractmethod
    def record_ingest(self, record: IngestRecord) -> int:
        """Append to the ingest log. Returns the record id."""

    @abc.abstractmethod
    def register_model(
        self,
        name: str,
        kind: str,
        path: str,
        config: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        activate: bool = True,
    ) -> ModelRecord:
        """Add a new version of model ``name`` to the registry."""

    @abc.abstractmethod
    def activate_model(self, name: str, version: int) -> None:
        """Make ``version`` the active version of ``name``."""

    # -- reads --------------------------------------------------------------------------------
    @abc.abstractmethod
    def items(self, include_placeholders: bool = True) -> pl.DataFrame:
        """The catalogue, one row per item, canonical columns plus ``placeholder``."""

    @abc.abstractmethod
    def users(self) -> pl.DataFrame:
        """Users: ``user_id, attributes, excluded, exclude_reason``."""

    @abc.abstractmethod
    def events(self, include_excluded: bool = True) -> pl.DataFrame:
        """Events in time order (ties in insertion order), with external ids."""

    @abc.abstractmethod
    def iter_events(self, batch_size: int = 1_000_000) -> Iterator[pl.DataFrame]:
        """Events in batches, for work that must not hold them all."""

    @abc.abstractmethod
    def counts(self) -> dict[str, int]:
        """``users, items, placeholder_items, events, excluded_users``."""

    @abc.abstractmethod
    def event_type_counts(self) -> dict[str, int]:
        """Events per type."""

    @abc.abstractmethod
    def time_span(self) -> tuple[float | None, float | None]:
        """First and last event timestamp."""

    @abc.abstractmethod
    def ingests(self) -> list[IngestRecord]:
        """The ingest log, oldest first."""

    @abc.abstractmethod
    def models(self, name: str | None = None) -> list[ModelRecord]:
        """Registry entries, optionally of one model name."""

    def active_model(self, name: str) -> ModelRecord:
        """The active version of ``name``.

        Raises:
            UnknownEntityError: no such model.
        """
        for rec in self.models(name):
            if rec.active:
                return rec
        raise UnknownEntityError(f"no active model named {name!r}")

    @abc.abstractmethod
    def user_texts(
        self, user_id: str, types: tuple[str, ...] = ("search", "comment"), limit: int = 20
    ) -> list[str]:
        """The user's own words in the log (search queries, comments), newest first."""

    @abc.abstractmethod
    def put_state(self, kind: str, key: str, value: Any, ttl_s: float | None = None) -> None:
        """Keep ``value`` (JSON-able) under ``(kind, key)``, replacing what was there, for
        ``ttl_s`` seconds (``None``: until deleted). Conversations and sessions live here."""

    def put_states(self, kind: str, values: dict[str, Any], ttl_s: float | None = None) -> None:
        """:meth:`put_state` for many keys of one kind, in one transaction."""
        with self.transaction():
            for key, value in values.items():
                self.put_state(kind, key, value, ttl_s)

    @abc.abstractmethod
    def get_state(self, kind: str, key: str) -> Any | None:
        """The value under ``(kind, key)``; ``None`` when there is none or it expired."""

    @abc.abstractmethod
    def count_hit(self, kind: str, key: str, window: int, ttl_s: float = 3600.0) -> int:
        """Add one to the counter ``(kind, key, window)`` atomically, across processes, and
        return its new value; counters are forgotten ``ttl_s`` after they start."""

    @abc.abstractmethod
    def hit_count(self, kind: str, key: str, window: int) -> int:
        """The counter ``(kind, key, window)``; 0 when there is none."""

    @abc.abstractmethod
    def states(self, kind: str) -> dict[str, Any]:
        """Every live ``key -> value`` of ``kind`` (for small kinds: media roots, leases)."""

    @abc.abstractmethod
    def delete_state(self, kind: str, key: str | None = None) -> int:
        """Delete ``(kind, key)``, or with no ``key`` every expired entry of ``kind``; returns
        how many were deleted."""

    # -- serving: idempotent writes, what changed, one user or item --------------------------
    @abc.abstractmethod
    def add_events_once(
        self, events: pl.DataFrame, keys: list[str | None]
    ) -> tuple[EventWriteResult, list[bool]]:
        """:meth:`add_events` for the rows whose idempotency key (one per row, ``None``: no
        key) was never stored, and the keys stored, in one transaction. Returns the result
        and, per row, whether it was a duplicate (skipped)."""

    @abc.abstractmethod
    def last_event_id(self) -> int:
        """The largest event id (0: no events)."""

    @abc.abstractmethod
    def events_after(self, event_id: int, limit: int = 1_000_000) -> list[tuple]:
        """``(id, user_id, item_id, type, value, ts)`` of the events with a larger id, in id
        order (what a serving process has not seen yet)."""

    @abc.abstractmethod
    def user_events(self, user_id: str, limit: int = 100, offset: int = 0) -> pl.DataFrame:
        """One user's events, newest first (empty for an unknown user)."""

    @abc.abstractmethod
    def record_change(self, kind: str, key: str) -> None:
        """Log a change serving processes must learn of (``item``: created or updated)."""

    @abc.abstractmethod
    def changes_after(self, change_id: int) -> list[tuple[int, str, str, int]]:
        """``(id, kind, key, floor)`` of the logged changes after ``change_id``: ``item``,
        ``item_deleted``, ``user_erased``; ``floor`` is the largest event id left after it."""

    @abc.abstractmethod
    def last_change_id(self) -> int:
        """The largest change id (0: none)."""

    @abc.abstractmethod
    def get_items(self, item_ids: list[str]) -> pl.DataFrame:
        """The catalogue rows of these items (those that exist and are not placeholders)."""

    @abc.abstractmethod
    def delete_items(self, item_ids: list[str]) -> dict[str, int]:
        """Remove items and their events; returns how many of each."""

    @abc.abstractmethod
    def get_user(self, user_id: str) -> dict[str, Any] | None:
        """``{user_id, attributes, excluded, exclude_reason, events}``, or ``None`` for an
        unknown user."""

    @abc.abstractmethod
    def erase_user(self, user_id: str) -> dict[str, int]:
        """Delete the user, their events and their conversations (the right to be
        forgotten); returns how many of each went."""

    def lock_key(self, key: str) -> None:
        """Inside a :meth:`transaction`, wait until no other transaction holds ``key``, and
        hold it until this one ends (a read-check-write of shared state: the privacy
        ledger). SQLite needs nothing: a writing transaction already excludes the others."""
        return None

    def set_consent(self, user_id: str, personalisation: bool) -> dict[str, Any]:
        """Record whether ``user_id`` consents to personalisation. Without it their events
        stay out of training (the user is excluded, reason :data:`NO_CONSENT`), their kept
        page is deleted, and the change log tells every serving node (``consent``) to answer
        them with non-personal lists. Consent given back clears that exclusion only: a user
        excluded for another reason (a bot) stays excluded. Returns ``{user_id,
        personalisation, excluded}``."""
        with self.transaction():
            user = self.get_user(user_id)
            if user is None:
                self.upsert_users(pl.DataFrame({"user_id": [user_id], "attributes": ["{}"]}))
                user = {"excluded": False, "exclude_reason": None}
            if not personalisation:
                if not user["excluded"]:
                    self.set_users_excluded([user_id], True, NO_CONSENT)
                self.delete_state("page", user_id)
            elif user["exclude_reason"] == NO_CONSENT:
                self.set_users_excluded([user_id], False)
            self.record_change("consent", user_id)
            now = self.get_user(user_id) or {}
        return {
            "user_id": user_id,
            "personalisation": now.get("exclude_reason") != NO_CONSENT,
            "excluded": bool(now.get("excluded")),
        }

    def without_consent(self) -> set[str]:
        """The users who withdrew consent to personalisation."""
        users = self.users()
        if not users.height:
            return set()
        return set(users.filter(pl.col("exclude_reason") == NO_CONSENT)["user_id"].to_list())

    @abc.abstractmethod
    def drop_events_before(self, ts: float) -> int:
        """Delete the events before ``ts`` (retention): every such row in SQLite; in
        PostgreSQL the monthly partitions that end by ``ts``, whole. Logs the change
        ``events_dropped`` for serving nodes. Returns how many rows (SQLite) or months
        (PostgreSQL) went."""

    def apply_retention(self, days: float, now: float | None = None) -> dict[str, Any]:
        """Delete the events older than ``days`` (``[privacy] retention_days``), as
        :meth:`drop_events_before` does; returns ``{before, events}``: the cut-off time and
        how many events went."""
        import time

        cutoff = (time.time() if now is None else now) - float(days) * 86400.0
        had = self.counts()["events"]
        self.drop_events_before(cutoff)
        return {"before": cutoff, "events": had - self.counts()["events"]}

    def export_user(self, user_id: str, page: int = 10_000) -> dict[str, Any] | None:
        """Everything the store holds about ``user_id`` (the right of access), the same set
        :meth:`erase_user` deletes: the user's row, every event (its searches and comments
        in their own words included, newest first, fields named as in event files), their
        conversations, their precomputed page and what they were shown (impressions);
        ``None`` when it holds nothing."""
        user = self.get_user(user_id)
        events: list[dict[str, Any]] = []
        offset = 0
        while True:
            df = self.user_events(user_id, limit=page, offset=offset)
            events += event_rows(df)
            if df.height < page:
                break
            offset += page
        conversations = {
            key: value
            for key, value in self.states("conversation").items()
            if isinstance(value, dict) and value.get("user") == user_id
        }
        kept_page = self.get_state("page", user_id)
        shown = self.impressions(user_id=user_id)
        if user is None and not events and not conversations and kept_page is None:
            if not shown.height:
                return None
        return {
            "user_id": user_id,
            "user": user,
            "events": events,
            "conversations": conversations,
            "page": kept_page,
            "impressions": shown.to_dicts(),
        }

    # -- impressions (avrec.online) -------------------------------------------------------------
    @abc.abstractmethod
    def add_impressions(self, rows: pl.DataFrame) -> int:
        """Store impressions (columns of ``IMPRESSION_SCHEMA``); one already stored (the same
        ``request_id`` and ``position``, a replayed journal) is left as it is. Returns how
        many were new."""

    @abc.abstractmethod
    def impressions(
        self, since: float = 0.0, until: float = float("inf"), user_id: str | None = None
    ) -> pl.DataFrame:
        """Impressions shown in ``[since, until)`` (of one user), in time order."""

    #: the SQL dialect of the shared queries below: a parameter, a LIKE's percent sign, the
    #: ``request_id`` of an event's JSON ``context``, and an item that is no placeholder
    _param = "?"
    _percent = "%"
    _request_id_sql = "json_extract(context, '$.request_id')"
    _real_item_sql = "it.placeholder = 0"

    def _frame(self, sql: str, schema: dict[str, Any], params: Any = ()) -> pl.DataFrame:
        raise NotImplementedError

    def impression_outcomes(self, since: float, until: float, window_s: float) -> pl.DataFrame:
        """The events attributed to the impressions shown in ``[since, until)``
        (``OUTCOME_SCHEMA``): the same user's events of the same item within ``window_s``
        seconds after it, and events that echo its ``request_id`` (in their ``context``) for
        the same item, an anonymous session's included; each pair once."""
        p, pct = self._param, self._percent
        until = min(float(until), 1e300)
        head = "SELECT i.request_id, i.position, e.id AS event_id, e.type AS event, e.value "
        by_user = self._frame(
            head + "FROM impressions i JOIN users u ON u.user_id = i.user_id "
            "JOIN items it ON it.item_id = i.item_id "
            "JOIN events e ON e.user_idx = u.idx AND e.item_idx = it.idx "
            f"AND e.ts >= i.ts AND e.ts <= i.ts + {p} WHERE i.ts >= {p} AND i.ts < {p}",
            OUTCOME_SCHEMA, (float(window_s), float(since), until),
        )  # fmt: skip
        echoed = self._frame(
            head + "FROM (SELECT id, item_idx, type, value, "
            f"{self._request_id_sql} AS rid FROM events "
            f"WHERE context LIKE '{pct}request_id{pct}' AND ts >= {p}) e "
            "JOIN items it ON it.idx = e.item_idx "
            "JOIN impressions i ON i.request_id = e.rid AND i.item_id = it.item_id "
            f"WHERE i.ts >= {p} AND i.ts < {p}",
            OUTCOME_SCHEMA, (float(since), float(since), until),
        )  # fmt: skip
        return pl.concat([by_user, echoed]).unique(["request_id", "position", "event_id"])

    def item_user_counts(self) -> pl.DataFrame:
        """``item_id, users``: how many users have events of each item."""
        return self._frame(
            "SELECT it.item_id, count(DISTINCT e.user_idx) AS users FROM events e "
            "JOIN items it ON it.idx = e.item_idx GROUP BY it.item_id",
            {"item_id": pl.String, "users": pl.Int64},
        )

    def explore_items(
        self, now: float, fresh_since: float, since: float, cold_impressions: int
    ) -> list[tuple[str, bool]]:
        """The catalogue's items (no placeholder) available at ``now`` (inside their window)
        that are fresh (created at ``fresh_since`` or later) or cold (fewer than
        ``cold_impressions`` impressions since ``since``), each with whether it is fresh,
        sorted by id: exploration's pool, counted by the database in one query, not read
        whole into the process."""
        p = self._param
        df = self._frame(
            f"SELECT it.item_id, CASE WHEN it.created_at >= {p} THEN 1 ELSE 0 END AS fresh "
            "FROM items it LEFT JOIN (SELECT item_id, count(*) AS n "
            f"FROM impressions WHERE ts >= {p} GROUP BY item_id) s ON s.item_id = it.item_id "
            f"WHERE {self._real_item_sql} "
            f"AND (it.available_from IS NULL OR it.available_from <= {p}) "
            f"AND (it.available_until IS NULL OR it.available_until >= {p}) "
            f"AND (it.created_at >= {p} OR coalesce(s.n, 0) < {p})",
            {"item_id": pl.String, "fresh": pl.Int64},
            (float(fresh_since), float(since), float(now), float(now), float(fresh_since),
             int(cold_impressions)),
        )  # fmt: skip
        # sorted in Python: the databases' collations differ
        return sorted((i, bool(f)) for i, f in df.iter_rows())

    # -- several processes on several machines ------------------------------------------------
    #: whether processes on other machines may share this store (a database server): the
    #: service then keeps no file lock and counts rate limits in the store
    shared: bool = False

    def watch(self) -> Watch | None:
        """Notifications of other processes' writes (``None``: the backend has none; read
        ``events_after`` and ``changes_after`` each time)."""
        return None

    def put_bundle(self, name: str, version: int, folder: str | Path) -> bool:
        """Keep a model bundle's files in the store, for processes on other machines
        (``False``: this backend keeps none; they read ``ModelRecord.path``)."""
        return False

    def get_bundle(self, name: str, version: int, dest: str | Path) -> Path | None:
        """Write the bundle kept by :meth:`put_bundle` into ``dest``; ``None`` if none."""
        return None

    # -- whole tables (avrec store copy) -------------------------------------------------------
    @abc.abstractmethod
    def dump_table(self, name: str, batch: int = 500_000) -> Iterator[pl.DataFrame]:
        """Every row of table ``name`` (one of :data:`avrec.storage.copy.TABLES`) with its
        own keys, in key order, in frames of at most ``batch`` rows."""

    @abc.abstractmethod
    def load_table(self, name: str, rows: pl.DataFrame) -> None:
        """Insert rows as :meth:`dump_table` gives them (keys kept) into table ``name``."""

    def after_load(self) -> None:  # noqa: B027 - optional
        """Make the store ready after :meth:`load_table` (sequences past the copied keys)."""

    def set_durable(self, durable: bool = True) -> None:  # noqa: B027 - optional
        """Make every commit reach the disk before it returns (backends that can choose)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Watch(abc.ABC):
    """What other processes wrote, as notifications (``Store.watch``)."""

    @abc.abstractmethod
    def take(self, kind: str) -> bool:
        """Whether ``kind`` (``events``, ``changes``, ``models``) may have changed since the
        last ``take`` of it: notified, or the notifications are down (read anyway)."""

    @abc.abstractmethod
    def mark(self, kind: str | None = None) -> None:
        """Flag ``kind``, or every kind (a read that failed must be tried again)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop listening."""


_BACKENDS: dict[str, Callable[..., Store]] = {}


def redact_url(url: str) -> str:
    """``url`` with its password as ``***`` (for messages, logs and ``Store.url``)."""
    return re.sub(r"^([\w+.-]+://[^:/@]+):[^@]*@", r"\1:***@", url)


def register_backend(scheme: str, factory: Callable[..., Store]) -> None:
    """Register a backend for URLs starting with ``scheme://``: ``factory(url, wait_s=...)``
    (options a backend has no use for it ignores)."""
    _BACKENDS[scheme] = factory


def registered_schemes() -> list[str]:
    """URL schemes with a backend."""
    _load_builtin()
    return sorted(_BACKENDS)


def _load_builtin() -> None:
    from avrec.storage import postgres, sqlite  # noqa: F401  (each registers itself)


def open_store(url: str, wait_s: float = 0.0) -> Store:
    """Open a store by URL, e.g. ``sqlite:///path/avrec.db``, ``sqlite:///:memory:`` or
    ``postgresql://user:password@host:port/database``; a server that cannot be reached yet
    is waited for up to ``wait_s`` seconds (``avrec serve``).

    Raises:
        StoreError: the scheme has no backend, or the store cannot be opened.
    """
    _load_builtin()
    scheme = url.split("://", 1)[0] if "://" in url else ""
    factory = _BACKENDS.get(scheme)
    if factory is None:
        raise StoreError(
            f"no store backend for {url!r}; known schemes: {', '.join(sorted(_BACKENDS))}"
        )
    return factory(url, wait_s=wait_s)
