"""EASE (Steck, 2019): a closed-form item-item linear model, the strongest simple baseline."""

from __future__ import annotations

import numpy as np
import scipy.linalg
from pydantic import Field

from avrec.data.dataset import Dataset
from avrec.models.base import ModelConfig, Recommender, UserBatch, register_model

__all__ = ["EASE"]


class EASEConfig(ModelConfig):
    l2: float = Field(300.0, gt=0, description="L2 regularisation lambda")
    binary: bool = Field(True, description="fit on 0/1 interactions instead of weights")


@register_model
class EASE(Recommender):
    """``B = I - P / diag(P)`` with ``P = (X^T X + lambda I)^-1`` and ``diag(B) = 0``.

    Scores are ``history @ B``. Memory is ``n_items^2`` floats (float32 above 5,000 items).
    """

    name = "ease"
    Config = EASEConfig
    config: EASEConfig

    def _fit(self, dataset: Dataset, valid: Dataset | None) -> None:
        x = dataset.binary() if self.config.binary else dataset.interactions
        n = x.shape[1]
        dtype = np.float64 if n <= 5000 else np.float32
        g = (x.T @ x).toarray().astype(dtype)
        g[np.diag_indices(n)] += self.config.l2
        p = scipy.linalg.inv(g, overwrite_a=True, check_finite=False)
        b = p / (-np.diag(p))
        b[np.diag_indices(n)] = 0.0
        self.weights = b.astype(np.float32)

    def _score_batch(self, batch: UserBatch) -> np.ndarray:
        h = batch.history
        if self.config.binary:
            h = h.copy()
            h.data[:] = 1.0
        return np.asarray(h @ self.weights, dtype=np.float32)

    def _state(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.weights = arrays["weights"]
