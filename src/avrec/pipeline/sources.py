"""Candidate sources: each proposes items for a user, with scores and, where it can, the anchor
(the item in the user's history that led to the proposal), so that the pipeline can merge them
with provenance, rank them and explain them.

Every source has the same contract: ``fit(dataset)`` on training data, then
``retrieve(requests, n)`` gives up to ``n`` :class:`Candidates` per :class:`Request`, never an
item in ``request.exclude`` (the user's history and anything the caller excludes). Sources:

- ``model``: any recommender of the registry (collaborative, sequential, content), its top-n.
- ``neighbours``: items closest (content vectors, FAISS) to the user's most recent items.
- ``interests``: content vectors of the user's history clustered into a few interest centroids,
  recency- and event-weighted, each retrieved from (FAISS), so a person with two tastes gets both.
- ``people``: items sharing people (directors, cast, artists) or tags with what the user played.
- ``trending``: time-decayed popularity. ``fresh``: new items with little history yet.
- ``popular``: the fallback; answers anyone, including a person with no history at all.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp

from avrec.data.dataset import Dataset
from avrec.errors import ConfigError, NotFittedError
from avrec.storage.artifacts import atomic_write_bytes

__all__ = [
    "SOURCES",
    "Candidates",
    "Request",
    "Source",
    "create_source",
    "register_source",
]


@dataclass
class Request:
    """One user's request as sources see it (indices in the training vocabularies).

    Attributes:
        user: the user's index, -1 for a user the sources never saw.
        history: item indices in time order (training events plus anything newer, e.g. this
            session's plays).
        weights: the preference weight of each history event (same length; 1.0 if unknown).
        times: event times, Unix seconds (same length), or ``None``.
        exclude: item indices never to propose (default: the history).
    """

    user: int
    history: np.ndarray
    weights: np.ndarray | None = None
    times: np.ndarray | None = None
    exclude: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.history = np.asarray(self.history, dtype=np.int64)
        if self.weights is None:
            self.weights = np.ones(len(self.history), np.float32)
        if self.exclude is None:
            self.exclude = self.history
        self.exclude = np.asarray(self.exclude, dtype=np.int64)


@dataclass
class Candidates:
    """A source's proposals for one request, best first."""

    items: np.ndarray  # int64 item indices
    scores: np.ndarray  # float32
    anchors: np.ndarray = field(default=None)  # type: ignore[assignment]  # history item or -1

    def __post_init__(self) -> None:
        self.items = np.asarray(self.items, dtype=np.int64)
        self.scores = np.asarray(self.scores, dtype=np.float32)
        if self.anchors is None:
            self.anchors = np.full(len(self.items), -1, np.int64)
        self.anchors = np.asarray(self.anchors, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.items)


class Source(abc.ABC):
    """Base class of candidate sources."""

    kind: ClassVar[str]

    def __init__(self, name: str | None = None) -> None:
        self.name = name or self.kind
        self.n_items = 0
        self._fitted = False

    def fit(self, dataset: Dataset) -> Self:
        self.n_items = dataset.n_items
        self._fit(dataset)
        self._fitted = True
        return self

    @abc.abstractmethod
    def _fit(self, dataset: Dataset) -> None: ...

    def retrieve(self, requests: Sequence[Request], n: int) -> list[Candidates]:
        """Up to ``n`` candidates per request, best first, none excluded."""
        if not self._fitted:
            raise NotFittedError(f"source {self.name!r} is not fitted")
        if n <= 0:
            raise ConfigError(f"n must be positive, got {n}")
        return self._retrieve(list(requests), n)

    @abc.abstractmethod
    def _retrieve(self, requests: list[Request], n: int) -> list[Candidates]: ...

    # -- persistence (pipeline bundles) --------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write what :meth:`fit` learned into the folder ``path``."""
        import io

        path.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, __n_items=np.asarray(self.n_items), **self._state())
        atomic_write_bytes(path / "state.npz", buf.getvalue())

    def load(self, path: Path) -> Self:
        """Restore a fitted source saved by :meth:`save` (constructed with the same params)."""
        with np.load(path / "state.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        self.n_items = int(arrays.pop("__n_items"))
        self._set_state(arrays)
        self._fitted = True
        return self

    def _state(self) -> dict[str, np.ndarray]:
        return {}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:  # noqa: B027 - optional hook
        pass


SOURCES: dict[str, type[Source]] = {}


def register_source(cls: type[Source]) -> type[Source]:
    SOURCES[cls.kind] = cls
    return cls


def create_source(kind: str, **params: Any) -> Source:
    """A source by kind (``model``, ``neighbours``, ``interests``, ``people``, ``trending``,
    ``fresh``, ``popular``).

    Raises:
        ConfigError: unknown kind or parameter.
    """
    if kind not in SOURCES:
        raise ConfigError(f"unknown candidate source {kind!r}; known: {', '.join(sorted(SOURCES))}")
    try:
        return SOURCES[kind](**params)
    except TypeError as exc:
        raise ConfigError(f"source {kind!r}: {exc}") from None


def _top(scores: np.ndarray, exclude: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` best finite scores of one row, excluded items left out, ties by index."""
    s = scores.astype(np.float32, copy=True)
    if len(exclude):
        s[exclude[(exclude >= 0) & (exclude < len(s))]] = -np.inf
    ok = np.isfinite(s)
    m = min(n, int(ok.sum()))
    if m == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    part = np.argpartition(-s, m - 1)[:m] if m < len(s) else np.arange(len(s))
    part = part[np.isfinite(s[part])]
    order = np.lexsort((part, -s[part]))
    top = part[order][:m]
    return top.astype(np.int64), s[top]


def _history_matrix(requests: list[Request], n_items: int) -> sp.csr_matrix:
    rows, cols, vals = [], [], []
    for r, req in enumerate(requests):
        h = req.history[(req.history >= 0) & (req.history < n_items)]
        w = np.asarray(req.weights, np.float32)[: len(req.history)][
            (req.history >= 0) & (req.history < n_items)
        ]
        rows.append(np.full(len(h), r))
        cols.append(h)
        vals.append(w)
    if not rows:
        return sp.csr_matrix((0, n_items), dtype=np.float32)
    m = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(len(requests), n_items),
        dtype=np.float32,
    )
    m.sum_duplicates()
    return m


# -- sources ----------------------------------------------------------------------------------
@register_source
class ModelSource(Source):
    """Any recommender's top-n (scores from the request's history, so new events count).

    Args:
        model: registry name (``"ease"``, ``"sasrec"`` ...) or a fitted/unfitted Recommender.
        params: the model's parameters when ``model`` is a name.
    """

    kind = "model"

    def __init__(self, model: Any = "ease", name: str | None = None, **params: Any) -> None:
        from avrec.models import create_model

        self.model = create_model(model, **params) if isinstance(model, str) else model
        super().__init__(name or self.model.name)

    def _fit(self, dataset: Dataset) -> None:
        if not self.model.is_fitted:
            self.model.fit(dataset)

    def save(self, path: Path) -> None:
        super().save(path)
        self.model.save(path / "model")

    def load(self, path: Path) -> Self:
        from avrec.models import load_model

        self.model = load_model(path / "model")
        return super().load(path)

    def _retrieve(self, requests: list[Request], n: int) -> list[Candidates]:
        from avrec.models.base import UserBatch

        users = np.asarray([r.user for r in requests], dtype=np.int64)
        hist = _history_matrix(requests, self.n_items)
        seqs = [r.history for r in requests] if self.model.uses_sequences else None
        scores = np.asarray(self.model._score_batch(UserBatch(users, hist, seqs)), np.float32)
        out = []
        for i, req in enumerate(requests):
            row = scores[i]
            finite = row[np.isfinite(row)]
            if not len(finite) or finite.max() == finite.min():
                out.append(Candidates([], []))  # no signal (e.g. no history): nothing to say
                continue
            out.append(Candidates(*_top(row, req.exclude, n)))
        return out


class _VectorSource(Source):
    """Shared parts of sources that search content vectors."""

    def __init__(self, feature: str = "fused", name: str | None = None) -> None:
        super().__init__(name)
        self.feature = feature

    def _fit(self, dataset: Dataset) -> None:
        from avrec.features.base import l2_normalise

        if self.feature not in dataset.item_features:
            raise ConfigError(
                f"source {self.name!r} needs {self.feature!r} item features; run avrec analyze"
                " and attach them (ContentStore.attach)"
            )
        self._index_vectors(
            l2_normalise(np.asarray(dataset.item_features[self.feature], np.float32))
        )

    def _index_vectors(self, x: np.ndarray) -> None:
        from avrec.retrieval import VectorIndex

        self.vectors = x
        self.has_vector = np.linalg.norm(x, axis=1) > 0
        # only items with a vector are indexed (row -> item), so searches need no mask
        self.rows = np.flatnonzero(self.has_vector)
        self.row_of = np.full(len(x), -1, np.int64)
        self.row_of[self.rows] = np.arange(len(self.rows))
        self.index = VectorIndex().build(x[self.rows]) if len(self.rows) else None

    def _state(self) -> dict[str, np.ndarray]:
        return {"vectors": self.vectors}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._index_vectors(arrays["vectors"])

    def _search_many(self, queries: np.ndarray, exclude: np.ndarray, n: int) -> list[Candidates]:
        """The ``n`` nearest items to each query (one batched FAISS call), none excluded."""
        if self.index is None or not len(queries):
            return [Candidates([], []) for _ in range(len(queries))]
        ex = self.row_of[exclude[(exclude >= 0) & (exclude < len(self.row_of))]]
        ex = ex[ex >= 0]
        res = self.index.search(queries, n, exclude=[ex] * len(queries))
        out = []
        for idx, sc in zip(res.indices, res.scores, strict=True):
            keep = idx >= 0
            out.append(Candidates(self.rows[idx[keep]], sc[keep]))
        return out

    def _search(self, query: np.ndarray, exclude: np.ndarray, n: int) -> Candidates:
        return self._search_many(query[None], exclude, n)[0]


@register_source
class NeighbourSource(_VectorSource):
    """Items nearest (content vectors) to each of the user's ``recent`` latest items; each
    candidate's anchor is the recent item it is nearest to."""

    kind = "neighbours"

    def __init__(self, feature: str = "fused", recent: int = 5, name: str | None = None) -> None:
        super().__init__(feature, name)
        self.recent = recent

    def _retrieve(self, requests: list[Request], n: int) -> list[Candidates]:
        out = []
        for req in requests:
            recent = [i for i in req.history[::-1] if 0 <= i < self.n_items and self.has_vector[i]]
            recent = list(dict.fromkeys(recent))[: self.recent]
            best: dict[int, tuple[float, int]] = {}
            per = max(n, 2 * n // max(1, len(recent)))
            found = self._search_many(self.vectors[recent], req.exclude, per) if recent else []
            for anchor, c in zip(recent, found, strict=True):
                for item, score in zip(c.items.tolist(), c.scores.tolist(), strict=True):
                    if item not in best or score > best[item][0]:
                        best[item] = (score, anchor)
            ranked = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))[:n]
            out.append(
                Candidates(
                    [k for k, _ in ranked], [v[0] for _, v in ranked], [v[1] for _, v in ranked]
                )
            )
        return out


@register_source
class InterestSource(_VectorSource):
    """Several interest centroids from the user's history (weighted k-means on content
    vectors, recent events weighing more), each searched; candidates are merged by score and
    anchored to the history item closest to them.

    Args:
        max_interests: centroids for a long history (one per ``per_interest`` items, at most).
        half_life_events: an event's weight halves every this many newer events.
    """

    kind = "interests"

    def __init__(
        self,
        feature: str = "fused",
        max_interests: int = 3,
        per_interest: int = 8,
        half_life_events: float = 20.0,
        name: str | None = None,
    ) -> None:
        super().__init__(feature, name)
        self.max_interests = max_interests
        self.per_interest = per_interest
        self.half_life_events = half_life_events

    def centroids(self, req: Request) -> tuple[np.ndarray, np.ndarray]:
        """Interest centroids (rows, unit length) and their shares of the user's weight."""
        ok = (req.history >= 0) & (req.history < self.n_items)
        h = req.history[ok]
        w = np.asarray(req.weights, np.float64)[ok]
        keep = self.has_vector[h] & (w > 0)
        h, w = h[keep], w[keep]
        if len(h) == 0:
            return np.zeros((0, self.vectors.shape[1]), np.float32), np.zeros(0)
        age = np.arange(len(h))[::-1]  # 0 for the latest event
        w = w * np.power(0.5, age / self.half_life_events)
        x = self.vectors[h]
        k = int(min(self.max_interests, max(1, len(h) // self.per_interest)))
        if k == 1:
            c = (w[:, None] * x).sum(axis=0, keepdims=True)
            shares = np.ones(1)
        else:
            c, labels = _weighted_kmeans(x, w, k)
            shares = np.bincount(labels, weights=w, minlength=k)
        norms = np.linalg.norm(c, axis=1, keepdims=True)
        return (c / np.maximum(norms, 1e-12)).astype(np.float32), shares / shares.sum()

    def _retrieve(self, requests: list[Request], n: int) -> list[Candidates]:
        out = []
        for req in requests:
            cents, shares = self.centroids(req)
            quotas = [max(1, int(np.ceil(n * share))) for share in shares]
            if not len(cents):
                out.append(Candidates([], []))
                continue
            best: dict[int, float] = {}
            found = self._search_many(cents, req.exclude, max(quotas)) if len(cents) else []
            for quota, c in zip(quotas, found, strict=True):
                for item, score in zip(
                    c.items[:quota].tolist(), c.scores[:quota].tolist(), strict=True
                ):
                    best[item] = max(best.get(item, -np.inf), score)
            ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
            items = np.asarray([k for k, _ in ranked], np.int64)
            hist = np.unique(req.history[(req.history >= 0) & (req.history < self.n_items)])
            hist = hist[self.has_vector[hist]]
            anchors = hist[np.argmax(self.vectors[items] @ self.vectors[hist].T, axis=1)]
            out.append(Candidates(items, [s for _, s in ranked], anchors))
        return out


@register_source
class PeopleSource(Source):
    """Items sharing people (directors, cast, artists, hosts) or tags with what the user liked.

    An item's score sums, over the user's history items it shares something with, the event
    weight times an IDF of each shared person or tag (a rare director says more than the tag
    "music"); the anchor is the history item contributing most.

    Args:
        use: which links count: ``people``, ``tags`` (tags and categories), or both.
        recent: only the latest this many history items are anchors.
    """

    kind = "people"

    def __init__(
        self, use: Sequence[str] = ("people", "tags"), recent: int = 50, name: str | None = None
    ) -> None:
        super().__init__(name)
        bad = set(use) - {"people", "tags"}
        if bad:
            raise ConfigError(f"people source: unknown link kinds {sorted(bad)}")
        self.use = tuple(use)
        self.recent = recent

    def _fit(self, dataset: Dataset) -> None:
        keys: dict[str, int] = {}
        rows, cols = [], []
        people = dataset.item_people if "people" in self.use else [[]] * dataset.n_items
        tags = dataset.item_tags if "tags" in self.use else [[]] * dataset.n_items
        cats = dataset.item_categories if "tags" in self.use else [[]] * dataset.n_items
        for i in range(dataset.n_items):
            links = {f"p:{p['name']}" for p in people[i] if p.get("name")}
            links |= {f"t:{t.lower()}" for t in (*tags[i], *cats[i])}
            for key in links:
                rows.append(i)
                cols.append(keys.setdefault(key, len(keys)))
        self.link_names = list(keys)
        m = sp.csr_matrix(
            (np.ones(len(rows), np.float32), (rows, cols)), shape=(dataset.n_items, len(keys))
        )
        df = np.asarray(m.sum(axis=0)).ravel()
        idf = np.log((1 + dataset.n_items) / (1 + df)).astype(np.float32)
        idf[df <= 1] = 0.0  # a link only one item has leads nowhere
        self._set_links(m.tocsr(), idf)

    def _set_links(self, links: sp.csr_matrix, idf: np.ndarray) -> None:
        self.item_links = links
        self.idf = idf
        self.weighted = (links @ sp.diags(idf)).tocsr()

    def _state(self) -> dict[str, np.ndarray]:
        m = self.item_links
        return {
            "names": np.asarray(self.link_names, dtype=str),
            "indptr": m.indptr,
            "indices": m.indices,
            "shape": np.asarray(m.shape),
            "idf": self.idf,
        }

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.link_names = arrays["names"].tolist()
        shape = tuple(int(x) for x in arrays["shape"])
        data = np.ones(len(arrays["indices"]), np.float32)
        links = sp.csr_matrix((data, arrays["indices"], arrays["indptr"]), shape=shape)
        self._set_links(links, arrays["idf"])

    def shared(self, a: int, b: int) -> list[str]:
        """The people and tags items ``a`` and ``b`` share (for explanations)."""
        la = set(self.item_links[a].indices)
        lb = set(self.item_links[b].indices)
        return sorted(self.link_names[k] for k in la & lb)

    def _retrieve(self, requests: list[Request], n: int) -> list[Candidates]:
        out = []
        for req in requests:
            ok = (req.history >= 0) & (req.history < self.n_items)
            h = req.history[ok][-self.recent :]
            w = np.asarray(req.weights, np.float32)[ok][-self.recent :]
            pos = w > 0
            h, w = h[pos], w[pos]
            if not len(h):
                out.append(Candidates([], []))
                continue
            # contributions: anchors x items
            contrib = (sp.diags(w) @ self.item_links[h] @ self.weighted.T).toarray()
            scores = contrib.sum(axis=0)
            scores[scores <= 0] = -np.inf
            items, s = _top(scores, req.exclude, n)
            anchors = h[np.argmax(contrib[:, items], axis=0)] if len(items) else items
            out.append(Candidates(items, s, anchors))
        return out


class _GlobalSource(Source):
    """Sources whose list is the same for everyone (minus what each request excludes)."""

    scores: np.ndarray

    def _retrieve(self, requests: list[Request], n: int) -> list[Candidates]:
        return [Candidates(*_top(self.scores, req.exclude, n)) for req in requests]

    def _state(self) -> dict[str, np.ndarray]:
        return {"scores": self.scores}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.scores = arrays["scores"]


@register_source
class PopularSource(_GlobalSource):
    """Most played items (distinct users): the fallback that answers anyone."""

    kind = "popular"

    def _fit(self, dataset: Dataset) -> None:
        counts = np.asarray((dataset.seen > 0).sum(axis=0)).ravel().astype(np.float32)
        self.scores = np.where(counts > 0, counts, -np.inf).astype(np.float32)


@register_source
class TrendingSource(_GlobalSource):
    """Time-decayed play counts: an event's weight halves every ``half_life_days`` before the
    newest event."""

    kind = "trending"

    def __init__(self, half_life_days: float = 7.0, name: str | None = None) -> None:
        super().__init__(name)
        if half_life_days <= 0:
            raise ConfigError("half_life_days must be positive")
        self.half_life_days = half_life_days

    def _fit(self, dataset: Dataset) -> None:
        if dataset.n_events == 0:
            self.scores = np.full(dataset.n_items, -np.inf, np.float32)
            return
        age = (dataset.ts.max() - dataset.ts) / 86400.0
        w = np.power(0.5, age / self.half_life_days)
        s = np.bincount(dataset.item_index, weights=w, minlength=dataset.n_items)
        self.scores = np.where(s > 0, s, -np.inf).astype(np.float32)


@register_source
class FreshSource(_GlobalSource):
    """New items with little history yet: catalogue items created within ``max_age_days`` of
    the newest event (or, without creation times, items first played that recently) that fewer
    than ``max_users`` people have played, newest first."""

    kind = "fresh"

    def __init__(
        self, max_age_days: float = 30.0, max_users: int = 20, name: str | None = None
    ) -> None:
        super().__init__(name)
        self.max_age_days = max_age_days
        self.max_users = max_users

    def _fit(self, dataset: Dataset) -> None:
        n = dataset.n_items
        users = np.asarray((dataset.seen > 0).sum(axis=0)).ravel()
        now = float(dataset.ts.max()) if dataset.n_events else 0.0
        created = np.full(n, np.nan)
        if "created_at" in dataset.catalogue.columns:
            vals = dataset.catalogue["created_at"].to_numpy()
            created[: len(vals)] = np.asarray(vals, dtype=np.float64)
        first = np.full(n, np.inf)
        if dataset.n_events:
            np.minimum.at(first, dataset.item_index, dataset.ts)
        born = np.where(np.isfinite(created), created, first)
        fresh = (born >= now - self.max_age_days * 86400.0) & (users < self.max_users)
        fresh &= np.isfinite(born)
        self.scores = np.where(fresh, born - now, -np.inf).astype(np.float32)


def _weighted_kmeans(
    x: np.ndarray, w: np.ndarray, k: int, iterations: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means with sample weights (deterministic k-means++ seeding by weight):
    centroids and labels. A user's history is small, so this runs in well under a millisecond,
    where scikit-learn's KMeans costs tens of milliseconds per request."""
    first = int(np.argmax(w))
    centres = [x[first]]
    for _ in range(1, k):
        d = 1.0 - np.max(x @ np.stack(centres).T, axis=1)
        centres.append(x[int(np.argmax(d * w))])
    c = np.stack(centres)
    labels = np.zeros(len(x), np.int64)
    for _ in range(iterations):
        new = np.argmax(x @ c.T, axis=1)
        if _ and np.array_equal(new, labels):
            break
        labels = new
        for j in range(k):
            m = labels == j
            if m.any():
                v = (w[m, None] * x[m]).sum(axis=0)
                c[j] = v / max(np.linalg.norm(v), 1e-12)
    return c, labels
