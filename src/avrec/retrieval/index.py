"""Vector retrieval with FAISS: exact for small catalogues, HNSW or IVF for large ones.

:class:`VectorIndex` holds item vectors (rows aligned with a Dataset's item vocabulary) and
answers inner-product top-K queries. The kind is chosen by catalogue size and memory budget
(``"auto"``): an exact flat index up to ``exact_max`` items (brute force over 50k x 64 floats
is about 0.3 ms a query on one core; at 100k it is 1.2 ms, and a request asks about ten), HNSW
up to ``hnsw_max`` items while its graph fits ``memory_mb``, and above that an inverted file
whose codes are the largest that fit the budget: full floats (``ivf``), 8-bit scalar
quantisation (``ivfsq8``, a quarter of the memory) or product quantisation (``ivfpq``, an
eighth or less). An inverted file's ``nprobe`` is calibrated when it is built: the fewest lists
that reach ``target_recall`` against exact search on a sample of the catalogue's own vectors.
:meth:`VectorIndex.recall` measures an approximate index against exact search on the same
queries, so the choice is checked, not assumed.

:meth:`VectorIndex.save` writes a FAISS file and :meth:`VectorIndex.open` memory-maps an
inverted file's lists instead of reading them, so a ten-million-item index opens in
milliseconds and its pages are read as queries touch them.

Filters never cost K: an ``allowed`` mask (category, language, duration, availability) and
per-query ``exclude`` sets (seen items, items already shown in this session) are applied inside
FAISS through an ``IDSelectorBitmap`` for single queries, so the K results returned all pass
(as long as K items pass at all); batches over-fetch and refill.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from avrec.errors import ConfigError, DataError

__all__ = ["SearchResult", "VectorIndex"]

Kind = Literal["auto", "exact", "hnsw", "ivf", "ivfsq8", "ivfpq"]
KINDS = ("auto", "exact", "hnsw", "ivf", "ivfsq8", "ivfpq")
#: inverted-file kinds (lists that can be memory-mapped)
IVF_KINDS = ("ivf", "ivfsq8", "ivfpq")


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


def _code_bytes(kind: str, d: int) -> int:
    return {"ivf": 4 * d, "ivfsq8": d}.get(kind, d // 2)


def _exact_top(x: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top ``k`` of ``q`` over ``x``, in slices of a million rows (no
    second copy of a large catalogue)."""
    import faiss

    best_s = np.full((len(q), k), -np.inf, np.float32)
    best_i = np.full((len(q), k), -1, np.int64)
    for start in range(0, len(x), 1_000_000):
        part = x[start : start + 1_000_000]
        s, i = faiss.knn(q, part, min(k, len(part)), metric=faiss.METRIC_INNER_PRODUCT)
        s_all = np.concatenate([best_s, s], axis=1)
        i_all = np.concatenate([best_i, i + start], axis=1)
        top = np.argsort(-s_all, axis=1, kind="stable")[:, :k]
        best_s = np.take_along_axis(s_all, top, 1)
        best_i = np.take_along_axis(i_all, top, 1)
    return best_s, best_i


class VectorIndex:
    """Inner-product top-K over item vectors.

    Args:
        kind: ``"auto"`` (by size and ``memory_mb``, see the module), ``"exact"``, ``"hnsw"``,
            ``"ivf"``, ``"ivfsq8"`` or ``"ivfpq"``.
        exact_max: the largest catalogue ``"auto"`` searches exactly.
        hnsw_max: the largest catalogue ``"auto"`` gives an HNSW graph (building one takes
            minutes per million items here).
        memory_mb: the budget ``"auto"`` fits an approximate index into.
        hnsw_m: HNSW graph degree.
        ef_search: HNSW search breadth (higher: better recall, slower).
        nprobe: IVF lists visited per query; ``None``: calibrated at build to ``target_recall``.
        nlist_max: the most IVF lists (training cost grows with them).
        target_recall: the recall@10 against exact search that calibration aims for.
        normalise: L2-normalise vectors (and queries) so inner product is cosine.
        progress: called with (items added, items) while a large index is built.
    """

    def __init__(
        self,
        kind: Kind = "auto",
        exact_max: int = 50_000,
        hnsw_max: int = 2_000_000,
        memory_mb: float = 2048.0,
        hnsw_m: int = 32,
        ef_search: int = 128,
        nprobe: int | None = None,
        nlist_max: int = 4096,
        target_recall: float = 0.95,
        normalise: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ConfigError(f"unknown index kind {kind!r}: {', '.join(KINDS)}")
        if memory_mb <= 0 or not 0 < target_recall <= 1:
            raise ConfigError("memory_mb must be positive and target_recall in (0, 1]")
        self.kind = kind
        self.exact_max = exact_max
        self.hnsw_max = hnsw_max
        self.memory_mb = memory_mb
        self.hnsw_m = hnsw_m
        self.ef_search = ef_search
        self.nprobe = nprobe
        self.nlist_max = nlist_max
        self.target_recall = target_recall
        self.normalise = normalise
        self.progress = progress
        self.index = None
        self.built_kind: str | None = None
        self.n = 0
        self.dim = 0
        self._x: np.ndarray | None = None
        self.calibration: dict[str, float] = {}

    def choose_kind(self, n: int, d: int) -> str:
        """The kind ``"auto"`` builds for ``n`` vectors of ``d`` floats: exact while small,
        HNSW while its graph fits the budget, then the inverted file with the largest codes
        that fit (full floats, 8-bit scalars, then product codes)."""
        if self.kind != "auto":
            return self.kind
        if n <= self.exact_max:
            return "exact"
        budget = self.memory_mb * 2**20
        if n <= self.hnsw_max and n * (4 * d + 8 * self.hnsw_m + 8) <= budget:
            return "hnsw"
        for kind in ("ivf", "ivfsq8"):
            if n * (_code_bytes(kind, d) + 8) <= budget:
                return kind
        return "ivfpq"

    def _pq_m(self, n: int, d: int) -> int:
        """Product-code bytes per vector: the most that fit the budget (a divisor of ``d``)."""
        budget = self.memory_mb * 2**20
        for m in (d // 2, d // 4, d // 8, d // 16):
            if m >= 1 and d % m == 0 and n * (m + 8) <= budget:
                return m
        return max(1, d // 16)

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
        kind = self.choose_kind(n, d)
        if kind == "exact":
            index = faiss.IndexFlatIP(d)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = max(40, 2 * self.hnsw_m)
            index.hnsw.efSearch = self.ef_search
        else:
            index = self._train_ivf(kind, x)
        step = max(1, min(n, 1_000_000))
        for start in range(0, n, step):  # in slices, so a large build shows progress
            index.add(x[start : start + step])
            if self.progress:
                self.progress(min(n, start + step), n)
        # the full vectors stay for exact filtered searches unless the codes are compressed
        # (keeping them would cost what compression saved)
        self._x = None if kind in ("ivfsq8", "ivfpq") else x
        self.index = index
        self.built_kind = kind
        self.n, self.dim = n, d
        if kind in IVF_KINDS:
            if self.nprobe is None:
                self.calibrate(x)
            else:
                index.nprobe = min(self.nprobe, index.nlist)
        return self

    def _train_ivf(self, kind: str, x: np.ndarray):  # noqa: ANN202
        import faiss

        n, d = x.shape
        nlist = max(1, min(int(4 * np.sqrt(n)), n // 39 or 1, self.nlist_max))
        quantizer = faiss.IndexFlatIP(d)
        ip = faiss.METRIC_INNER_PRODUCT
        if kind == "ivf":
            index = faiss.IndexIVFFlat(quantizer, d, nlist, ip)
        elif kind == "ivfsq8":
            index = faiss.IndexIVFScalarQuantizer(
                quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit, ip
            )
        else:
            index = faiss.IndexIVFPQ(quantizer, d, nlist, self._pq_m(n, d), 8, ip)
        rng = np.random.default_rng(0)
        # 64 training points per list: FAISS's k-means warns below 39, and more than this
        # costs minutes at millions of items without moving recall
        sample = x[np.sort(rng.choice(n, size=min(n, 64 * nlist), replace=False))]
        index.train(sample)
        index.nprobe = 1
        return index

    def calibrate(self, x: np.ndarray, queries: int = 200, k: int = 10) -> int:
        """Set ``nprobe`` to the fewest lists that reach ``target_recall`` at ``k`` against
        exact search, on ``queries`` of the catalogue's own vectors (each leaving itself out).
        Codes too coarse to reach it get the fewest lists within 1% of the recall of all
        lists. Returns the chosen ``nprobe``; the measured recall is in :attr:`calibration`."""
        import faiss

        assert self.index is not None
        rng = np.random.default_rng(1)
        rows = rng.choice(len(x), size=min(queries, len(x)), replace=False)
        q = x[rows]
        _, truth = _exact_top(x, q, k + 1)
        truth_sets = [set(t[t != r][:k].tolist()) for t, r in zip(truth, rows, strict=True)]
        nlist = self.index.nlist
        t0 = time.perf_counter()

        def measure(nprobe: int) -> float:
            self.index.nprobe = nprobe
            _, found = self.index.search(q, k + 1)
            return float(np.mean([
                len(ts & set(f[f != r][:k].tolist())) / max(1, len(ts))
                for ts, f, r in zip(truth_sets, found, rows, strict=True)
            ]))  # fmt: skip

        # doubling until the target is reached, then halving the last step (recall grows
        # with nprobe, so the fewest lists lie between the last two tried)
        tried = {1: measure(1)}
        hi = 1
        while tried[hi] < self.target_recall and hi < nlist:
            hi = min(nlist, hi * 2)
            tried[hi] = measure(hi)
        # codes too coarse to reach the target: the fewest lists within 1% of what every
        # list gives (beyond that, more lists cost time and buy nothing)
        reached = tried[hi] >= self.target_recall
        aim = self.target_recall if reached else 0.99 * tried[hi]
        hi = min(p for p, r in tried.items() if r >= aim)
        lo = max([p for p in tried if p < hi], default=0)
        best = (hi, tried[hi])
        while hi - lo > max(1, lo // 8):
            mid = (lo + hi) // 2
            r = measure(mid)
            if r >= aim:
                hi, best = mid, (mid, r)
            else:
                lo = mid
        nprobe, got = best
        self.index.nprobe = nprobe
        self.calibration = {
            "nprobe": nprobe, "recall": got, "queries": len(rows),
            "seconds": time.perf_counter() - t0,
        }  # fmt: skip
        faiss.omp_set_num_threads(_threads())
        return nprobe

    # -- searching -----------------------------------------------------------------------------
    def _check(self) -> None:
        if self.index is None:
            from avrec.errors import NotFittedError

            raise NotFittedError("VectorIndex.build has not been called")

    def _params(self, selector):  # noqa: ANN001, ANN202
        import faiss

        if self.built_kind == "hnsw":
            return faiss.SearchParametersHNSW(sel=selector, efSearch=self.ef_search)
        if self.built_kind in IVF_KINDS:
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
            elif attempt == 0 and self.built_kind in IVF_KINDS:
                params = faiss.SearchParametersIVF(sel=sel, nprobe=self.index.nlist)
            else:
                break
        return self._exact_subset(q, want, mask)

    def _exact_subset(self, q: np.ndarray, k: int, mask: np.ndarray) -> tuple[np.ndarray, ...]:
        import faiss

        rows = np.flatnonzero(mask)
        if self._x is None:  # compressed codes: every list, the allowed items only
            bits = np.packbits(mask, bitorder="little")
            sel = faiss.IDSelectorBitmap(self.n, faiss.swig_ptr(bits))
            params = faiss.SearchParametersIVF(sel=sel, nprobe=self.index.nlist)
            s, i = self.index.search(q[None], k, params=params)
            got = i[0] >= 0
            return i[0][got], s[0][got]
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
        return idx._adopt(faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8)), kind)

    def save(self, path: str | os.PathLike) -> None:
        """Write the index to one FAISS file (atomically: a reader never sees half of it)."""
        import faiss

        self._check()
        tmp = f"{os.fspath(path)}.tmp-{os.getpid()}"
        faiss.write_index(self.index, tmp)
        os.replace(tmp, path)

    @classmethod
    def open(cls, path: str | os.PathLike, kind: str, mmap: bool = True, **params: object):  # noqa: ANN206
        """An index saved by :meth:`save`. An inverted file's lists are memory-mapped (read
        only) unless ``mmap`` is false; a graph or flat index is read whole.

        Raises:
            DataError: the file is missing or not a FAISS index.
        """
        import faiss

        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap and kind in IVF_KINDS else 0
        try:
            index = faiss.read_index(os.fspath(path), flags)
        except RuntimeError as exc:
            raise DataError(
                f"{path}: not a readable FAISS index ({str(exc).splitlines()[0]})"
            ) from exc
        return cls(**params)._adopt(index, kind)  # type: ignore[arg-type]

    def _adopt(self, index, kind: str) -> VectorIndex:  # noqa: ANN001
        self.index = index
        self.built_kind = kind
        self.n, self.dim = index.ntotal, index.d
        if kind == "hnsw":
            index.hnsw.efSearch = self.ef_search
        if kind in IVF_KINDS and self.nprobe is not None:
            index.nprobe = min(self.nprobe, index.nlist)  # else: as calibrated when built
        # exact filtered searches read full vectors: kept for flat and graph indexes, not
        # for inverted files (a memory-mapped one would be read whole, a compressed one
        # would cost what compression saved); those search their lists with the filter
        self._x = None if kind in IVF_KINDS else index.reconstruct_n(0, self.n)
        return self
