"""Candidate sources: each proposes items for a user, with scores and, where it can, the anchor
(the item in the user's history that led to the proposal), so that the pipeline can merge them
with provenance, rank them and explain them.

Every source has the same contract: ``fit(dataset)`` on training data, then
``retrieve(requests, n)`` gives up to ``n`` :class:`Candidates` per :class:`Request`, never an
item in ``request.exclude`` (the user's history and anything the caller excludes). Sources:

- ``model``: any recommender of the registry (collaborative, sequential, content), its top-n.
- ``factors``: ALS user factors folded in from the history, searched among the item factors
  (FAISS), for catalogues too large to score whole.
- ``neighbours``: items closest (content vectors, FAISS) to the user's most recent items.
- ``interests``: content vectors of the user's history clustered into a few interest centroids,
  recency- and event-weighted, each retrieved from (FAISS), so a person with two tastes gets both.
- ``people``: items sharing people (directors, cast, artists) or tags with what the user played.
- ``trending``: time-decayed popularity. ``fresh``: new items with little history yet.
- ``popular``: the fallback; answers anyone, including a person with no history at all.
"""

from __future__ import annotations

import abc
from collections import OrderedDict
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
        time: when the request is made (Unix seconds): time-aware parts look only at what
            happened before it. Default: the last history event's time if ``times`` is given,
            else ``None`` (the newest event the pipeline was trained on: "now").
        allowed: boolean mask over the items a filter lets through (``None``: all); sources
            apply it where they search, so it never shortens their lists while items pass.
    """

    user: int
    history: np.ndarray
    weights: np.ndarray | None = None
    times: np.ndarray | None = None
    exclude: np.ndarray | None = None
    time: float | None = None
    allowed: np.ndarray | None = None
    #: what sources work out from the request once and share (see :func:`_history_row`)
    memo: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.history = np.asarray(self.history, dtype=np.int64)
        if self.time is None and self.times is not None and len(self.times):
            self.time = float(np.max(self.times))
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
    #: what it learns depends on the events (False: on the catalogue alone, so a pipeline
    #: need not refit it when it refits its sources on more events)
    uses_events: ClassVar[bool] = True

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
        extra = self.save_extra(path)  # files beside it first: state.npz names them
        np.savez(buf, __n_items=np.asarray(self.n_items), **self._state(), **extra)
        atomic_write_bytes(path / "state.npz", buf.getvalue())

    def load(self, path: Path) -> Self:
        """Restore a fitted source saved by :meth:`save` (constructed with the same params)."""
        with np.load(path / "state.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        self.n_items = int(arrays.pop("__n_items"))
        self._folder = path  # files beside state.npz (a memory-mapped index)
        self._set_state(arrays)
        self._fitted = True
        return self

    def _state(self) -> dict[str, np.ndarray]:
        return {}

    def save_extra(self, path: Path) -> dict[str, np.ndarray]:
        """Write files beside state.npz (an index); returns arrays state.npz records of them."""
        return {}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:  # noqa: B027 - optional hook
        pass


#: an approximate index's file in a source's folder (inverted lists are memory-mapped from it)
INDEX_FILE = "index.faiss"


def _save_index(index: Any, path: Path) -> dict[str, np.ndarray]:
    """Write an approximate index beside state.npz (a graph or inverted file takes minutes
    to build for a large catalogue: kept, not rebuilt); what state.npz records of it."""
    if index is None or index.built_kind == "exact":
        return {}
    index.save(path / INDEX_FILE)
    return {"index_kind": np.asarray(index.built_kind)}


def _kept_index(arrays: dict[str, np.ndarray], folder: Path | None, params: dict) -> Any:
    """The index a bundle kept (``index.faiss``, or ``index_bytes`` from bundles before it);
    None: none was kept, build it."""
    from avrec.retrieval import VectorIndex

    params = {k: v for k, v in params.items() if k != "kind"}
    kind = str(arrays["index_kind"]) if "index_kind" in arrays else ""
    if "index_bytes" in arrays:
        return VectorIndex.from_bytes(arrays["index_bytes"].tobytes(), kind, **params)
    if kind and folder is not None and (folder / INDEX_FILE).exists():
        return VectorIndex.open(folder / INDEX_FILE, kind, **params)
    return None


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


def _top(
    scores: np.ndarray, exclude: np.ndarray, n: int, allowed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` best finite scores of one row, excluded and disallowed items left out, ties
    by index."""
    s = scores.astype(np.float32, copy=True)
    if allowed is not None:
        s[~allowed[: len(s)]] = -np.inf
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


def _ranked(scores: np.ndarray) -> np.ndarray:
    """Indices of the finite scores, best first, ties by index (for lists shared by all)."""
    ok = np.flatnonzero(np.isfinite(scores))
    return ok[np.lexsort((ok, -scores[ok]))].astype(np.int64)


def _top_ranked(
    order: np.ndarray,
    scores: np.ndarray,
    exclude: np.ndarray,
    n: int,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_top` for a precomputed order: at most ``len(exclude)`` of the first
    ``n + len(exclude)`` are excluded, so without a filter that prefix is all it reads (O(n),
    not O(items)); with one it reads growing prefixes until ``n`` pass."""
    want = n + len(exclude)
    start, found = 0, []
    got = 0
    while start < len(order):
        stop = min(len(order), start + (want if allowed is None else 4 * want))
        head = order[start:stop]
        if allowed is not None:
            head = head[allowed[head]]
        if len(exclude):
            head = head[~np.isin(head, exclude)]
        found.append(head)
        got += len(head)
        if got >= n or allowed is None:
            break
        start, want = stop, 2 * want
    top = np.concatenate(found)[:n] if found else np.zeros(0, np.int64)
    return top, scores[top]


def _history_row(req: Request, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """The request's history as one sparse row: item indices (sorted, each once) and their
    summed weights; kept on the request, as every model source asks for it."""
    key = ("history_row", n_items)
    if key not in req.memo:
        ok = (req.history >= 0) & (req.history < n_items)
        h = req.history[ok]
        w = np.asarray(req.weights, np.float32)[: len(req.history)][ok]
        cols, inv = np.unique(h, return_inverse=True)
        req.memo[key] = (cols, np.bincount(inv, weights=w, minlength=len(cols)).astype(np.float32))
    return req.memo[key]


def _history_matrix(requests: list[Request], n_items: int) -> sp.csr_matrix:
    rows = [_history_row(req, n_items) for req in requests]
    indptr = np.zeros(len(rows) + 1, np.int64)
    indptr[1:] = np.cumsum([len(c) for c, _ in rows])
    if not rows:
        return sp.csr_matrix((0, n_items), dtype=np.float32)
    return sp.csr_matrix(
        (np.concatenate([v for _, v in rows]), np.concatenate([c for c, _ in rows]), indptr),
        shape=(len(requests), n_items),
    )


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


@register_source
class PeopleSource(Source):
    """Items sharing people (directors, cast, artists, hosts, and people named in the item's
    text), a series, or tags with what the user liked: the knowledge graph's links.

    An item's score sums, over the user's history items it shares something with, the event
    weight times an IDF of each shared person or tag (a rare director says more than the tag
    "music"); the anchor is the history item contributing most.

    Args:
        use: which links count: ``people``, ``tags`` (tags and categories), or both.
        recent: only the latest this many history items are anchors.
        max_link_items: a person or tag on more items than this is ignored (it says little,
            and would make every request touch all of those items).
    """

    kind = "people"
    uses_events = False  # links come from the catalogue

    def __init__(
        self,
        use: Sequence[str] = ("people", "tags"),
        recent: int = 50,
        max_link_items: int = 50_000,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        bad = set(use) - {"people", "tags"}
        if bad:
            raise ConfigError(f"people source: unknown link kinds {sorted(bad)}")
        self.use = tuple(use)
        self.recent = recent
        self.max_link_items = max_link_items

    def _fit(self, dataset: Dataset) -> None:
        keys: dict[str, int] = {}
        rows, cols = [], []
        people = dataset.item_people if "people" in self.use else [[]] * dataset.n_items
        tags = dataset.item_tags if "tags" in self.use else [[]] * dataset.n_items
        cats = dataset.item_categories if "tags" in self.use else [[]] * dataset.n_items
        # the knowledge graph's other links: people the analysis found named in an item's
        # text (not credited) and the series it belongs to
        from avrec.language.graph import _series

        texts = getattr(dataset, "item_texts", {}) or {}
        ids = dataset.items.lookup(np.arange(dataset.n_items)) if texts else []
        series = _series(dataset) if "people" in self.use else [""] * dataset.n_items
        for i in range(dataset.n_items):
            links = {f"p:{p['name']}" for p in people[i] if p.get("name")}
            if texts and "people" in self.use:
                named = (texts.get(str(ids[i])) or {}).get("mentions", "")
                links |= {f"p:{m}" for m in named.split("\n") if m}
            if series[i]:
                links.add(f"s:{series[i]}")
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
        # a tag half a million items share says little and costs a pass over all of them
        idf[df > self.max_link_items] = 0.0
        self._set_links(m.tocsr(), idf)

    def _set_links(self, links: sp.csr_matrix, idf: np.ndarray) -> None:
        self.item_links = links
        self.idf = idf
        self.weighted = (links @ sp.diags(idf)).tocsr()
        self.weighted.eliminate_zeros()  # links that lead nowhere cost nothing per request
        self.by_link = self.weighted.T.tocsr()  # links x items: a request reads its links' rows

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
            # each item's score: the history's weighted links, summed through the items'
            # idf-weighted links (one sparse product over the links the history has)
            via = self.item_links[h].T @ w.astype(np.float64)
            linked = np.flatnonzero(via)
            scores = self.by_link[linked].T @ via[linked]
            touched = np.flatnonzero(scores > 0)
            scores = scores[touched]
            keep = ~np.isin(touched, req.exclude)
            if req.allowed is not None:
                keep &= req.allowed[touched]
            touched, scores = touched[keep], scores[keep]
            if not len(touched):
                out.append(Candidates([], []))
                continue
            m = min(n, len(touched))
            part = np.argpartition(-scores, m - 1)[:m] if m < len(touched) else np.arange(m)
            part = part[np.lexsort((touched[part], -scores[part]))]
            items = touched[part]
            # the anchor of each chosen item: the history row contributing most to it (the
            # first such row on a tie)
            contrib = (self.item_links[h] @ self.weighted[items].T).toarray() * w[:, None]
            anchors = h[np.argmax(contrib, axis=0)].astype(np.int64)
            out.append(Candidates(items, scores[part].astype(np.float32), anchors))
        return out


class _GlobalSource(Source):
    """Sources whose list is the same for everyone (minus what each request excludes)."""

    scores: np.ndarray

    def fit(self, dataset: Dataset) -> Self:
        super().fit(dataset)
        self.order = _ranked(self.scores)
        return self

    def _retrieve(self, requests: list[Request], n: int) -> list[Candidates]:
        return [
            Candidates(*_top_ranked(self.order, self.scores, req.exclude, n, req.allowed))
            for req in requests
        ]

    def _state(self) -> dict[str, np.ndarray]:
        return {"scores": self.scores}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.scores = arrays["scores"]
        self.order = _ranked(self.scores)


@register_source
class PopularSource(_GlobalSource):
    """Most played items (distinct users): the fallback that answers anyone."""

    kind = "popular"

    def _fit(self, dataset: Dataset) -> None:
        counts = np.asarray((dataset.seen > 0).sum(axis=0)).ravel().astype(np.float32)
        self.scores = np.where(counts > 0, counts, -np.inf).astype(np.float32)


@register_source
class TrendingSource(Source):
    """Time-decayed play counts at the request's time: an event's weight halves every
    ``half_life_days`` before the request, and events after it do not count (a request made
    on day ``t`` sees what was trending on day ``t``; a request with no time sees the newest
    data)."""

    kind = "trending"

    def __init__(self, half_life_days: float = 7.0, name: str | None = None) -> None:
        super().__init__(name)
        if half_life_days <= 0:
            raise ConfigError("half_life_days must be positive")
        self.half_life_days = half_life_days

    def _fit(self, dataset: Dataset) -> None:
        from avrec.pipeline.temporal import ItemTimeline

        self._timeline_shared = False
        self._set_timeline(ItemTimeline().fit(dataset))

    def _set_timeline(self, timeline: Any) -> None:
        self.timeline = timeline
        self._now: tuple[np.ndarray, np.ndarray] | None = None
        self._past: OrderedDict[int, tuple[np.ndarray, np.ndarray, bool]] = OrderedDict()

    def use_timeline(self, timeline: Any) -> None:
        """Read ``timeline`` (the pipeline's, of the same events) instead of an own copy: a
        bundle then keeps one timeline for every part that needs one."""
        _check_same_timeline(getattr(self, "timeline", None), timeline, self.name)
        self._timeline_shared = True
        self._set_timeline(timeline)

    def scores_at(self, t: float | None) -> np.ndarray:
        """Every item's score at ``t`` (``-inf``: not played in the window). An explicit ``t``
        is rounded down to the hour (cached per hour, and never a later event); ``None`` is
        the newest event exactly."""
        if t is not None:
            t = self.timeline.t0 + self.timeline.hour(t)
        s = self.timeline.decayed(t, self.half_life_days)
        return np.where(s > 0, s, -np.inf).astype(np.float32)

    #: items kept per past hour (a request needing more, after its exclusions and filter,
    #: recomputes the whole list), and how many hours are kept
    SHORT_LIST = 1000
    HOURS_KEPT = 4096

    def _short_list(self, t: float) -> tuple[np.ndarray, np.ndarray, bool]:
        """The best ``SHORT_LIST`` items at ``t``'s hour, best first, and whether that is
        every item played in the window. A million-item catalogue costs one pass over the
        items per distinct hour, not per request."""
        key = self.timeline.hour(t)
        hit = self._past.get(key)
        if hit is not None:
            self._past.move_to_end(key)  # least recently used goes first
        else:
            scores = self.scores_at(t)
            finite = np.flatnonzero(np.isfinite(scores))
            m = min(self.SHORT_LIST, len(finite))
            if m < len(finite):
                finite = finite[np.argpartition(-scores[finite], m - 1)[:m]]
            top = finite[np.lexsort((finite, -scores[finite]))]
            hit = (top.astype(np.int64), scores[top], m == int(np.isfinite(scores).sum()))
            self._past[key] = hit
            if len(self._past) > self.HOURS_KEPT:
                self._past.popitem(last=False)
        return hit

    def _retrieve(self, requests: list[Request], n: int) -> list[Candidates]:
        _need_timeline(self)
        out = []
        for req in requests:
            if req.time is None:  # serving "now": one ordered list for every request
                if self._now is None:
                    scores = self.scores_at(None)
                    self._now = (scores, _ranked(scores))
                scores, order = self._now
                out.append(Candidates(*_top_ranked(order, scores, req.exclude, n, req.allowed)))
                continue
            # a request in the past (evaluation, ranker training)
            items, scores, complete = self._short_list(req.time)
            keep = ~np.isin(items, req.exclude)
            if req.allowed is not None:
                keep &= req.allowed[items]
            if keep.sum() >= n or complete:
                out.append(Candidates(items[keep][:n], scores[keep][:n]))
            else:
                out.append(Candidates(*_top(self.scores_at(req.time), req.exclude, n, req.allowed)))
        return out

    def _state(self) -> dict[str, np.ndarray]:
        return _timeline_state(self)

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._timeline_shared = "timeline_shared" in arrays
        self._set_timeline(_timeline_from(arrays))


@register_source
class FreshSource(Source):
    """New items with little history yet, newest first: catalogue items created within
    ``max_age_days`` before the request (or, without creation times, first played that
    recently) that fewer than ``max_users`` events have reached by then. At a past request
    time nothing later counts: an item created afterwards is not proposed."""

    kind = "fresh"

    def __init__(
        self, max_age_days: float = 30.0, max_users: int = 20, name: str | None = None
    ) -> None:
        super().__init__(name)
        self.max_age_days = max_age_days
        self.max_users = max_users

    def _fit(self, dataset: Dataset) -> None:
        from avrec.pipeline.temporal import ItemTimeline

        n = dataset.n_items
        created = np.full(n, np.nan)
        if "created_at" in dataset.catalogue.columns:
            vals = dataset.catalogue["created_at"].to_numpy()
            created[: len(vals)] = np.asarray(vals, dtype=np.float64)
        first = np.full(n, np.inf)
        if dataset.n_events:
            np.minimum.at(first, dataset.item_index, dataset.ts)
        self._timeline_shared = False
        self._set(np.where(np.isfinite(created), created, first), ItemTimeline().fit(dataset))

    def use_timeline(self, timeline: Any) -> None:
        """Read the pipeline's ``timeline`` (the same events) instead of an own copy."""
        _check_same_timeline(getattr(self, "timeline", None), timeline, self.name)
        self._timeline_shared = True
        self.timeline = timeline

    def _set(self, born: np.ndarray, timeline: Any) -> None:
        self.born = born
        self.timeline = timeline
        ok = np.flatnonzero(np.isfinite(born))
        self.by_birth = ok[np.lexsort((ok, -born[ok]))]  # newest first, ties by index
        self.neg_birth = -born[self.by_birth]  # ascending, for binary searches

    def _window(self, t: float | None) -> tuple[int, int, float]:
        """The slice of items (newest first) born in ``[t - max_age, t]``, and ``t``."""
        now = self.timeline.now if t is None else t
        lo = np.searchsorted(self.neg_birth, -now, side="left")
        hi = np.searchsorted(self.neg_birth, -(now - self.max_age_days * 86400.0), "right")
        return int(lo), int(hi), now

    def _pick(
        self, t: float | None, n: int, exclude: np.ndarray, allowed: np.ndarray | None
    ) -> Candidates:
        """The ``n`` newest fresh items at ``t``, read newest first in growing chunks (a
        million-item catalogue has hundreds of thousands born within a month)."""
        lo, hi, now = self._window(t)
        found: list[np.ndarray] = []
        got, step, start = 0, 4 * (n + len(exclude)), lo
        while start < hi and got < n:
            items = self.by_birth[start : min(hi, start + step)]
            start += len(items)
            step *= 2
            items = items[self.timeline.counts(items, t, None) < self.max_users]
            items = items[~np.isin(items, exclude)]
            if allowed is not None:
                items = items[allowed[items]]
            found.append(items)
            got += len(items)
        top = np.concatenate(found)[:n] if found else np.zeros(0, np.int64)
        return Candidates(top, (self.born[top] - now).astype(np.float32))

    def _retrieve(self, requests: list[Request], n: int) -> list[Candidates]:
        _need_timeline(self)
        return [self._pick(req.time, n, req.exclude, req.allowed) for req in requests]

    def _state(self) -> dict[str, np.ndarray]:
        return {"born": self.born, **_timeline_state(self)}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._timeline_shared = "timeline_shared" in arrays
        self._set(arrays["born"], _timeline_from(arrays))


def _timeline_state(src: Any) -> dict[str, np.ndarray]:
    """A source's timeline for its bundle: a marker when it reads the pipeline's."""
    if getattr(src, "_timeline_shared", False):
        return {"timeline_shared": np.asarray(True)}
    return {f"tl_{k}": v for k, v in src.timeline.state().items()}


def _timeline_from(arrays: dict[str, np.ndarray]) -> Any:
    """The timeline a bundle kept (``None`` when it is the pipeline's, handed over on load)."""
    from avrec.pipeline.temporal import ItemTimeline

    if "timeline_shared" in arrays:
        return None
    return ItemTimeline().set_state({k[3:]: v for k, v in arrays.items() if k.startswith("tl_")})


def _check_same_timeline(mine: Any, theirs: Any, name: str) -> None:
    if mine is not None and (
        mine.n_items != theirs.n_items
        or len(mine.keys) != len(theirs.keys)
        or mine.now != theirs.now
    ):
        raise ConfigError(f"source {name!r} was fitted on other events than the timeline given")


def _need_timeline(src: Any) -> None:
    if src.timeline is None:
        raise NotFittedError(
            f"source {src.name!r} reads the pipeline's timeline: load it with its pipeline"
        )


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


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
