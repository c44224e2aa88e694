"""Fusion: one item vector from per-modality vectors, and a learned map from content to behaviour.

:func:`fuse` combines L2-normalised modality vectors by weights. Each block is scaled by the square
root of its weight and the result renormalised over the blocks the item has, so every fused vector
has unit length and the cosine of two fused vectors is ``sum_shared(w * cos) / sqrt(W_a * W_b)``
(``W``: the total weight of the modalities an item has). For two items with the same modalities
that is the weighted mean of their per-modality cosines; a modality one item lacks counts less
against the pair than a present but unrelated (orthogonal) one would, and shrinks no vector.

:class:`ContentProjection` is the learned fusion: a ridge regression from content vectors to the
item factors a collaborative model learned from behaviour. Fitted on items people have played, it
places a new item, from its content alone, where the behaviour model would have put it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from avrec.errors import ConfigError, NotFittedError
from avrec.features.base import l2_normalise

__all__ = ["ContentProjection", "fuse"]


def fuse(
    parts: Mapping[str, np.ndarray | None], weights: Mapping[str, float]
) -> tuple[np.ndarray, list[tuple[str, int, int]]]:
    """The fused vectors and their layout ``[(modality, start, end)]``.

    Args:
        parts: modality -> ``n x d`` vectors (zero rows: the item lacks it); ``None`` is skipped.
        weights: modality -> weight; modalities without a positive weight are left out.

    Raises:
        ConfigError: no modality has both vectors and a positive weight.
    """
    used = [(m, v) for m, v in parts.items() if v is not None and weights.get(m, 0.0) > 0]
    if not used:
        raise ConfigError(f"nothing to fuse: modalities {sorted(parts)} vs weights {dict(weights)}")
    n = len(used[0][1])
    blocks, layout, present = [], [], np.zeros(n, np.float64)
    start = 0
    for m, v in used:
        v = np.asarray(v, np.float32)
        has = np.linalg.norm(v, axis=1) > 0
        w = float(weights[m])
        blocks.append(l2_normalise(v) * np.sqrt(w))
        present += has * w
        layout.append((m, start, start + v.shape[1]))
        start += v.shape[1]
    fused = np.concatenate(blocks, axis=1)
    fused /= np.sqrt(np.maximum(present, 1e-12))[:, None].astype(np.float32)
    return fused.astype(np.float32), layout


class ContentProjection:
    """Ridge regression from content vectors to collaborative item factors.

    Args:
        reg: L2 penalty, relative to the mean squared norm of the content vectors.
    """

    def __init__(self, reg: float = 1.0) -> None:
        if reg < 0:
            raise ConfigError("reg must be >= 0")
        self.reg = reg
        self.weights: np.ndarray | None = None
        self.bias: np.ndarray | None = None

    def fit(self, content: np.ndarray, factors: np.ndarray) -> ContentProjection:
        """Learn ``W`` with ``content @ W + b ~ factors`` (rows: items with behaviour)."""
        x = np.asarray(content, np.float64)
        y = np.asarray(factors, np.float64)
        if len(x) != len(y) or len(x) == 0:
            raise ConfigError(f"need matching, non-empty rows: {len(x)} content vs {len(y)}")
        xm, ym = x.mean(axis=0), y.mean(axis=0)
        xc, yc = x - xm, y - ym
        d = x.shape[1]
        lam = self.reg * max(float((xc**2).sum()) / d, 1e-12)
        if d <= len(x):
            gram = xc.T @ xc + lam * np.eye(d)
            w = np.linalg.solve(gram, xc.T @ yc)
        else:  # more dimensions than items: solve in the dual
            k = xc @ xc.T + lam * np.eye(len(x))
            w = xc.T @ np.linalg.solve(k, yc)
        self.weights = w.astype(np.float32)
        self.bias = (ym - xm @ w).astype(np.float32)
        return self

    def transform(self, content: np.ndarray) -> np.ndarray:
        """Predicted factors for any items, behaviour or not."""
        if self.weights is None or self.bias is None:
            raise NotFittedError("ContentProjection.fit has not been called")
        return np.asarray(content, np.float32) @ self.weights + self.bias
