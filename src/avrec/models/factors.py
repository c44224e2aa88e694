"""Matrix factorisation for implicit feedback through the `implicit` library: ALS and BPR.

The event weights of the dataset (``[weighting]``) are the confidence: ALS weighs observed pairs
by ``alpha * weight`` (implicit's convention) and unobserved ones by 1. Scores are
``user_factors @ item_factors.T``.

Fold-in: ALS solves a user's factors in closed form from any history, given the item factors
(the same step ALS training takes), so a new user, or a user with events since training, gets
exact factors without retraining; this is also how evaluation scores a user with the history the
protocol gives (training plus validation items). BPR has no closed form: known users keep their
trained factors and new users get the mean of their items' factors.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from avrec.data.dataset import Dataset
from avrec.models.base import (
    ModelConfig,
    Recommender,
    UserBatch,
    cosine_rows,
    register_model,
)

__all__ = ["ALS", "BPR", "als_fold_in"]


def _threads() -> int:
    import os

    return max(1, len(os.sched_getaffinity(0)))


def als_fold_in(
    item_factors: np.ndarray,
    history: sp.csr_matrix,
    alpha: float,
    regularization: float,
    outer: np.ndarray | None = None,
) -> np.ndarray:
    """Closed-form ALS user factors for each row of ``history`` (weights as confidence).

    Solves ``(Y^T Y + Y^T (C_u - I) Y + lambda I) x_u = Y^T C_u p_u`` with ``C_u = alpha r`` on
    observed items (implicit's convention since 0.5: ``alpha`` scales the matrix it is given)
    for all users at once: the per-user sums of ``y_i y_i^T`` are one sparse-dense product with
    the items' flattened outer products ``outer`` (``n_items x d*d``, see :func:`item_outer`).
    """
    y = item_factors.astype(np.float64)
    d = y.shape[1]
    h = history.tocsr().astype(np.float64)
    outer = item_outer(y) if outer is None else outer
    scaled = h.copy()
    scaled.data = alpha * scaled.data - 1.0  # C - I on observed items
    conf = h.copy()
    conf.data = alpha * conf.data  # C on observed items (p = 1 there)
    a = (scaled @ outer).reshape(-1, d, d) + (y.T @ y + regularization * np.eye(d))[None]
    b = conf @ y
    return np.linalg.solve(a, b[..., None])[..., 0].astype(np.float32)


def item_outer(y: np.ndarray) -> np.ndarray:
    """Each item's ``y y^T`` flattened: ``n_items x d*d`` (float64)."""
    y = y.astype(np.float64)
    return (y[:, :, None] * y[:, None, :]).reshape(len(y), -1)


class _FactorModel(Recommender):
    """Shared parts of models with ``user_factors`` and ``item_factors``."""

    user_arrays = ("user_factors",)

    user_factors: np.ndarray
    item_factors: np.ndarray

    def _item_similarity(self, items: np.ndarray) -> np.ndarray:
        return cosine_rows(self.item_factors, items)

    def _state(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors, "item_factors": self.item_factors}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.user_factors = arrays["user_factors"]
        self.item_factors = arrays["item_factors"]


class ALSConfig(ModelConfig):
    factors: int = Field(64, gt=0)
    regularization: float = Field(0.05, ge=0)
    alpha: float = Field(2.0, gt=0, description="confidence of observed pairs = alpha * weight")
    iterations: int = Field(15, gt=0)
    binary: bool = Field(False, description="ignore event weights (every pair weight 1)")
    seed: int = 0


@register_model
class ALS(_FactorModel):
    """Implicit-feedback ALS (Hu, Koren and Volinsky, 2008) via ``implicit``."""

    name = "als"
    Config = ALSConfig
    config: ALSConfig

    def _fit(self, dataset: Dataset, valid: Dataset | None) -> None:
        from implicit.cpu.als import AlternatingLeastSquares

        c = self.config
        x = (dataset.binary() if c.binary else dataset.interactions).astype(np.float32).tocsr()
        # implicit multiplies by alpha itself: confidence 1 + alpha * r.
        model = AlternatingLeastSquares(
            factors=c.factors,
            regularization=c.regularization,
            alpha=c.alpha,
            iterations=c.iterations,
            random_state=c.seed,
            num_threads=_threads(),
            calculate_training_loss=False,
        )
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):  # implicit runs its own threads
            model.fit(x, show_progress=False)
        self.user_factors = np.asarray(model.user_factors, np.float32)
        self.item_factors = np.asarray(model.item_factors, np.float32)
        self._outer: np.ndarray | None = None

    def _score_batch(self, batch: UserBatch) -> np.ndarray:
        c = self.config
        h = batch.history.astype(np.float32)
        if c.binary:
            h = h.copy()
            h.data[:] = 1.0
        if getattr(self, "_outer", None) is None:
            self._outer = item_outer(self.item_factors)
        step = max(1, 4096 // max(1, self.config.factors // 32))
        parts = [
            als_fold_in(self.item_factors, h[i : i + step], c.alpha, c.regularization, self._outer)
            for i in range(0, h.shape[0], step)
        ]
        u = np.concatenate(parts) if parts else np.zeros((0, c.factors), np.float32)
        return u @ self.item_factors.T

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        super()._set_state(arrays)
        self._outer = None


class BPRConfig(ModelConfig):
    factors: int = Field(64, gt=0)
    learning_rate: float = Field(0.05, gt=0)
    regularization: float = Field(0.01, ge=0)
    iterations: int = Field(100, gt=0)
    seed: int = 0


@register_model
class BPR(_FactorModel):
    """Bayesian personalised ranking (Rendle et al., 2009) via ``implicit``."""

    name = "bpr"
    Config = BPRConfig
    config: BPRConfig

    def _fit(self, dataset: Dataset, valid: Dataset | None) -> None:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        c = self.config
        model = BayesianPersonalizedRanking(
            factors=c.factors,
            learning_rate=c.learning_rate,
            regularization=c.regularization,
            iterations=c.iterations,
            random_state=c.seed,
            num_threads=_threads(),
        )
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):
            model.fit(dataset.binary().astype(np.float32).tocsr(), show_progress=False)
        # implicit's BPR appends a bias column to the factors (item bias, user 1).
        self.user_factors = np.asarray(model.user_factors, np.float32)
        self.item_factors = np.asarray(model.item_factors, np.float32)

    def _score_batch(self, batch: UserBatch) -> np.ndarray:
        users = batch.users
        u = np.zeros((len(users), self.user_factors.shape[1]), np.float32)
        known = users >= 0
        u[known] = self.user_factors[users[known]]
        if (~known).any():
            h = batch.history[~known]
            counts = np.maximum(np.diff(h.indptr), 1)[:, None]
            u[~known] = (h @ self.item_factors) / counts
        return u @ self.item_factors.T
