"""Significance: paired bootstrap confidence intervals and paired tests on per-user metrics."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

__all__ = ["bootstrap_ci", "paired_test", "weighted_mean"]


def weighted_mean(values: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Mean of ``values`` ignoring NaN, optionally weighted."""
    v = np.asarray(values, dtype=np.float64)
    w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=np.float64)
    ok = ~np.isnan(v)
    if not ok.any() or w[ok].sum() == 0:
        return float("nan")
    return float((v[ok] * w[ok]).sum() / w[ok].sum())


def _boot_means(v: np.ndarray, w: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = len(v)
    out = np.empty(n_boot)
    chunk = max(1, 5_000_000 // max(n, 1))
    for lo in range(0, n_boot, chunk):
        m = min(chunk, n_boot - lo)
        idx = rng.integers(0, n, size=(m, n))
        out[lo : lo + m] = (v[idx] * w[idx]).sum(axis=1) / np.maximum(w[idx].sum(axis=1), 1e-300)
    return out


def bootstrap_ci(
    values: np.ndarray,
    weights: np.ndarray | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean and percentile bootstrap interval over users (resampled with replacement).

    Returns:
        ``(mean, low, high)``; NaN values (users a metric does not apply to) are left out.
    """
    v = np.asarray(values, dtype=np.float64)
    w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=np.float64)
    ok = ~np.isnan(v)
    v, w = v[ok], w[ok]
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = weighted_mean(v, w)
    if len(v) == 1 or n_boot <= 0:
        return mean, mean, mean
    boots = _boot_means(v, w, n_boot, seed)
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return mean, float(lo), float(hi)


def paired_test(
    a: np.ndarray,
    b: np.ndarray,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    weights: np.ndarray | None = None,
) -> dict[str, Any]:
    """Compare two models on the same users.

    Args:
        weights: per-user weights of the mean (GAUC weighs users by their targets); the
            bootstrap resamples users and keeps their weights.

    Returns:
        ``diff`` (weighted mean of a - b), its bootstrap interval ``ci_low``/``ci_high``,
        ``p_value`` (two-sided paired bootstrap under the null of zero mean difference; the
        t-test's when ``n_boot`` is 0), ``p_ttest`` (paired t-test) and ``p_wilcoxon``
        (signed-rank; both unweighted; 1.0 when every difference is zero).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired vectors differ in shape: {a.shape} vs {b.shape}")
    w_all = np.ones_like(a) if weights is None else np.asarray(weights, dtype=np.float64)
    ok = ~(np.isnan(a) | np.isnan(b)) & (w_all > 0)
    d = a[ok] - b[ok]
    w = w_all[ok]
    if len(d) == 0:
        nan = float("nan")
        return {
            "diff": nan,
            "ci_low": nan,
            "ci_high": nan,
            "p_value": nan,
            "p_ttest": nan,
            "p_wilcoxon": nan,
            "users": 0,
        }
    mean = float((d * w).sum() / w.sum())
    if np.all(d == 0):
        p_t = p_w = 1.0
    else:
        p_t = float(stats.ttest_rel(a[ok], b[ok]).pvalue)
        p_w = float(stats.wilcoxon(d).pvalue)
    if n_boot <= 0 or len(d) < 2:
        return {
            "diff": mean,
            "ci_low": mean,
            "ci_high": mean,
            "p_value": p_t,
            "p_ttest": p_t,
            "p_wilcoxon": p_w,
            "users": int(len(d)),
        }
    boots = _boot_means(d, w, n_boot, seed)
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    centred = boots - mean  # the bootstrap distribution shifted to the null
    p_boot = float((np.abs(centred) >= abs(mean)).mean()) if mean != 0 else 1.0
    return {
        "diff": mean,
        "ci_low": float(lo),
        "ci_high": float(hi),
        "p_value": p_boot,
        "p_ttest": p_t,
        "p_wilcoxon": p_w,
        "users": int(len(d)),
    }
