"""Federated matrix factorisation: each person's events and factors stay on their device.

The objective is implicit-feedback ALS's (Hu, Koren and Volinsky, 2008), the one
:class:`avrec.models.ALS` minimises centrally:

    sum_u sum_i c_ui (p_ui - x_u . y_i)^2 + lambda (sum_u |x_u|^2 + sum_i |y_i|^2)

with ``p_ui = 1`` and ``c_ui = alpha r_ui`` on a person's items, ``p = 0`` and ``c = 1``
elsewhere. The server holds the item factors ``Y``; each client holds one person's events
and their factors ``x_u`` (Federated Collaborative Filtering, Ammad-ud-din et al., 2019).
A round:

1. The server sends ``Y`` to the round's clients (a uniform fraction of them).
2. Each client solves its ``x_u`` in closed form (ALS's user step, on the device) and
   answers with three sums' worth of its own terms: the gradient of its part of the
   objective with respect to ``Y`` (``n_items x k``), ``x_u x_u^T`` (``k x k``) and, per
   item, ``(c_ui - 1) |x_u|^2`` (``n_items``; zero off its items). Every part is a sum
   over clients, so the server needs only the total (what secure aggregation reveals).
3. The server takes a damped Newton step per item. ALS's exact item step needs
   ``sum_u c_ui x_u x_u^T`` per item, ``n_items x k^2`` numbers from each client (27 MB at
   k = 64); here its common part ``X^T X`` is exact and the rest, which only a person's
   own items add, is approximated by ``t_i / k`` times the identity, ``t_i`` the item's
   sum of ``(c_ui - 1) |x_u|^2``. All items are solved at once from one eigendecomposition
   of ``X^T X``.

With differential privacy (DP-FedAvg, McMahan et al., 2018) each client's answer is
clipped to an L2 norm and the server adds Gaussian noise to the sum; the clients of a
round are a Poisson sample, and Opacus's RDP accountant gives the user-level
``(epsilon, delta)`` of the released item factors after all rounds.

The math here is plain numpy on arrays, the same for every engine: ``"flower"`` runs it
as a Flower simulation (:mod:`avrec.privacy.flower`), one virtual client per person, on
Ray; ``"inprocess"`` calls the same client function in a loop (the tests, and a cheap
check of the math).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = [
    "ClientUpdate",
    "account",
    "client_update",
    "clip_update",
    "server_step",
    "solve_user",
]


@dataclass
class ClientUpdate:
    """One client's answer in a round: every field is summed over clients."""

    grad: np.ndarray  # n_items x k: d(its loss) / dY, halved
    outer: np.ndarray  # k x k: x x^T
    curvature: np.ndarray  # n_items: (c_ui - 1) |x|^2 on its items, 0 elsewhere

    def arrays(self) -> list[np.ndarray]:
        return [self.grad, self.outer, self.curvature]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays())

    def norm(self) -> float:
        return math.sqrt(sum(float(np.sum(a.astype(np.float64) ** 2)) for a in self.arrays()))

    def __add__(self, other: ClientUpdate) -> ClientUpdate:
        return ClientUpdate(*(a + b for a, b in zip(self.arrays(), other.arrays(), strict=True)))

    def scaled(self, f: float) -> ClientUpdate:
        return ClientUpdate(*(a * f for a in self.arrays()))


def solve_user(
    y: np.ndarray,
    items: np.ndarray,
    weights: np.ndarray,
    alpha: float,
    regularization: float,
    gram: np.ndarray | None = None,
) -> np.ndarray:
    """ALS's closed-form user step for one person: ``x`` from their items and ``Y``."""
    y = y.astype(np.float64, copy=False)
    k = y.shape[1]
    gram = y.T @ y if gram is None else gram
    yi = y[items]
    c = alpha * weights.astype(np.float64)
    a = gram + (yi.T * (c - 1.0)) @ yi + regularization * np.eye(k)
    b = yi.T @ c
    return np.linalg.solve(a, b)


def client_update(
    y: np.ndarray,
    items: np.ndarray,
    weights: np.ndarray,
    alpha: float,
    regularization: float,
    gram: np.ndarray | None = None,
) -> tuple[np.ndarray, ClientUpdate]:
    """A client's round: its factors (kept) and its update (sent).

    The gradient of ``sum_i c_i (p_i - x . y_i)^2`` with respect to ``y_i`` is
    ``2 c_i (x . y_i - p_i) x``: ``(Y x) x^T`` over all items, plus a correction on the
    person's own items (the factor 2 is left out, as in the server's step).
    """
    x = solve_user(y, items, weights, alpha, regularization, gram)
    y64 = y.astype(np.float64, copy=False)
    c = alpha * weights.astype(np.float64)
    pred = y64 @ x  # x . y_i for every item
    resid = pred.copy()  # c_i (x . y_i - p_i): c = 1, p = 0 off the person's items
    resid[items] = c * (pred[items] - 1.0)
    grad = np.outer(resid, x)
    curvature = np.zeros(len(y64))
    curvature[items] = (c - 1.0) * float(x @ x)
    return x.astype(np.float32), ClientUpdate(grad, np.outer(x, x), curvature)


def clip_update(update: ClientUpdate, max_norm: float) -> ClientUpdate:
    """The update scaled down to L2 norm ``max_norm`` (DP-FedAvg's per-client clipping)."""
    norm = update.norm()
    return update if norm <= max_norm else update.scaled(max_norm / norm)


def server_step(
    y: np.ndarray,
    total: ClientUpdate,
    regularization: float,
    learning_rate: float = 1.0,
    floor: float = 0.0,
) -> np.ndarray:
    """The item factors after one round, from the sum of the clients' updates.

    ``total`` is scaled to the whole population already (a sample's sum divided by the
    sampling rate). Each item moves by ``-lr H_i^{-1} g_i`` with
    ``H_i = X^T X + (lambda + t_i / k) I`` and ``g_i`` its gradient plus ``lambda y_i``;
    ``X^T X``'s eigenvalues are raised to at least ``floor`` (the noise level under DP).
    """
    y64 = y.astype(np.float64)
    k = y64.shape[1]
    outer = (total.outer + total.outer.T) / 2.0  # symmetric even with noise
    evals, evecs = np.linalg.eigh(outer)
    evals = np.maximum(evals, floor)  # noise may push an eigenvalue below zero
    g = total.grad + regularization * y64
    shift = regularization + np.maximum(total.curvature, 0.0) / k
    coords = g @ evecs  # n_items x k, in X^T X's eigenbasis
    coords /= evals[None, :] + shift[:, None]
    return (y64 - learning_rate * coords @ evecs.T).astype(np.float32)


def add_noise(total: ClientUpdate, std: float, rng: np.random.Generator) -> ClientUpdate:
    """``total`` with Gaussian noise of this standard deviation on every coordinate."""
    return ClientUpdate(*(a + rng.normal(0.0, std, a.shape) for a in total.arrays()))


def finish_round(
    y: np.ndarray, total: ClientUpdate, config: Any, rng: np.random.Generator
) -> np.ndarray:
    """The server's side of a round, from the (clipped) clients' sum: noise when DP is on,
    scaled from the sample to the population, one step."""
    floor = 0.0
    if config.dp_epsilon is not None:
        std = noise_multiplier(config) * config.dp_clip
        total = add_noise(total, std, rng)
        # the noise on X^T X has eigenvalues up to about 2 std sqrt(k): below that the
        # curvature is noise, and dividing by it would blow the step up (post-processing)
        floor = 2.0 * std * math.sqrt(y.shape[1]) / config.fraction
    return server_step(y, total.scaled(1.0 / config.fraction), config.regularization,
                       config.learning_rate, floor)  # fmt: skip


def sample_clients(n: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A round's clients: each with probability ``fraction`` (Poisson sampling, which the
    accountant assumes); all of them at 1."""
    if fraction >= 1.0:
        return np.arange(n)
    return np.flatnonzero(rng.random(n) < fraction)


def client_round(
    y: np.ndarray, items: np.ndarray, weights: np.ndarray, config: Any,
    gram: np.ndarray | None = None,
) -> tuple[np.ndarray, ClientUpdate]:  # fmt: skip
    """What a client does with the item factors it is sent: solve, update, clip under DP
    or secure aggregation (whose quantisation needs a bound)."""
    x, update = client_update(y, items, weights, config.alpha, config.regularization, gram)
    if config.dp_epsilon is not None or getattr(config, "secure_aggregation", False):
        update = clip_update(update, config.dp_clip)
    return x, update


def train_inprocess(
    x: sp.csr_matrix, config: Any, on_round: Any = None
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The rounds with every client called in this process (no Flower)."""
    rng = np.random.default_rng(config.seed)
    y = initial_factors(x.shape[1], config.factors, config.seed)
    log: list[dict[str, Any]] = []
    for r in range(1, config.rounds + 1):
        start = time.perf_counter()
        gram = y.astype(np.float64).T @ y.astype(np.float64)  # what each client computes
        total: ClientUpdate | None = None
        clients = sample_clients(x.shape[0], config.fraction, rng)
        up = 0
        for u in clients:
            lo, hi = x.indptr[u], x.indptr[u + 1]
            _, update = client_round(y, x.indices[lo:hi], x.data[lo:hi], config, gram)
            up = update.nbytes
            total = update if total is None else total + update
        if total is None:  # nobody drawn this round
            continue
        y = finish_round(y, total, config, rng)
        entry = {"round": r, "clients": int(len(clients)), "bytes_down": int(y.nbytes),
                 "bytes_up": int(up), "seconds": time.perf_counter() - start}  # fmt: skip
        log.append(entry)
        if on_round is not None:
            on_round(r, y, entry)
    return y, log


def noise_multiplier(config: Any) -> float:
    """The Gaussian noise (in units of ``dp_clip``) that spends ``dp_epsilon`` at
    ``dp_delta`` over the configured rounds at the sampling rate (Opacus's RDP accountant)."""
    from opacus.accountants.utils import get_noise_multiplier

    key = (config.dp_epsilon, config.dp_delta, config.fraction, config.rounds)
    if key not in _NOISE:
        _NOISE[key] = float(get_noise_multiplier(
            target_epsilon=config.dp_epsilon, target_delta=config.dp_delta,
            sample_rate=config.fraction, steps=config.rounds, accountant="rdp",
        ))  # fmt: skip
    return _NOISE[key]


_NOISE: dict[tuple[float, float, float, int], float] = {}


def account(noise_multiplier: float, sample_rate: float, rounds: int, delta: float) -> float:
    """The user-level epsilon of ``rounds`` Poisson-sampled Gaussian rounds (Opacus's RDP
    accountant, the same one DP-SGD uses)."""
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(noise_multiplier, sample_rate, rounds)]
    return float(acc.get_epsilon(delta))


def initial_factors(n_items: int, factors: int, seed: int) -> np.ndarray:
    """Small random item factors, as ALS starts."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n_items, factors)) * 0.01).astype(np.float32)


def privacy_record(config: Any) -> dict[str, Any]:
    """The accounting that travels in a DP model's manifest: the epsilon spent, from the
    noise actually used (at most ``dp_epsilon``, by the accountant's tolerance)."""
    sigma = noise_multiplier(config)
    sample_rate = config.fraction
    return {
        "mechanism": "DP-FedAvg: per-client L2 clipping, Gaussian noise on the sum "
        "(numpy draws), Poisson sampling of clients; Opacus RDP accountant",
        "epsilon": account(sigma, sample_rate, config.rounds, config.dp_delta),
        "target_epsilon": float(config.dp_epsilon),
        "delta": float(config.dp_delta),
        "unit": "user",
        "clip": float(config.dp_clip),
        "noise_multiplier": sigma,
        "sample_rate": float(sample_rate),
        "rounds": int(config.rounds),
        "released": "item factors (user factors stay on the clients)",
    }
