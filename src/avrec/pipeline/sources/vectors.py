"""Sources that search content vectors: ``neighbours`` (items closest to the user's most
recent items) and ``interests`` (the history clustered into a few interest centroids, each
searched).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from avrec.data.dataset import Dataset
from avrec.errors import ConfigError
from avrec.pipeline.sources.base import (
    Candidates,
    Request,
    Source,
    _kept_index,
    _save_index,
    register_source,
)

__all__ = ["InterestSource", "NeighbourSource"]


class _VectorSource(Source):
    """Shared parts of sources that search content vectors.

    Args:
        feature: the dataset's item vectors to search.
        index: :class:`~avrec.retrieval.VectorIndex` params (``kind``, ``ef_search`` ...).
    """

    uses_events = False  # the index depends on the item vectors only

    def __init__(
        self, feature: str = "fused", name: str | None = None, index: dict[str, Any] | None = None
    ) -> None:
        super().__init__(name)
        self.feature = feature
        self.index_params = dict(index or {})

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

    def share_index(self, other: Source) -> bool:
        """Use ``other``'s index when it searches the same vectors the same way (two sources
        over one feature build one index); False when it cannot."""
        if not (
            isinstance(other, _VectorSource)
            and other._fitted
            and other.feature == self.feature
            and other.index_params == self.index_params
        ):
            return False
        for attr in ("vectors", "has_vector", "rows", "row_of", "index", "n_items"):
            setattr(self, attr, getattr(other, attr))
        self._fitted = True
        self.shares_with = other.name  # its bundle keeps no second copy
        return True

    def _index_vectors(self, x: np.ndarray, kept: Any = None) -> None:
        from avrec.retrieval import VectorIndex

        self.vectors = x
        self.has_vector = np.linalg.norm(x, axis=1) > 0
        # only items with a vector are indexed (row -> item), so searches need no mask
        self.rows = np.flatnonzero(self.has_vector)
        self.row_of = np.full(len(x), -1, np.int64)
        self.row_of[self.rows] = np.arange(len(self.rows))
        if kept is not None:
            self.index = kept
        elif len(self.rows):
            self.index = VectorIndex(**self.index_params).build(x[self.rows])
        else:
            self.index = None

    def _state(self) -> dict[str, np.ndarray]:
        if getattr(self, "shares_with", None):
            return {"shares_with": np.asarray(self.shares_with)}
        return {"vectors": self.vectors}

    def save_extra(self, path: Path) -> dict[str, np.ndarray]:
        if getattr(self, "shares_with", None):
            return {}
        return _save_index(self.index, path)

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        if "shares_with" in arrays:  # Pipeline.load hands it the other source's index
            self.shares_with = str(arrays["shares_with"])
            self.index = None
            return
        kept = _kept_index(arrays, getattr(self, "_folder", None), self.index_params)
        self._index_vectors(arrays["vectors"], kept)

    def _search_many(
        self,
        queries: np.ndarray,
        exclude: np.ndarray,
        n: int,
        allowed: np.ndarray | None = None,
    ) -> list[Candidates]:
        """The ``n`` nearest items to each query (one batched FAISS call), none excluded,
        only ``allowed`` ones."""
        if self.index is None or not len(queries):
            return [Candidates([], []) for _ in range(len(queries))]
        ex = self.row_of[exclude[(exclude >= 0) & (exclude < len(self.row_of))]]
        ex = ex[ex >= 0]
        rows_ok = allowed[self.rows] if allowed is not None else None
        res = self.index.search(queries, n, allowed=rows_ok, exclude=[ex] * len(queries))
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

    def __init__(
        self,
        feature: str = "fused",
        recent: int = 5,
        name: str | None = None,
        index: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(feature, name, index)
        self.recent = recent

    def _retrieve(self, requests: list[Request], n: int) -> list[Candidates]:
        out = []
        for req in requests:
            recent = [i for i in req.history[::-1] if 0 <= i < self.n_items and self.has_vector[i]]
            recent = list(dict.fromkeys(recent))[: self.recent]
            best: dict[int, tuple[float, int]] = {}
            per = max(n, 2 * n // max(1, len(recent)))
            found = (
                self._search_many(self.vectors[recent], req.exclude, per, req.allowed)
                if recent
                else []
            )
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
        index: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(feature, name, index)
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
            found = self._search_many(cents, req.exclude, max(quotas), req.allowed)
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
