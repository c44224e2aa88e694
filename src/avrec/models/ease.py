"""EASE (Steck, 2019): a closed-form item-item linear model, the strongest simple baseline."""

from __future__ import annotations

import numpy as np
from pydantic import Field
from scipy.linalg import lapack

from avrec.data.dataset import Dataset
from avrec.errors import ConfigError
from avrec.models.base import ModelConfig, Recommender, UserBatch, register_model

__all__ = ["EASE"]


class EASEConfig(ModelConfig):
    l2: float = Field(300.0, gt=0, description="L2 regularisation lambda")
    binary: bool = Field(True, description="fit on 0/1 interactions instead of weights")
    dp_epsilon: float | None = Field(
        None,
        gt=0,
        description="user-level (epsilon, dp_delta)-differential privacy for the learned "
        "weights: each user bounded to dp_items_per_user items, Gaussian noise on the Gram "
        "matrix (avrec.privacy.training); None: no DP",
    )
    dp_delta: float = Field(1e-6, gt=0, lt=1, description="the delta of dp_epsilon")
    dp_items_per_user: int = Field(
        20, ge=1, description="a user's items counted in the Gram matrix (a uniform sample)"
    )
    dp_seed: int | None = Field(None, description="the bounding and noise draws (None: fresh)")


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
        _check_memory(n, np.dtype(dtype).itemsize)
        c = self.config
        if c.dp_epsilon is not None:
            from avrec.privacy.training import private_gram

            g, self.privacy = private_gram(
                dataset.binary(), c.dp_epsilon, c.dp_delta, c.dp_items_per_user, c.dp_seed, dtype
            )
        else:
            g = (x.T @ x).toarray().astype(dtype)
        g[np.diag_indices(n)] += self.config.l2
        p = _spd_inverse(g)
        b = p / (-np.diag(p))
        b[np.diag_indices(n)] = 0.0
        # C order: sparse @ dense needs it, and a Fortran-ordered result from LAPACK would be
        # copied (n^2 floats) on every scoring call.
        self.weights = np.ascontiguousarray(b, dtype=np.float32)

    def _score_batch(self, batch: UserBatch) -> np.ndarray:
        h = batch.history
        if self.config.binary:
            h = h.copy()
            h.data[:] = 1.0
        return np.asarray(h @ self.weights, dtype=np.float32)

    def _state(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.weights = np.ascontiguousarray(arrays["weights"], dtype=np.float32)


def _check_memory(n: int, itemsize: int) -> None:
    """Refuse, before allocating, a fit that cannot fit: the Gram matrix, its inverse and the
    weights are ``n_items^2`` floats each at the peak.

    Raises:
        ConfigError: more than the memory free now.
    """
    import psutil

    need = 3 * n * n * itemsize
    free = psutil.virtual_memory().available
    if need > free:
        raise ConfigError(
            f"EASE over {n:,} items needs about {need / 2**30:.1f} GB ({n:,}^2 floats, three "
            f"times over) and {free / 2**30:.1f} GB is free: for a catalogue this size use ALS "
            "(model als, or the pipeline's factors source)"
        )


def _spd_inverse(g: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric positive definite matrix, in place, by Cholesky (``potrf`` +
    ``potri``): about half the work of a general LU inverse, which matters at 20k items."""
    potrf, potri = lapack.get_lapack_funcs(("potrf", "potri"), (g,))
    c, info = potrf(g, lower=True, overwrite_a=True, clean=False)
    if info != 0:
        raise np.linalg.LinAlgError(f"Gram matrix is not positive definite (potrf info={info})")
    inv, info = potri(c, lower=True, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"inverse failed (potri info={info})")
    # potri fills only the lower triangle: mirror it, one column block at a time so that no
    # n x n temporary is needed.
    n, block = inv.shape[0], 1024
    for j0 in range(0, n, block):
        j1 = min(j0 + block, n)
        inv[:j0, j0:j1] = inv[j0:j1, :j0].T
        d = inv[j0:j1, j0:j1]
        inv[j0:j1, j0:j1] = np.tril(d) + np.tril(d, -1).T
    return inv
