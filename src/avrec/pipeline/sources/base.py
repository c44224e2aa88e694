"""The contract every candidate source keeps (:class:`Source`: ``fit``, then ``retrieve`` gives
:class:`Candidates` per :class:`Request`), the registry of sources (``SOURCES``,
:func:`register_source`, :func:`create_source`), and the helpers sources share: top-n selection
(:func:`_top`, :func:`_top_ranked`), the history as a sparse row (:func:`_history_row`,
:func:`_history_matrix`) and approximate indexes kept beside a bundle (:func:`_save_index`,
:func:`_kept_index`).
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
