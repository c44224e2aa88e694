"""Vector retrieval with FAISS: exact for small catalogues, HNSW or IVF for large ones.

:class:`VectorIndex` holds item vectors (rows aligned with a Dataset's item vocabulary) and
answers inner-product top-K queries. The kind is chosen by catalogue size (``"auto"``): an exact
flat index up to ``exact_max`` items (brute force over 50k x 64 floats is about 0.3 ms a
query on one core; at 100k it is 1.2 ms, and a request asks about ten), HNSW above. IVF is
available for memory-bound deployments. :meth:`VectorIndex.recall` measures an approximate
index against exact search on the same queries, so the choice is checked, not assumed.

Filters never cost K: an ``allowed`` mask (category, language, duration, availability) and
per-query ``exclude`` sets (seen items, items already shown in this session) are applied inside
FAISS through an ``IDSelectorBitmap`` for single queries, so the K results returned all pass
(as long as K items pass at all); batches over-fetch and refill.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from avrec.errors import ConfigError, DataError

__all__ = ["SearchResult", "VectorIndex"]

Kind = Literal["auto", "exact", "hnsw", "ivf"]


@dataclass
class SearchResult:
    """Top-K rows per query: item indices (-1 where fewer than K pass) and scores (-inf there)."""

    indices: np.ndarray  # n_queries x k, int64
    scores: np.ndarray  # n_queries x k, float32


#: a filter that leaves this many items or fewer is searched exactly over them (cheaper than a
#: filtered graph walk, and never short)
_SUBSET_MAX = 20_000


def _threads() -> int:
    return max(1, len(os.sched_getaffinity(0)))


class VectorIndex:
    """Inner-product top-K over item vectors.

    Args:
        kind: ``"auto"`` (exact up to ``exact_max`` items, HNSW above), ``"exact"``, ``"hnsw"``
            or ``"ivf"``.
        exact_max: the largest catalogue ``"auto"`` searches exactly.
        hnsw_m: HNSW graph degree.
        ef_search: HNSW search breadth (higher: better recall, slower).
        nprobe: IVF lists visited per query.
        normalise: L2-normalise vectors (and queries) so inner product is cosine.
    """

    def __init__(
        self,
        kind: Kind = "auto",
        exact_max: int = 50_000,
        hnsw_m: int = 32,
        ef_search: int = 128,
        nprobe: int = 16,
        normalise: bool = False,
    ) -> None:
        if kind not in ("auto", "exact", "hnsw", "ivf"):
            raise ConfigError(f"unknown index kind {kind!r}: auto, exact, hnsw or ivf")
        self.kind = kind
        self.exact_max = exact_max
        self.hnsw_m = hnsw_m
        self.ef_search = ef_search
        self.nprobe = nprobe
        self.normalise = normalise
        self.index = None
        self.built_kind: str | None = None
        self.n = 0
        self.dim = 0
        self._x: np.ndarray | None = None

    # -- building ------------------------------------------------------------------------------
    def build(self, vectors: np.ndarray) -> VectorIndex:
        """Index ``n x dim`` vectors; row ``i`` is item ``i``.

        Raises:
            DataError: not a 2-d array, empty, or not finite.
        """
        import faiss

        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if x.ndim != 2 or len(x) == 0:
            raise DataError(f"need an n x dim array of item vectors, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise DataError("item vectors contain NaN or infinity")
        if self.normalise:
            x = x.copy()
            faiss.normalize_L2(x)
        faiss.omp_set_num_threads(_threads())
        n, d = x.shape
        kind = self.kind
        if kind == "auto":
            kind = "exact" if n <= self.exact_max else "hnsw"
        if kind == "exact":
            index = faiss.IndexFlatIP(d)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = max(40, 2 * self.hnsw_m)
            index.hnsw.efSearch = self.ef_search
        else:
            nlist = max(1, min(int(4 * np.sqrt(n)), n // 39 or 1))
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(0)
            sample = x[rng.choice(n, size=min(n, 256 * nlist), replace=False)]
            index.train(sample)
            index.nprobe = min(self.nprobe, nlist)
        index.add(x)
        self._x = x
        self.index = index
        self.built_kind = kind
        self.n, self.dim = n, d
        return self

    # -- searching -----------------------------------------------------------------------------
    def _check(self) -> None:
        if self.index is None:
            from avrec.errors import NotFittedError

            raise NotFittedError("VectorIndex.build has not been called")

    def _params(self, selector):  # noqa: ANN001, ANN202
        import faiss

        if self.built_kind == "hnsw":
            return faiss.SearchParametersHNSW(sel=selector, efSearch=self.ef_search)
        if self.built_kind == "ivf":
            return faiss.SearchParametersIVF(sel=selector, nprobe=self.index.nprobe)
        return faiss.SearchParameters(sel=selector)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        allowed: np.ndarray | None = None,
        exclude: Sequence[Sequence[int] | np.ndarray] | None = None,
    ) -> SearchResult:
        """The ``k`` best items per query among ``allowed`` items, leaving out ``exclude[i]``
        for query ``i``.

        Raises:
            ConfigError: ``k`` is not positive, or the shapes do not match.
        """
        import faiss

        self._check()
        if k <= 0:
            raise ConfigError(f"k must be positive, got {k}")
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if q.shape[1] != self.dim:
            raise ConfigError(f"queries have {q.shape[1]} dimensions, the index {self.dim}")
        if self.normalise:
            q = q.copy()
            faiss.normalize_L2(q)
        if allowed is not None:
            allowed = np.asarray(allowed, dtype=bool)
            if allowed.shape != (self.n,):
                raise ConfigError(f"allowed must be a mask over {self.n} items")
        if exclude is not None and len(exclude) != len(q):
            raise ConfigError("exclude needs one list per query")
        k_eff = min(k, self.n)
        # a few queries over a small index: OpenMP start-up costs more than the search
        faiss.omp_set_num_threads(1 if len(q) * self.n < 1_000_000 else _threads())
        out_i = np.full((len(q), k), -1, np.int64)
        out_s = np.full((len(q), k), -np.inf, np.float32)
        if allowed is None and exclude is None:
            s, i = self.index.search(q, k_eff)
            out_i[:, :k_eff], out_s[:, :k_eff] = i, s
            out_s[out_i < 0] = -np.inf
            return SearchResult(out_i, out_s)
        if allowed is None:
            # exclusions only: one batched search over-fetching by the longest exclusion list;
            # rows still short afterwards (rare) take the filtered path below
            assert exclude is not None
            longest = max((len(e) for e in exclude), default=0)
            fetch = min(self.n, k_eff + longest)
            s_all, i_all = self.index.search(q, fetch)
            short = []
            for row in range(len(q)):
                ex = set(np.asarray(exclude[row], dtype=np.int64).tolist())
                keep = [
                    (i, sc)
                    for i, sc in zip(i_all[row], s_all[row], strict=True)
                    if i >= 0 and i not in ex
                ][:k_eff]
                n_ex = sum(1 for e in ex if 0 <= e < self.n)
                want = min(k_eff, self.n - n_ex)
                if len(keep) < want:
                    short.append(row)
                    continue
                if keep:
                    out_i[row, : len(keep)] = [i for i, _ in keep]
                    out_s[row, : len(keep)] = [sc for _, sc in keep]
            rows = short
        else:
            rows = list(range(len(q)))
        base = np.ones(self.n, bool) if allowed is None else allowed
        for row in rows:
            mask = base
            if exclude is not None and len(exclude[row]):
                mask = base.copy()
                ex = np.asarray(exclude[row], dtype=np.int64)
                mask[ex[(ex >= 0) & (ex < self.n)]] = False
            i, s = self._search_one(q[row], k_eff, mask)
            out_i[row, : len(i)], out_s[row, : len(i)] = i, s
        out_s[out_i < 0] = -np.inf
        return SearchResult(out_i, out_s)

    def _search_one(self, q: np.ndarray, k: int, mask: np.ndarray) -> tuple[np.ndarray, ...]:
        """One filtered query. Few allowed items: exact over them (cheaper than a filtered graph
        walk, and never short). Otherwise FAISS with a bitmap selector; an approximate index
        that comes back short is searched again wider, then exactly over the allowed items."""
        import faiss

        n_ok = int(mask.sum())
        want = min(k, n_ok)
        if want == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        if self.built_kind != "exact" and n_ok <= max(_SUBSET_MAX, 20 * k):
            return self._exact_subset(q, want, mask)
        bits = np.packbits(mask, bitorder="little")
        sel = faiss.IDSelectorBitmap(self.n, faiss.swig_ptr(bits))
        params = self._params(sel)
        for attempt in range(3):
            s, i = self.index.search(q[None], k, params=params)
            got = i[0] >= 0
            if got.sum() >= want or self.built_kind == "exact":
                return i[0][got][:want], s[0][got][:want]
            if attempt == 0 and self.built_kind == "hnsw":
                params = faiss.SearchParametersHNSW(sel=sel, efSearch=4 * max(self.ef_search, k))
            elif attempt == 0 and self.built_kind == "ivf":
                params = faiss.SearchParametersIVF(sel=sel, nprobe=self.index.nlist)
            else:
                break
        return self._exact_subset(q, want, mask)

    def _exact_subset(self, q: np.ndarray, k: int, mask: np.ndarray) -> tuple[np.ndarray, ...]:
        assert self._x is not None
        rows = np.flatnonzero(mask)
        scores = self._x[rows] @ q
        top = np.argpartition(-scores, k - 1)[:k] if k < len(rows) else np.arange(len(rows))
        top = top[np.lexsort((rows[top], -scores[top]))]
        return rows[top], scores[top].astype(np.float32)

    def recall(self, vectors: np.ndarray, queries: np.ndarray, k: int = 10) -> float:
        """Recall@k of this index against exact search over the same ``vectors``."""
        exact = VectorIndex("exact", normalise=self.normalise).build(vectors)
        truth = exact.search(queries, k).indices
        got = self.search(queries, k).indices
        hits = sum(len(set(a[a >= 0]) & set(b[b >= 0])) for a, b in zip(truth, got, strict=True))
        return hits / max(1, int((truth >= 0).sum()))

    # -- persistence ---------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        import faiss

        self._check()
        return faiss.serialize_index(self.index).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, kind: str, **params: object) -> VectorIndex:
        import faiss

        idx = cls(**params)  # type: ignore[arg-type]
        idx.index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        idx.built_kind = kind
        idx.n, idx.dim = idx.index.ntotal, idx.index.d
        if kind == "hnsw":
            idx.index.hnsw.efSearch = idx.ef_search
        if kind == "ivf":
            idx.index.make_direct_map()
        idx._x = idx.index.reconstruct_n(0, idx.n)
        return idx
