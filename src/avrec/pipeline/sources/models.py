"""Sources from recommenders: ``model`` (any recommender of the registry, its top-n) and
``factors`` (ALS user factors folded in from the history, searched among the item factors).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

import numpy as np
import scipy.sparse as sp

from avrec.data.dataset import Dataset
from avrec.pipeline.sources.base import (
    Candidates,
    Request,
    Source,
    _history_matrix,
    _kept_index,
    _save_index,
    _top,
    register_source,
)

__all__ = ["FactorSource", "ModelSource"]


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
        batch = UserBatch(users, hist, seqs)
        sparse = getattr(self.model, "_sparse_scores", None)
        got = sparse(batch) if sparse is not None else None
        if got is not None:  # the few items with a score, not the whole catalogue
            return self._retrieve_sparse(requests, n, *got)
        scores = np.asarray(self.model._score_batch(batch), np.float32)
        out = []
        for i, req in enumerate(requests):
            row = scores[i]
            finite = row[np.isfinite(row)]
            if not len(finite) or finite.max() == finite.min():
                out.append(Candidates([], []))  # no signal (e.g. no history): nothing to say
                continue
            out.append(Candidates(*_top(row, req.exclude, n, req.allowed)))
        return out

    def _retrieve_sparse(
        self,
        requests: list[Request],
        n: int,
        scores: sp.csr_matrix,
        base: np.ndarray | None,
        vote: np.ndarray | None,
    ) -> list[Candidates]:
        """The candidates the dense row ``scores + vote * base`` gives, from its few scored
        items plus the best of the rest (``base`` order, or index order when they all tie at
        zero): the same items and scores, ties broken the same way."""
        flat = base is None or float(base.min()) == float(base.max())
        if base is not None and getattr(self, "_base_for", None) is not base:
            self._base_for = base  # the order of the unscored items, once per model
            self._base_order = np.argsort(-base, kind="stable").astype(np.int64)
        out = []
        for r, req in enumerate(requests):
            lo, hi = scores.indptr[r], scores.indptr[r + 1]
            cols = scores.indices[lo:hi].astype(np.int64)
            vals = scores.data[lo:hi].astype(np.float32)
            w = np.float32(vote[r]) if vote is not None else np.float32(0.0)
            if not np.any(vals != 0) and (w == 0 or flat):
                out.append(Candidates([], []))  # no signal: every item scores the same
                continue
            weighted = base is not None and w != 0
            if weighted:
                vals = vals + w * base[cols]
            order = self._base_order if weighted else None
            fill = _unscored(order, self.n_items, cols, req.exclude, req.allowed, n)
            fill_vals = w * base[fill] if weighted else np.zeros(len(fill), np.float32)
            out.append(Candidates(*_top_of(
                np.concatenate([cols, fill]), np.concatenate([vals, fill_vals]),
                req.exclude, n, req.allowed,
            )))  # fmt: skip
        return out


def _unscored(
    order: np.ndarray | None,
    n_items: int,
    scored: np.ndarray,
    exclude: np.ndarray,
    allowed: np.ndarray | None,
    n: int,
) -> np.ndarray:
    """Up to ``n`` items without a sparse score, best first by ``order`` (None: by index),
    excluded, disallowed and scored items passed over."""
    skip = np.concatenate([scored, exclude[(exclude >= 0) & (exclude < n_items)]])
    found: list[np.ndarray] = []
    got, start, step = 0, 0, max(64, 2 * (n + len(skip)))
    while got < n and start < n_items:
        part = (
            order[start : start + step]
            if order is not None
            else np.arange(start, min(n_items, start + step), dtype=np.int64)
        )
        keep = part[~np.isin(part, skip)]
        if allowed is not None:
            keep = keep[allowed[keep]]
        found.append(keep[: n - got])
        got += len(found[-1])
        start += step
        step *= 2
    return np.concatenate(found) if found else np.zeros(0, np.int64)


def _top_of(
    cols: np.ndarray,
    vals: np.ndarray,
    exclude: np.ndarray,
    n: int,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_top` over the items ``cols`` with scores ``vals`` (the rest of the row left
    out): the ``n`` best finite scores, excluded and disallowed items left out, ties by
    index."""
    ok = np.isfinite(vals)
    if allowed is not None:
        ok &= allowed[cols]
    if len(exclude):
        ok &= ~np.isin(cols, exclude)
    cols, vals = cols[ok], vals[ok]
    order = np.lexsort((cols, -vals))[:n]
    return cols[order].astype(np.int64), vals[order].astype(np.float32)


@register_source
class FactorSource(Source):
    """Collaborative retrieval by vector search: ALS user factors, solved from the request's
    history (the same closed-form step ALS trains with, so new events count at once), searched
    among the item factors with FAISS (exact for small catalogues, HNSW for large ones), so a
    request never scores the whole catalogue. Each candidate's anchor is the history item whose
    factors are most similar to it.

    Args:
        model: params of the ALS model (``factors``, ``regularization``, ``alpha`` ...).
        index: :class:`~avrec.retrieval.VectorIndex` params (``kind``, ``ef_search`` ...).
    """

    kind = "factors"

    def __init__(
        self,
        model: dict[str, Any] | None = None,
        index: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        from avrec.models import create_model

        super().__init__(name)
        self.model = create_model("als", **(model or {}))
        # inner product over unnormalised factors is harder for HNSW than cosine: search
        # wider by default (recall@10 0.74 at ef 128 on a million items), and exactly up to
        # 200k items (at 100k items with two events each, HNSW found 0.47 of the exact top
        # 10; one exact query there is about a millisecond)
        self.index_params = {"ef_search": 512, "exact_max": 200_000, **(index or {})}

    def _fit(self, dataset: Dataset) -> None:
        self.model.fit(dataset)
        self._prepare()

    def _prepare(self, kept: Any = None) -> None:
        from avrec.retrieval import VectorIndex

        y = np.ascontiguousarray(self.model.item_factors, dtype=np.float32)
        self.y = y
        # the Gram matrix in float32 (what ALS trains in): a float64 copy of a million
        # items' factors took seconds at load
        gram = (y.T @ y).astype(np.float64)
        self.yty = gram + self.model.config.regularization * np.eye(y.shape[1])
        self.index = kept if kept is not None else VectorIndex(**self.index_params).build(y)

    def save(self, path: Path) -> None:
        super().save(path)
        self.model.save(path / "model")

    def save_extra(self, path: Path) -> dict[str, np.ndarray]:
        return _save_index(self.index, path)

    def load(self, path: Path) -> Self:
        from avrec.models import load_model

        self.model = load_model(path / "model")
        return super().load(path)

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._prepare(_kept_index(arrays, getattr(self, "_folder", None), self.index_params))

    def user_vectors(self, requests: list[Request]) -> np.ndarray:
        """ALS fold-in of each request's history: ``(Y^T Y + Y_h^T (C - I) Y_h + lambda I) x =
        Y_h^T C 1`` with ``C = alpha * weight`` on the history items (zeros: no history)."""
        c = self.model.config
        d = self.y.shape[1]
        out = np.zeros((len(requests), d), np.float32)
        for r, req in enumerate(requests):
            ok = (req.history >= 0) & (req.history < self.n_items)
            if not ok.any():
                continue
            w = np.asarray(req.weights, np.float64)[: len(req.history)][ok]
            h, inv = np.unique(req.history[ok], return_inverse=True)
            w = np.ones(len(h)) if c.binary else np.bincount(inv, weights=w, minlength=len(h))
            yh = self.y[h].astype(np.float64)
            conf = c.alpha * w
            a = self.yty + (yh.T * (conf - 1.0)) @ yh
            out[r] = np.linalg.solve(a, yh.T @ conf)
        return out

    def _retrieve(self, requests: list[Request], n: int) -> list[Candidates]:
        u = self.user_vectors(requests)
        has = np.linalg.norm(u, axis=1) > 0
        out = [Candidates([], []) for _ in requests]
        rows = np.flatnonzero(has)
        if not len(rows):
            return out
        excl = [requests[r].exclude[(requests[r].exclude >= 0)] for r in rows]
        plain = [j for j, r in enumerate(rows) if requests[r].allowed is None]
        found: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        if plain:  # one batched search for the requests without a filter
            res = self.index.search(u[rows[plain]], n, exclude=[excl[j] for j in plain])
            pairs = zip(res.indices, res.scores, strict=True)
            found.update(zip(rows[plain].tolist(), pairs, strict=True))
        for j, r in enumerate(rows):
            if requests[r].allowed is not None:
                res = self.index.search(u[r], n, allowed=requests[r].allowed, exclude=[excl[j]])
                found[int(r)] = (res.indices[0], res.scores[0])
        for r in rows:
            idx, sc = found[int(r)]
            keep = idx >= 0
            items = idx[keep]
            h = np.unique(requests[r].history[(requests[r].history >= 0)])
            anchors = (
                h[np.argmax(_unit_rows(self.y[items]) @ _unit_rows(self.y[h]).T, axis=1)]
                if len(items) and len(h)
                else np.full(len(items), -1)
            )
            out[r] = Candidates(items, sc[keep], anchors)
        return out


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
