"""The in-memory Dataset that every model trains on.

A Dataset holds, for one snapshot of the data:

- vocabularies for users and items (items: the whole catalogue, so cold items have an index);
- the events as columnar arrays, sorted by user then time (ties in the original order);
- the user x item preference matrix, built with the configured :class:`EventWeighting`
  (positives), and the matrix of negative pairs (dislikes, early skips) kept apart;
- per-user item sequences in time order, for sequential models;
- side information about items (catalogue fields, tags, people, and per-modality vectors that the
  content stage fills), which belongs to the dataset so that every model can use it.
"""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from avrec.data.vocab import Vocabulary
from avrec.data.weighting import EventWeighting
from avrec.errors import DataError, UnknownEntityError

__all__ = ["Dataset"]


class Dataset:
    """Interactions and side information for one snapshot.

    Build it with :meth:`from_events` (a polars frame) or :meth:`from_store`.

    Attributes:
        users, items: the vocabularies.
        user_index, item_index, event_type, ts, value, weight: per-event arrays sorted by
            (user, time, original order).
        order: each event's position in the input (ties in time keep this order).
        catalogue: catalogue fields aligned with ``items`` (one row per item).
        item_features: per-modality item vectors, ``name -> (n_items, dim)``.
    """

    def __init__(
        self,
        users: Vocabulary,
        items: Vocabulary,
        user_index: np.ndarray,
        item_index: np.ndarray,
        event_type: np.ndarray,
        ts: np.ndarray,
        value: np.ndarray,
        weighting: EventWeighting,
        catalogue: pl.DataFrame | None = None,
        name: str = "dataset",
        meta: dict[str, Any] | None = None,
        order: np.ndarray | None = None,
    ) -> None:
        input_order = np.arange(len(ts)) if order is None else np.asarray(order, np.int64)
        sort = np.lexsort((input_order, ts, user_index))
        self.order = input_order[sort]
        self.users = users
        self.items = items
        self.user_index = np.asarray(user_index, dtype=np.int64)[sort]
        self.item_index = np.asarray(item_index, dtype=np.int64)[sort]
        self.event_type = np.asarray(event_type, dtype=object)[sort]
        self.ts = np.asarray(ts, dtype=np.float64)[sort]
        self.value = np.asarray(value, dtype=np.float64)[sort]
        self.weighting = weighting
        self.weight = weighting.weights(self.event_type.astype(str), self.value)
        self.name = name
        self.meta = dict(meta or {})
        self.catalogue = (
            catalogue if catalogue is not None else pl.DataFrame({"item_id": list(items.ids)})
        )
        if self.catalogue.height != len(items):
            raise DataError("catalogue rows must align with the item vocabulary")
        self.item_features: dict[str, np.ndarray] = {}
        #: item id -> field -> text from the content analysis (transcript, on-screen text,
        #: keywords), set by ContentStore.attach; searched beside the catalogue's fields
        self.item_texts: dict[str, dict[str, str]] = {}

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_events(
        cls,
        events: pl.DataFrame,
        items: pl.DataFrame | None = None,
        weighting: EventWeighting | None = None,
        name: str = "dataset",
        meta: dict[str, Any] | None = None,
        users: list[str] | None = None,
    ) -> Dataset:
        """Build from an events frame and an optional catalogue.

        Args:
            events: ``user_id, item_id`` and optionally ``event`` (default ``play``), ``value``,
                ``ts`` (default: row order). Rows without an item (searches) are not
                interactions and are left out.
            items: catalogue with ``item_id`` and any canonical fields; every catalogue item gets
                an index even with no events (cold items).
            weighting: event weighting; default :class:`EventWeighting`.
            users: a user vocabulary to use (it must hold every user of ``events``); by default
                the users of ``events`` in order of appearance.
        """
        if "user_id" not in events.columns or "item_id" not in events.columns:
            raise DataError("events need user_id and item_id columns")
        ev = events.filter(pl.col("item_id").is_not_null()).with_columns(
            pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String)
        )
        n = ev.height
        user_ids = (
            [str(u) for u in users]
            if users is not None
            else ev["user_id"].unique(maintain_order=True).to_list()
        )
        user_vocab = Vocabulary(user_ids, "user")
        cat_ids = (
            items["item_id"].cast(pl.String).unique(maintain_order=True).to_list()
            if items is not None
            else []
        )
        item_vocab = Vocabulary(cat_ids, "item").extend(
            ev["item_id"].unique(maintain_order=True).to_list()
        )
        umap = pl.DataFrame(
            {"user_id": user_ids, "_u": np.arange(len(user_vocab))},
            schema={"user_id": pl.String, "_u": pl.Int64},
        )
        imap = pl.DataFrame(
            {"item_id": list(item_vocab.ids), "_i": np.arange(len(item_vocab))},
            schema={"item_id": pl.String, "_i": pl.Int64},
        )
        idx = ev.select("user_id", "item_id").join(
            umap, on="user_id", how="left", maintain_order="left"
        )
        idx = idx.join(imap, on="item_id", how="left", maintain_order="left")
        if idx["_u"].null_count():
            raise DataError("events name users that are not in the given user vocabulary")
        types = ev["event"].to_numpy() if "event" in ev.columns else np.full(n, "play", object)
        value = (
            ev["value"].cast(pl.Float64).fill_null(np.nan).to_numpy()
            if "value" in ev.columns
            else np.full(n, np.nan)
        )
        ts = (
            ev["ts"].cast(pl.Float64).to_numpy()
            if "ts" in ev.columns
            else np.arange(n, dtype=np.float64)
        )
        catalogue = None
        if items is not None:
            cat = items.with_columns(pl.col("item_id").cast(pl.String)).unique(
                "item_id", keep="first", maintain_order=True
            )
            catalogue = imap.select("item_id").join(
                cat, on="item_id", how="left", maintain_order="left"
            )
        return cls(
            user_vocab,
            item_vocab,
            idx["_u"].to_numpy(),
            idx["_i"].to_numpy(),
            types,
            ts,
            value,
            weighting or EventWeighting(),
            catalogue,
            name,
            meta,
        )

    @classmethod
    def from_store(
        cls,
        store: Any,
        weighting: EventWeighting | None = None,
        include_excluded: bool = False,
        name: str = "workspace",
    ) -> Dataset:
        """Build from a :class:`~avrec.storage.Store` (excluded users left out by default)."""
        from avrec.data.captions import with_caption_entities

        events = store.events(include_excluded=include_excluded)
        # hashtags and mentions in titles and descriptions count as tags and people
        items = with_caption_entities(store.items())
        return cls.from_events(events, items, weighting, name=name)

    def select(self, mask: np.ndarray, name: str | None = None) -> Dataset:
        """A Dataset of the events where ``mask`` is true, with the same vocabularies,
        catalogue, item features and weighting (how splits make training sets)."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (self.n_events,):
            raise DataError(f"mask must have one entry per event ({self.n_events})")
        return self._derive(mask, self.weighting, name or self.name)

    def with_weighting(self, weighting: EventWeighting) -> Dataset:
        """The same events under another weighting."""
        return self._derive(slice(None), weighting, self.name)

    def _derive(self, rows: np.ndarray | slice, weighting: EventWeighting, name: str) -> Dataset:
        out = Dataset(
            self.users,
            self.items,
            self.user_index[rows],
            self.item_index[rows],
            self.event_type[rows],
            self.ts[rows],
            self.value[rows],
            weighting,
            self.catalogue,
            name,
            self.meta,
            order=self.order[rows],
        )
        out.item_features = dict(self.item_features)
        out.item_texts = self.item_texts
        return out

    # -- sizes --------------------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_events(self) -> int:
        return len(self.user_index)

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}: {self.n_users} users, {self.n_items} items, "
            f"{self.n_events} events)"
        )

    # -- matrices -----------------------------------------------------------------------------
    @cached_property
    def _pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.weighting.aggregate_pairs(
            self.user_index, self.item_index, self.weight, np.arange(self.n_events)
        )

    def _matrix(self, mask: np.ndarray, data: np.ndarray) -> sp.csr_matrix:
        u, i, _ = self._pairs
        m = sp.csr_matrix(
            (data[mask], (u[mask], i[mask])), shape=(self.n_users, self.n_items), dtype=np.float32
        )
        m.sort_indices()
        return m

    @cached_property
    def interactions(self) -> sp.csr_matrix:
        """users x items preference weights of positive pairs (float32 CSR)."""
        _, _, w = self._pairs
        return self._matrix(w > self.weighting.positive_threshold, w)

    @cached_property
    def negatives(self) -> sp.csr_matrix:
        """users x items pairs whose combined weight is negative (their magnitude)."""
        _, _, w = self._pairs
        return self._matrix(w < 0, -w)

    @cached_property
    def seen(self) -> sp.csr_matrix:
        """users x items, 1 for every pair with any event (what "exclude seen" excludes)."""
        _, _, w = self._pairs
        return self._matrix(np.ones(len(w), dtype=bool), np.ones(len(w), dtype=np.float32))

    def binary(self) -> sp.csr_matrix:
        """users x items, 1 for every positive pair."""
        m = self.interactions.copy()
        m.data[:] = 1.0
        return m

    # -- sequences ----------------------------------------------------------------------------
    @cached_property
    def sequence_indptr(self) -> np.ndarray:
        """CSR-style offsets: user ``u``'s items are ``item_index[indptr[u]:indptr[u+1]]``."""
        counts = np.bincount(self.user_index, minlength=self.n_users)
        return np.r_[0, np.cumsum(counts)].astype(np.int64)

    def sequence(self, user: str) -> list[str]:
        """The items of ``user`` in time order (repeats kept).

        Raises:
            UnknownEntityError: unknown user.
        """
        u = int(self.users.index(user)[0])
        lo, hi = self.sequence_indptr[u], self.sequence_indptr[u + 1]
        return self.items.lookup(self.item_index[lo:hi])

    # -- side information ---------------------------------------------------------------------
    def set_item_features(self, name: str, vectors: np.ndarray) -> None:
        """Attach per-item vectors of one modality (rows aligned with ``items``).

        Raises:
            DataError: the row count does not match the item vocabulary.
        """
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[0] != self.n_items:
            raise DataError(
                f"item features {name!r} must have shape (n_items={self.n_items}, dim), "
                f"got {vectors.shape}"
            )
        self.item_features[name] = vectors

    def _json_column(self, name: str) -> list[Any]:
        if name not in self.catalogue.columns:
            return [[] for _ in range(self.n_items)]
        out = []
        for v in self.catalogue[name].to_list():
            if v is None:
                out.append([])
            elif isinstance(v, str):
                out.append(json.loads(v) if v.startswith("[") else [v])
            else:
                out.append(list(v))
        return out

    @cached_property
    def item_tags(self) -> list[list[str]]:
        """Tags of each item (catalogue ``tags``), aligned with ``items``."""
        return self._json_column("tags")

    @cached_property
    def item_categories(self) -> list[list[str]]:
        """Categories / genres of each item, aligned with ``items``."""
        return self._json_column("categories")

    @cached_property
    def item_people(self) -> list[list[dict[str, str]]]:
        """People of each item as ``{"name", "role"}`` dicts, aligned with ``items``."""
        return self._json_column("people")

    def item_field(self, name: str) -> list[Any]:
        """A catalogue column aligned with ``items`` (``None`` where absent)."""
        if name not in self.catalogue.columns:
            return [None] * self.n_items
        return self.catalogue[name].to_list()

    # -- statistics ---------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Users, items, events, pairs, density, events per type and time span."""
        types, counts = np.unique(self.event_type.astype(str), return_counts=True)
        n_pairs = self.seen.nnz
        return {
            "users": self.n_users,
            "items": self.n_items,
            "items_with_events": int(
                (np.bincount(self.item_index, minlength=self.n_items) > 0).sum()
            ),
            "events": self.n_events,
            "pairs": int(n_pairs),
            "density": n_pairs / max(self.n_users * self.n_items, 1),
            "events_by_type": {str(t): int(c) for t, c in zip(types, counts, strict=True)},
            "first_ts": float(self.ts.min()) if self.n_events else None,
            "last_ts": float(self.ts.max()) if self.n_events else None,
        }

    def user_items(self, user: str) -> list[str]:
        """Items ``user`` has a positive preference for."""
        if user not in self.users:
            raise UnknownEntityError(f"unknown user id: {user!r}")
        row = self.interactions[int(self.users.index(user)[0])]
        return self.items.lookup(row.indices)
