"""The smaller parts a serving process holds beside its bundle (:mod:`avrec.service.state`):
the events and the items since the bundle was trained, the page cache, the group-committing
event writer, and the store seen through the process' lock."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import numpy as np

from avrec.data.schema import split_list
from avrec.data.weighting import EventWeighting

if TYPE_CHECKING:
    from avrec.service.state import ServiceState

log = logging.getLogger(__name__)

__all__ = [
    "EventWriter", "LiveEvents", "LockedStore", "NewItems", "PageCache", "passes", "stored_list",
]  # fmt: skip


class LiveEvents:
    """Per user, the events since the bundle was trained, in order: the items they played or
    liked (their history grows at once) and the items they rejected (never shown again)."""

    def __init__(self, weighting: EventWeighting) -> None:
        self.weighting = weighting
        self.positive: dict[str, list[str]] = defaultdict(list)
        self.negative: dict[str, set[str]] = defaultdict(set)
        self.count = 0

    def signs(self, types: list[str], values: list[float | None]) -> np.ndarray:
        """The sign of each event's preference weight, by the workspace's weighting rules
        (a dislike or an early skip is negative; a type without a rule counts as a play)."""
        known = [t if t in self.weighting.rules or self.weighting.default else "play"
                 for t in types]  # fmt: skip
        vals = np.asarray([np.nan if v is None else v for v in values], np.float64)
        return np.sign(self.weighting.weights(np.asarray(known), vals))

    def add(self, rows: list[tuple]) -> None:
        rows = [r for r in rows if r[2] is not None]  # searches name no item
        if not rows:
            return
        signs = self.signs([r[3] for r in rows], [r[4] for r in rows])
        for (_, user, item, *_rest), sign in zip(rows, signs.tolist(), strict=True):
            if sign < 0:
                self.negative[user].add(item)
            elif sign > 0:
                self.positive[user].append(item)
        self.count += len(rows)

    def clear(self) -> None:
        self.positive.clear()
        self.negative.clear()
        self.count = 0


class NewItems:
    """Items created through the API that the served bundle does not know: their e5 text
    vectors (title, tags, genres, description), encoded in the background, let the content
    side offer them before any retraining (see :func:`avrec.service.mixes.mix_new`)."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.vectors: dict[str, Any] = {}
        self.pending: list[str] = []
        self._busy = threading.Lock()

    def add(self, item_id: str, row: dict[str, Any]) -> None:
        self.rows[item_id] = row
        self.vectors.pop(item_id, None)
        self.pending.append(item_id)

    def pop(self, item_id: str) -> None:
        self.rows.pop(item_id, None)
        self.vectors.pop(item_id, None)

    def clear(self) -> None:
        self.rows.clear()
        self.vectors.clear()
        self.pending.clear()

    def encode_pending(self) -> None:
        """Encode what is waiting, in a thread, one batch at a time."""
        if not self.pending or self._busy.locked():
            return

        def run() -> None:
            with self._busy:
                while self.pending:
                    todo = list(dict.fromkeys(self.pending[:64]))
                    del self.pending[:64]
                    todo = [i for i in todo if i in self.rows]
                    if not todo:
                        continue
                    try:
                        vecs = _encode([_document(self.rows[i]) for i in todo])
                    except Exception:  # noqa: BLE001 - no encoder: new items wait for training
                        log.exception("could not encode new items")
                        return
                    for i, v in zip(todo, vecs, strict=True):
                        if i in self.rows:
                            self.vectors[i] = v

        threading.Thread(target=run, name="avrec-new-items", daemon=True).start()

    def __len__(self) -> int:
        return len(self.rows)


def stored_list(raw: Any) -> list[str]:
    """A list field as the store keeps it (a JSON list), ``[]`` when missing or malformed:
    what is shown must never fail on one bad row."""
    try:
        return split_list(raw)
    except ValueError:
        return []


def passes(row: dict[str, Any], flt: Any, now: float | None = None) -> bool:
    """Whether a new item's catalogue row is available at ``now`` (default: the clock) and
    passes an ItemFilter's categories and languages."""
    now = time.time() if now is None else now
    start, end = row.get("available_from"), row.get("available_until")
    if (start is not None and start > now) or (end is not None and end < now):
        return False
    if flt is None:
        return True
    cats = getattr(flt, "categories", None)
    if cats:
        have = {x.lower() for key in ("tags", "categories") for x in stored_list(row.get(key))}
        if not have & {c.lower() for c in cats}:
            return False
    langs = getattr(flt, "languages", None)
    return not (langs and (row.get("language") or "") not in langs)


def _document(row: dict[str, Any]) -> str:
    from avrec.language.search import document_text

    tags = " ".join([*stored_list(row.get("tags")), *stored_list(row.get("categories"))])
    doc = {"title": row.get("title") or "", "tags": tags, "description": row.get("description")}
    return document_text({k: v for k, v in doc.items() if v})


_ENCODER: Any = None


def _encode(texts: list[str]) -> Any:
    global _ENCODER
    if _ENCODER is None:
        from avrec.features.text import E5TextEncoder

        _ENCODER = E5TextEncoder()
    from avrec.features.base import l2_normalise

    return l2_normalise(_ENCODER.encode(texts))


class PageCache:
    """Answers kept for about ``ttl_s`` seconds (each one between half and one and a half
    times it), least recently used out past ``size``. Keys carry
    what would change the answer (the user's live event count, the catalogue's version,
    the bundle), so an event or a catalogue change is never answered from the cache."""

    def __init__(self, ttl_s: float, size: int = 50_000) -> None:
        from collections import OrderedDict

        self.ttl_s, self.size = ttl_s, size
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Any) -> Any:
        if self.ttl_s <= 0:
            return None
        with self._lock:
            hit = self._data.get(key)
            if hit is None or hit[0] < time.monotonic():
                self.misses += 1
                if hit is not None:
                    del self._data[key]
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return hit[1]

    def put(self, key: Any, value: Any) -> None:
        if self.ttl_s <= 0:
            return
        # each page lives between half and one and a half times the TTL: pages computed in
        # the same burst do not all expire in the same second and come back as a storm
        life = self.ttl_s * (0.5 + random.random())
        with self._lock:
            self._data[key] = (time.monotonic() + life, value)
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


class EventWriter:
    """Group commit: events from concurrent requests are written in one transaction (and
    one fsync), each request answered once that transaction is committed. A request waits
    for at most the transaction in flight plus its own."""

    def __init__(self, state: ServiceState) -> None:
        import queue

        self.state = state
        self.queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._run, name="avrec-events", daemon=True).start()

    def write(self, df: Any, keys: list[str | None]) -> list[bool]:
        """Commit ``df`` (with its idempotency keys); returns the duplicate flags."""
        from concurrent.futures import Future

        fut: Future = Future()
        self.queue.put((df, keys, fut))
        return fut.result()

    def _run(self) -> None:
        import queue

        import polars as pl

        while True:
            batch = [self.queue.get()]
            while True:  # everything that arrived meanwhile goes in the same commit
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            try:
                df = pl.concat([b[0] for b in batch], how="vertical_relaxed")
                keys = [k for b in batch for k in b[1]]
                # a key repeated across requests of one batch: the first one counts
                with self.state.lock, self.state.write_turn():
                    _, dup = self.state.store.add_events_once(df, keys)
                at = 0
                for part, _, fut in batch:
                    fut.set_result(dup[at : at + part.height])
                    at += part.height
            except Exception as exc:  # noqa: BLE001 - every waiting request gets the error
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)


class LockedStore:
    """The store seen through the process' lock, one call at a time, for code that holds it
    across slow work (a conversation's turn reads its state, ranks, then writes it)."""

    def __init__(self, store: Any, lock: Any) -> None:
        self._store, self._lock = store, lock

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attr(*args, **kwargs)

        return call
