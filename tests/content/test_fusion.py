"""fuse (weighted concatenation) and ContentProjection (ridge from content to item factors)."""

from __future__ import annotations

import numpy as np
import pytest

from avrec.content.fusion import ContentProjection, fuse
from avrec.errors import ConfigError, NotFittedError


def _cos(u: np.ndarray, v: np.ndarray) -> float:
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))


def _parts(seed: int = 0, n: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"a": rng.normal(size=(n, 5)), "b": rng.normal(size=(n, 3)) * 10.0}


def test_fused_rows_unit_norm():
    parts = _parts()
    parts["b"][1] = 0.0  # item 1 lacks "b"
    parts["a"][2] = 0.0  # item 2 lacks "a"
    parts["a"][3] = 0.0
    parts["b"][3] = 0.0  # item 3 has nothing
    fused, _ = fuse(parts, {"a": 1.0, "b": 3.0})
    assert fused.dtype == np.float32
    assert fused.shape == (4, 8)
    norms = np.linalg.norm(fused, axis=1)
    np.testing.assert_allclose(norms[:3], 1.0, rtol=1e-5)
    assert norms[3] == 0.0


def test_cosine_is_weighted_mean_of_modality_cosines():
    parts = _parts(1, n=2)
    w = {"a": 1.0, "b": 3.0}
    fused, _ = fuse(parts, w)
    ca = _cos(parts["a"][0], parts["a"][1])
    cb = _cos(parts["b"][0], parts["b"][1])
    expected = (1.0 * ca + 3.0 * cb) / 4.0
    assert _cos(fused[0], fused[1]) == pytest.approx(expected, abs=1e-5)
    assert float(fused[0] @ fused[1]) == pytest.approx(expected, abs=1e-5)


def test_missing_modality_not_counted_as_mismatch():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(1, 5))
    b = rng.normal(size=(1, 3))
    w = {"a": 1.0, "b": 3.0}
    # items 0 and 1 are identical in "a"; item 1 has no "b"
    fused, _ = fuse({"a": np.vstack([a, a]), "b": np.vstack([b, 0 * b])}, w)
    got = float(fused[0] @ fused[1])
    # sum over shared modalities of w * cos, over sqrt(total weight of each item)
    assert got == pytest.approx(1.0 * 1.0 / np.sqrt((1.0 + 3.0) * 1.0), abs=1e-5)
    # a present but unrelated "b" (orthogonal) is a mismatch and scores lower
    b_orth = np.array([[b[0, 1], -b[0, 0], 0.0]])
    assert float((b @ b_orth.T)[0, 0]) == pytest.approx(0.0)
    fused2, _ = fuse({"a": np.vstack([a, a]), "b": np.vstack([b, b_orth])}, w)
    mismatch = float(fused2[0] @ fused2[1])
    assert mismatch == pytest.approx(1.0 / 4.0, abs=1e-5)
    assert got > mismatch
    # the missing modality does not shrink the other item's vector
    assert np.linalg.norm(fused[1]) == pytest.approx(1.0, abs=1e-5)


def test_both_missing_same_modality_gives_shared_cosine():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(2, 5))
    b = rng.normal(size=(2, 3))
    b[:] = 0.0  # neither has "b": only "a" is compared, at full strength
    fused, _ = fuse({"a": a, "b": b}, {"a": 1.0, "b": 3.0})
    assert float(fused[0] @ fused[1]) == pytest.approx(_cos(a[0], a[1]), abs=1e-5)


def test_zero_weight_and_none_modalities_ignored():
    parts = _parts(4)
    parts["c"] = np.random.default_rng(5).normal(size=(4, 7))
    parts["d"] = None
    fused, layout = fuse(parts, {"a": 1.0, "b": 2.0, "c": 0.0, "d": 5.0})
    ref, ref_layout = fuse({"a": parts["a"], "b": parts["b"]}, {"a": 1.0, "b": 2.0})
    assert [m for m, _, _ in layout] == ["a", "b"]
    assert layout == ref_layout
    np.testing.assert_allclose(fused, ref)
    # a negative weight and a modality without a weight are left out too
    fused3, layout3 = fuse(parts, {"a": 1.0, "b": -1.0})
    assert [m for m, _, _ in layout3] == ["a"]
    assert fused3.shape == (4, 5)


def test_nothing_to_fuse_raises():
    parts = _parts()
    with pytest.raises(ConfigError):
        fuse(parts, {})
    with pytest.raises(ConfigError):
        fuse(parts, {"a": 0.0, "b": 0.0})
    with pytest.raises(ConfigError):
        fuse({"a": None}, {"a": 1.0})
    with pytest.raises(ConfigError):
        fuse({}, {"a": 1.0})


def test_layout_offsets():
    rng = np.random.default_rng(6)
    parts = {"text": rng.normal(size=(3, 4)), "visual": rng.normal(size=(3, 6))}
    parts["audio"] = rng.normal(size=(3, 2))
    fused, layout = fuse(parts, {"text": 1.0, "visual": 2.0, "audio": 0.5})
    assert layout == [("text", 0, 4), ("visual", 4, 10), ("audio", 10, 12)]
    assert fused.shape == (3, 12)
    # each block is that modality's direction scaled by sqrt(w / total weight)
    total = 3.5
    for m, lo, hi in layout:
        w = {"text": 1.0, "visual": 2.0, "audio": 0.5}[m]
        block = fused[:, lo:hi]
        unit = parts[m] / np.linalg.norm(parts[m], axis=1, keepdims=True)
        np.testing.assert_allclose(block, unit * np.sqrt(w / total), rtol=1e-5, atol=1e-6)


# -- ContentProjection ---------------------------------------------------------------------------


def _linear(n: int, d: int, k: int, seed: int, rank: int | None = None):
    rng = np.random.default_rng(seed)
    if rank is None:
        x = rng.normal(size=(n, d))
    else:  # rows in a low-dimensional subspace: learnable even with d > n
        x = rng.normal(size=(n, rank)) @ rng.normal(size=(rank, d))
    w = rng.normal(size=(d, k))
    b = rng.normal(size=k)
    y = x @ w + b + rng.normal(scale=0.01, size=(n, k))
    return x, x @ w + b, y


def test_projection_primal_recovers_linear_map():
    x, truth, y = _linear(n=300, d=10, k=4, seed=0)
    proj = ContentProjection(reg=1e-4).fit(x[:200], y[:200])
    assert proj.weights.shape == (10, 4) and proj.bias.shape == (4,)
    pred = proj.transform(x[200:])
    assert pred.shape == (100, 4)
    err = np.abs(pred - truth[200:]).max()
    assert err < 0.05, err
    # far better than predicting the mean
    base = np.abs(truth[200:] - y[:200].mean(axis=0)).mean()
    assert np.abs(pred - truth[200:]).mean() < 0.02 * base


def test_projection_dual_recovers_linear_map():
    # d=80 > n=40 training rows: the dual branch; rows live in a 5-d subspace
    x, truth, y = _linear(n=60, d=80, k=3, seed=1, rank=5)
    proj = ContentProjection(reg=1e-6).fit(x[:40], y[:40])
    assert proj.weights.shape == (80, 3)
    pred = proj.transform(x[40:])
    scale = np.abs(truth[40:]).mean()
    assert np.abs(pred - truth[40:]).max() < 0.05 * scale


def test_projection_primal_and_dual_agree():
    # same data, just on either side of d == n: the ridge solution is the same either way
    rng = np.random.default_rng(2)
    x = rng.normal(size=(20, 20))
    y = rng.normal(size=(20, 2))
    primal = ContentProjection(reg=0.5).fit(x, y)  # d <= n
    dual = ContentProjection(reg=0.5).fit(x[:19], y[:19])  # d > n
    assert primal.weights.shape == dual.weights.shape == (20, 2)
    # the dual on 19 rows equals the primal computed by hand on the same 19 rows
    xc = x[:19] - x[:19].mean(0)
    lam = 0.5 * (xc**2).sum() / 20
    w = np.linalg.solve(xc.T @ xc + lam * np.eye(20), xc.T @ (y[:19] - y[:19].mean(0)))
    np.testing.assert_allclose(dual.weights, w, rtol=1e-3, atol=1e-5)


def test_projection_stronger_reg_shrinks_weights():
    x, _, y = _linear(n=100, d=8, k=2, seed=3)
    small = ContentProjection(reg=1e-4).fit(x, y)
    big = ContentProjection(reg=100.0).fit(x, y)
    assert np.linalg.norm(big.weights) < 0.5 * np.linalg.norm(small.weights)
    # heavy shrinkage predicts close to the training mean
    np.testing.assert_allclose(big.transform(x).mean(0), y.mean(0), atol=1e-3)


def test_projection_errors():
    with pytest.raises(NotFittedError):
        ContentProjection().transform(np.zeros((2, 3)))
    with pytest.raises(ConfigError):
        ContentProjection().fit(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ConfigError):
        ContentProjection().fit(np.zeros((0, 2)), np.zeros((0, 2)))
    with pytest.raises(ConfigError):
        ContentProjection(reg=-1.0)
