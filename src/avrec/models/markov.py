"""First-order Markov transitions between consecutive items, for "what comes next".

``P(next = j | last = i)`` is estimated from consecutive pairs in every user's time-ordered
sequence, smoothed towards popularity: ``(count(i -> j) + beta * pop(j)) / (count(i) + beta)``.
A user is scored from their last ``window`` items with geometrically decaying weights. With
``categories`` the transitions between the items' first categories add a coarser signal (a user
who just watched a documentary is likely to want another one).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from avrec.data.dataset import Dataset
from avrec.models.base import ModelConfig, Recommender, UserBatch, register_model

__all__ = ["Markov"]


class MarkovConfig(ModelConfig):
    window: int = Field(3, gt=0, description="how many recent items vote for the next one")
    decay: float = Field(0.5, gt=0, le=1, description="weight ratio between successive votes")
    beta: float = Field(1.0, ge=0, description="smoothing towards popularity")
    categories: float = Field(0.0, ge=0, description="weight of category transitions")


@register_model
class Markov(Recommender):
    """First-order item (and optionally category) transitions."""

    name = "markov"
    Config = MarkovConfig
    config: MarkovConfig
    uses_sequences = True

    def _fit(self, dataset: Dataset, valid: Dataset | None) -> None:
        n = dataset.n_items
        u, i = dataset.user_index, dataset.item_index
        same = u[1:] == u[:-1]  # consecutive events of one user (the dataset is user/time sorted)
        src, dst = i[:-1][same], i[1:][same]
        keep = src != dst
        counts = sp.csr_matrix(
            (np.ones(int(keep.sum()), np.float32), (src[keep], dst[keep])), shape=(n, n)
        )
        counts.sum_duplicates()
        pop = np.bincount(i, minlength=n).astype(np.float64)
        self.popularity = (pop / max(pop.sum(), 1.0)).astype(np.float32)
        out_deg = np.asarray(counts.sum(axis=1)).ravel()
        self.row_norm = (1.0 / (out_deg + self.config.beta + 1e-12)).astype(np.float32)
        self.transitions = counts.tocsr()
        self.out_deg = out_deg.astype(np.float32)
        self._fit_categories(dataset, src[keep], dst[keep])

    def _fit_categories(self, dataset: Dataset, src: np.ndarray, dst: np.ndarray) -> None:
        cats = [c[0] if c else "" for c in dataset.item_categories]
        names = sorted(set(cats))
        index = {c: k for k, c in enumerate(names)}
        self.item_category = np.asarray([index[c] for c in cats], dtype=np.int64)
        m = len(names)
        t = np.zeros((m, m), np.float64)
        np.add.at(t, (self.item_category[src], self.item_category[dst]), 1.0)
        t += 1.0  # Laplace smoothing
        self.category_transitions = (t / t.sum(axis=1, keepdims=True)).astype(np.float32)
        size = np.bincount(self.item_category, minlength=m).astype(np.float32)
        self.category_size = np.maximum(size, 1.0)

    def _recent(self, seqs: list[np.ndarray]) -> tuple[sp.csr_matrix, list, list, list]:
        """Each sequence's last ``window`` items, decayed and row-normalised (one row each)."""
        c = self.config
        rows, cols, weights = [], [], []
        for r, seq in enumerate(seqs):
            recent = seq[-c.window :][::-1]
            for k, item in enumerate(recent):
                rows.append(r)
                cols.append(int(item))
                weights.append(c.decay**k)
        norm_last = sp.csr_matrix(
            (np.asarray(weights, np.float32) * self.row_norm[np.asarray(cols, np.int64)],
             (rows, cols)),
            shape=(len(seqs), len(self.popularity)),
        )  # fmt: skip
        return norm_last, rows, cols, weights

    def _sparse_scores(self, batch: UserBatch):  # noqa: ANN201
        """:meth:`_score_batch` as ``transitions + vote * popularity`` without densifying:
        the transition scores (sparse), the popularity vector and each row's vote; None
        when category transitions are on (they touch every item)."""
        c = self.config
        if c.categories > 0 and len(self.category_transitions) > 1:
            return None
        seqs = batch.sequence_list()
        norm_last, _, _, _ = self._recent(seqs)
        scores = sp.csr_matrix(norm_last @ self.transitions, dtype=np.float32)
        vote = np.asarray(norm_last.sum(axis=1)).ravel() * c.beta
        vote[np.asarray([len(s) == 0 for s in seqs], bool)] = 1.0  # popularity, as below
        return scores, self.popularity, vote

    def _score_batch(self, batch: UserBatch) -> np.ndarray:
        c = self.config
        seqs = batch.sequence_list()
        norm_last, rows, cols, weights = self._recent(seqs)
        scores = np.asarray((norm_last @ self.transitions).todense(), dtype=np.float32)
        vote = np.asarray(norm_last.sum(axis=1)).ravel() * c.beta
        scores += vote[:, None] * self.popularity[None, :]
        if c.categories > 0 and len(self.category_transitions) > 1:
            cat_votes = np.zeros((len(seqs), len(self.category_transitions)), np.float32)
            np.add.at(
                cat_votes,
                (np.asarray(rows, int), self.item_category[np.asarray(cols, int)]),
                np.asarray(weights, np.float32),
            )
            cat_scores = cat_votes @ self.category_transitions
            per_item = cat_scores[:, self.item_category] / self.category_size[self.item_category]
            scores += c.categories * per_item
        # users without a sequence fall back to popularity
        empty = np.asarray([len(s) == 0 for s in seqs])
        if empty.any():
            scores[empty] = self.popularity
        return scores

    def _item_similarity(self, items: np.ndarray) -> np.ndarray:
        rows = self.transitions[items].toarray() * self.row_norm[items, None]
        return rows + self.config.beta * self.row_norm[items, None] * self.popularity[None, :]

    def _state(self) -> dict[str, np.ndarray]:
        t = self.transitions
        return {
            "t_indptr": t.indptr,
            "t_indices": t.indices,
            "t_data": t.data,
            "popularity": self.popularity,
            "row_norm": self.row_norm,
            "out_deg": self.out_deg,
            "item_category": self.item_category,
            "category_transitions": self.category_transitions,
            "category_size": self.category_size,
        }

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        n = len(arrays["popularity"])
        self.transitions = sp.csr_matrix(
            (arrays["t_data"], arrays["t_indices"], arrays["t_indptr"]), shape=(n, n)
        )
        for k in (
            "popularity",
            "row_norm",
            "out_deg",
            "item_category",
            "category_transitions",
            "category_size",
        ):
            setattr(self, k, arrays[k])
