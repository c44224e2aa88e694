"""Item-based nearest neighbours: cosine or BM25-weighted similarity, top-N pruned."""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from avrec.data.dataset import Dataset
from avrec.models.base import ModelConfig, Recommender, UserBatch, register_model

__all__ = ["ItemKNN"]


class ItemKNNConfig(ModelConfig):
    neighbours: int = Field(200, gt=0, description="neighbours kept per item")
    similarity: Literal["cosine", "bm25"] = "cosine"
    shrink: float = Field(0.0, ge=0, description="shrinks similarities of rarely co-seen pairs")
    binary: bool = Field(True, description="use 0/1 interactions instead of weights")
    bm25_k1: float = 1.2
    bm25_b: float = 0.75


def _bm25(x: sp.csr_matrix, k1: float, b: float) -> sp.csr_matrix:
    """BM25 weighting of a users x items matrix (users as documents), as in implicit."""
    x = x.tocsr().astype(np.float64)
    n_users = x.shape[0]
    df = np.bincount(x.indices, minlength=x.shape[1])
    idf = np.log(n_users) - np.log1p(df)
    lengths = np.asarray(x.sum(axis=1)).ravel()
    avg = lengths.mean() if n_users else 1.0
    norm = (1.0 - b) + b * lengths / max(avg, 1e-12)
    rows = np.repeat(np.arange(n_users), np.diff(x.indptr))
    x.data = x.data * (k1 + 1.0) / (k1 * norm[rows] + x.data) * idf[x.indices]
    return x


@register_model
class ItemKNN(Recommender):
    """Scores are ``history @ S`` with ``S`` the pruned item-item similarity."""

    name = "itemknn"
    Config = ItemKNNConfig
    config: ItemKNNConfig

    def _fit(self, dataset: Dataset, valid: Dataset | None) -> None:
        c = self.config
        x = dataset.binary() if c.binary else dataset.interactions
        if c.similarity == "bm25":
            x = _bm25(x, c.bm25_k1, c.bm25_b)
        x = x.tocsc().astype(np.float32)
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0)).ravel())
        co = (x.T @ x).tocsr()
        co.setdiag(0)
        co.eliminate_zeros()
        coo = co.tocoo()
        denom = norms[coo.row] * norms[coo.col] + c.shrink
        data = coo.data / np.maximum(denom, 1e-12)
        sim = sp.csr_matrix((data.astype(np.float32), (coo.row, coo.col)), shape=co.shape)
        self.similarity = _prune(sim, c.neighbours)

    def _score_batch(self, batch: UserBatch) -> np.ndarray:
        h = batch.history
        if self.config.binary:
            h = h.copy()
            h.data[:] = 1.0
        return np.asarray((h @ self.similarity).toarray(), dtype=np.float32)

    def _sparse_scores(self, batch: UserBatch) -> tuple[sp.csr_matrix, None, None]:
        """:meth:`_score_batch` without densifying (every item outside a row scores 0): a
        candidate source reads the few items with a score instead of the whole catalogue."""
        h = batch.history
        if self.config.binary:
            h = h.copy()
            h.data[:] = 1.0
        return sp.csr_matrix(h @ self.similarity, dtype=np.float32), None, None

    def _item_similarity(self, items: np.ndarray) -> np.ndarray:
        return self.similarity.T[items].toarray()

    def _state(self) -> dict[str, np.ndarray]:
        s = self.similarity
        return {
            "sim_indptr": s.indptr,
            "sim_indices": s.indices,
            "sim_data": s.data,
            "sim_shape": np.asarray(s.shape),
        }

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.similarity = sp.csr_matrix(
            (arrays["sim_data"], arrays["sim_indices"], arrays["sim_indptr"]),
            shape=tuple(arrays["sim_shape"]),
        )


def _prune(sim: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the ``k`` largest similarities in each column (each item's neighbours).

    Row ``i`` of the result holds, for every item ``j``, ``sim(i, j)`` if ``i`` is among ``j``'s
    ``k`` nearest neighbours, so ``history @ S`` sums over each candidate's own neighbours.
    """
    csc = sim.tocsc()
    keep_rows, keep_cols, keep_data = [], [], []
    for j in range(csc.shape[1]):
        lo, hi = csc.indptr[j], csc.indptr[j + 1]
        if hi == lo:
            continue
        data = csc.data[lo:hi]
        rows = csc.indices[lo:hi]
        if hi - lo > k:
            top = np.argpartition(-data, k - 1)[:k]
            data, rows = data[top], rows[top]
        keep_rows.append(rows)
        keep_cols.append(np.full(len(rows), j))
        keep_data.append(data)
    if not keep_rows:
        return sp.csr_matrix(sim.shape, dtype=np.float32)
    return sp.csr_matrix(
        (np.concatenate(keep_data), (np.concatenate(keep_rows), np.concatenate(keep_cols))),
        shape=sim.shape,
        dtype=np.float32,
    )
