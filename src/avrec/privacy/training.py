"""Differentially private training: the Gram matrix of a closed-form model, private.

EASE (and any model built on item-item co-occurrence) learns from ``G = X^T X``. Released
as a model, ``G`` says which items people played together; here it is made user-level
``(epsilon, delta)``-DP before the model is solved from it:

1. **Bounding.** Each user keeps at most ``items_per_user`` of their items (a uniform
   sample), so one user changes the upper triangle of ``G`` (diagonal included) by at most
   ``sqrt(c (c + 1) / 2)`` in L2 for ``c`` items.
2. **Noise.** Gaussian noise on that triangle, mirrored, at the scale OpenDP calibrates for
   ``(epsilon, delta)`` at that sensitivity (``make_gaussian`` under zero-concentrated DP,
   converted to approximate DP). The noise itself is drawn by numpy, not OpenDP: for a
   catalogue of ``n`` items there are ``n (n + 1) / 2`` draws, far too many for OpenDP's
   Python calls; numpy's floating-point Gaussian is not hardened against the
   floating-point attacks OpenDP guards against, which the manifest says.

The solve that follows (EASE's inverse) is post-processing. Scoring uses each user's own
history, as the non-private model does. The accounting travels in the model's manifest
(``privacy``) and ``avrec evaluate`` prints it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse as sp

from avrec.errors import ConfigError

__all__ = ["bound_rows", "gaussian_scale", "private_gram"]


def bound_rows(x: sp.csr_matrix, items_per_user: int, rng: np.random.Generator) -> sp.csr_matrix:
    """``x`` (users x items, 0/1) with each row kept to at most ``items_per_user`` of its
    items, a uniform sample."""
    x = sp.csr_matrix(x, copy=True)
    x.eliminate_zeros()  # a stored zero is no play
    x.data[:] = 1.0
    keep = np.ones(x.nnz, bool)
    counts = np.diff(x.indptr)
    for u in np.flatnonzero(counts > items_per_user):
        lo, hi = x.indptr[u], x.indptr[u + 1]
        drop = rng.choice(hi - lo, size=hi - lo - items_per_user, replace=False)
        keep[lo + drop] = False
    x.data = x.data * keep
    x.eliminate_zeros()
    return x


def gaussian_scale(epsilon: float, delta: float, sensitivity: float) -> float:
    """The Gaussian noise scale for ``(epsilon, delta)``-DP at this L2 sensitivity (OpenDP's
    Gaussian mechanism, zCDP converted to approximate DP)."""
    import opendp.prelude as dp

    if not (epsilon > 0 and 0 < delta < 1):
        raise ConfigError(f"need epsilon > 0 and 0 < delta < 1, got {epsilon}, {delta}")
    dp.enable_features("contrib")
    space = (dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.l2_distance(T=float))

    def make(scale: float) -> Any:
        m = dp.m.make_gaussian(*space, scale=scale)
        return dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(m), delta=delta)

    return float(dp.binary_search_param(make, d_in=float(sensitivity), d_out=(epsilon, delta)))


def private_gram(
    x: sp.csr_matrix,
    epsilon: float,
    delta: float,
    items_per_user: int,
    seed: int | None = None,
    dtype: Any = np.float64,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The user-level ``(epsilon, delta)``-DP Gram matrix of ``x`` and its accounting."""
    rng = np.random.default_rng(seed)
    xb = bound_rows(x, items_per_user, rng)
    g = (xb.T @ xb).toarray().astype(dtype)
    c = items_per_user
    sensitivity = math.sqrt(c * (c + 1) / 2)
    scale = gaussian_scale(epsilon, delta, sensitivity)
    n = g.shape[0]
    for lo in range(0, n, 1024):  # the upper triangle by blocks of rows, mirrored
        hi = min(n, lo + 1024)
        block = rng.normal(0.0, scale, size=(hi - lo, n)).astype(dtype)
        rows = np.arange(lo, hi)[:, None]
        block[np.arange(n)[None, :] < rows] = 0.0  # keep j >= i
        g[lo:hi] += block
    for lo in range(0, n, 1024):  # the lower triangle from the noised upper one, in place
        hi = min(n, lo + 1024)
        g[lo:hi, :lo] = g[:lo, lo:hi].T
        sub = g[lo:hi, lo:hi]
        g[lo:hi, lo:hi] = np.triu(sub) + np.triu(sub, 1).T
    # the noise has eigenvalues down to about -2 scale sqrt(n) (a Wigner matrix): a ridge of
    # that size keeps the noisy Gram positive definite (post-processing, no privacy cost)
    shift = 2.2 * scale * math.sqrt(n)
    g[np.diag_indices(n)] += shift
    return g, {
        "mechanism": "gaussian (OpenDP calibration, numpy draws) on the Gram matrix",
        "epsilon": float(epsilon),
        "delta": float(delta),
        "unit": "user",
        "items_per_user": int(c),
        "l2_sensitivity": sensitivity,
        "noise_scale": scale,
        "ridge_added": shift,
    }
