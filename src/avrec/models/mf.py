"""Biased matrix factorisation, the textbook model ``r_ui = mu + b_u + b_i + <p_u, q_i>``.

Two targets:

- ``target="rating"`` (explicit): fitted to the observed values of rating events (the last rating
  of each pair; pairs without a rating use their preference weight), squared error on observed
  pairs only;
- ``target="weight"`` (implicit): fitted to the preference weights of observed pairs plus
  ``negatives`` unobserved pairs per observed one at target 0, resampled every iteration.

Two solvers: ``"als"`` alternates closed-form ridge solves for users and items (vectorised: the
per-user normal equations are one sparse-dense product with the items' flattened outer
products), ``"sgd"`` runs minibatch Adam in PyTorch. Fold-in: a new user's ``b_u, p_u`` solve in
closed form from their history against the fixed item side.
"""

from __future__ import annotations

from typing import Literal

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

__all__ = ["BiasedMF"]


class BiasedMFConfig(ModelConfig):
    factors: int = Field(32, gt=0)
    regularization: float = Field(0.1, ge=0)
    iterations: int = Field(15, gt=0)
    target: Literal["rating", "weight"] = "weight"
    negatives: int = Field(4, ge=0, description="weight target: zeros sampled per observed pair")
    solver: Literal["als", "sgd"] = "als"
    lr: float = Field(0.01, gt=0, description="sgd: Adam learning rate")
    batch_size: int = Field(4096, gt=0)
    seed: int = 0


def _ridge_side(
    obs: sp.csr_matrix, other: np.ndarray, reg: float, extra_diag: np.ndarray
) -> np.ndarray:
    """Solve ``(F_u^T F_u + reg I) z_u = F_u^T t_u`` for every row ``u`` of ``obs`` at once.

    ``obs`` holds the targets (explicit zeros included as stored entries via ``obs.data``);
    ``other`` is the feature matrix of the other side (``n x k``).
    """
    k = other.shape[1]
    mask = obs.copy()
    mask.data = np.ones_like(mask.data)
    outer = (other[:, :, None] * other[:, None, :]).reshape(len(other), -1)
    a = (mask @ outer).reshape(-1, k, k) + np.diag(extra_diag)[None] * reg
    b = obs @ other
    return np.linalg.solve(a, b[..., None])[..., 0]


@register_model
class BiasedMF(Recommender):
    """``mu + b_u + b_i + <p_u, q_i>``, by ALS or SGD, on ratings or on preference weights."""

    user_arrays = ("p", "bu")

    name = "mf"
    Config = BiasedMFConfig
    config: BiasedMFConfig

    def _targets(self, dataset: Dataset) -> sp.csr_matrix:
        if self.config.target == "weight":
            return dataset.interactions.astype(np.float64).tocsr()
        is_rate = (dataset.event_type == "rate") & ~np.isnan(dataset.value)
        u, i, v = (dataset.user_index[is_rate], dataset.item_index[is_rate], dataset.value[is_rate])
        # the last rating of a pair wins: later entries overwrite earlier ones
        key = u * dataset.n_items + i
        _, last = np.unique(key[::-1], return_index=True)
        last = len(key) - 1 - last
        m = sp.csr_matrix((v[last], (u[last], i[last])), shape=(dataset.n_users, dataset.n_items))
        w = dataset.interactions.astype(np.float64).tocsr()
        if m.nnz == 0:
            return w
        missing = w - w.multiply(m > 0)  # pairs without a rating keep their weight
        return (m + missing).tocsr()

    def _with_negatives(self, obs: sp.csr_matrix, rng: np.random.Generator) -> sp.csr_matrix:
        """``obs`` plus sampled unobserved pairs stored as explicit zero targets."""
        n = self.config.negatives
        if self.config.target != "weight" or n == 0:
            return obs
        coo = obs.tocoo()
        users = np.repeat(coo.row, n)
        items = rng.integers(0, obs.shape[1], len(users))
        n_items = obs.shape[1]
        observed = np.sort(coo.row.astype(np.int64) * n_items + coo.col)
        keep = ~np.isin(users.astype(np.int64) * n_items + items, observed)
        rows = np.concatenate([coo.row, users[keep]])
        cols = np.concatenate([coo.col, items[keep]])
        data = np.concatenate([coo.data, np.zeros(int(keep.sum()))])
        # csr_matrix keeps explicit zeros as stored entries: they are targets, not absences
        return sp.csr_matrix((data, (rows, cols)), shape=obs.shape)

    def _fit(self, dataset: Dataset, valid: Dataset | None) -> None:
        c = self.config
        rng = np.random.default_rng(c.seed)
        obs = self._targets(dataset)
        self.mu = float(obs.data.mean()) if obs.nnz else 0.0
        n_u, n_i, k = dataset.n_users, dataset.n_items, c.factors
        self.p = (rng.normal(0, 0.05, (n_u, k))).astype(np.float64)
        self.q = (rng.normal(0, 0.05, (n_i, k))).astype(np.float64)
        self.bu = np.zeros(n_u)
        self.bi = np.zeros(n_i)
        if c.solver == "sgd":
            self._fit_sgd(obs, rng)
        else:
            self._fit_als(obs, rng)
        for name in ("p", "q", "bu", "bi"):
            setattr(self, name, getattr(self, name).astype(np.float32))

    def _fit_als(self, obs: sp.csr_matrix, rng: np.random.Generator) -> None:
        c = self.config
        k = c.factors
        diag = np.r_[np.ones(k), 1.0]  # regularise factors and bias alike
        for _ in range(c.iterations):
            t = self._with_negatives(obs, rng)
            # users: features [q_i, 1], target r - mu - b_i
            r = t.copy()
            r.data = r.data - self.mu - self.bi[r.indices]
            z = _ridge_side(r, np.c_[self.q, np.ones(len(self.q))], c.regularization, diag)
            self.p, self.bu = z[:, :k], z[:, k]
            # items: features [p_u, 1], target r - mu - b_u
            tt = t.T.tocsr()
            r = tt.copy()
            r.data = r.data - self.mu - self.bu[r.indices]
            z = _ridge_side(r, np.c_[self.p, np.ones(len(self.p))], c.regularization, diag)
            self.q, self.bi = z[:, :k], z[:, k]

    def _fit_sgd(self, obs: sp.csr_matrix, rng: np.random.Generator) -> None:
        import torch

        c = self.config
        torch.manual_seed(c.seed)
        params = [torch.tensor(x, requires_grad=True) for x in (self.p, self.q, self.bu, self.bi)]
        opt = torch.optim.Adam(params, lr=c.lr)
        p, q, bu, bi = params
        for _ in range(c.iterations):
            t = self._with_negatives(obs, rng).tocoo()
            order = rng.permutation(t.nnz)
            for lo in range(0, t.nnz, c.batch_size):
                sel = order[lo : lo + c.batch_size]
                u = torch.from_numpy(t.row[sel].astype(np.int64))
                i = torch.from_numpy(t.col[sel].astype(np.int64))
                y = torch.from_numpy(t.data[sel])
                pred = self.mu + bu[u] + bi[i] + (p[u] * q[i]).sum(-1)
                reg = (
                    c.regularization
                    * ((p[u] ** 2).sum(-1) + (q[i] ** 2).sum(-1) + bu[u] ** 2 + bi[i] ** 2).mean()
                )
                loss = ((pred - y) ** 2).mean() + reg
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.p, self.q, self.bu, self.bi = (x.detach().numpy() for x in params)

    def fold_in(self, history: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        """Closed-form ``(p_u, b_u)`` for users given their history (values as targets)."""
        k = self.config.factors
        r = history.astype(np.float64).tocsr().copy()
        r.data = r.data - self.mu - self.bi[r.indices]
        feats = np.c_[self.q.astype(np.float64), np.ones(len(self.q))]
        z = _ridge_side(r, feats, self.config.regularization, np.r_[np.ones(k), 1.0])
        return z[:, :k].astype(np.float32), z[:, k].astype(np.float32)

    def _score_batch(self, batch: UserBatch) -> np.ndarray:
        users = batch.users
        p = np.zeros((len(users), self.config.factors), np.float32)
        b = np.zeros(len(users), np.float32)
        known = users >= 0
        p[known], b[known] = self.p[users[known]], self.bu[users[known]]
        if (~known).any():
            p[~known], b[~known] = self.fold_in(batch.history[~known])
        return self.mu + b[:, None] + self.bi[None, :] + p @ self.q.T

    def _item_similarity(self, items: np.ndarray) -> np.ndarray:
        return cosine_rows(self.q, items)

    def _state(self) -> dict[str, np.ndarray]:
        return {"p": self.p, "q": self.q, "bu": self.bu, "bi": self.bi, "mu": np.asarray([self.mu])}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.p, self.q, self.bu, self.bi = (arrays[k] for k in ("p", "q", "bu", "bi"))
        self.mu = float(arrays["mu"][0])
