from __future__ import annotations

import numpy as np
import pytest

from avrec.errors import ConfigError, DataError, NotFittedError
from avrec.retrieval import VectorIndex


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    # clustered vectors, as item embeddings are
    centres = rng.normal(size=(40, 32))
    x = centres[rng.integers(0, 40, 5000)] + 0.3 * rng.normal(size=(5000, 32))
    q = centres[rng.integers(0, 40, 40)] + 0.3 * rng.normal(size=(40, 32))
    return x.astype(np.float32), q.astype(np.float32)


def brute(x, q, k, allowed=None, exclude=None):
    s = q @ x.T
    if allowed is not None:
        s[:, ~allowed] = -np.inf
    if exclude is not None:
        for r, ex in enumerate(exclude):
            s[r, ex] = -np.inf
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def test_exact_equals_brute_force(data):
    x, q = data
    idx = VectorIndex("exact").build(x)
    assert idx.built_kind == "exact"
    res = idx.search(q, 10)
    np.testing.assert_array_equal(res.indices, brute(x, q, 10))
    np.testing.assert_allclose(res.scores, np.take_along_axis(q @ x.T, res.indices, 1), rtol=1e-5)


@pytest.mark.parametrize("kind", ["hnsw", "ivf", "ivfsq8"])
def test_approximate_kinds_have_measured_recall(data, kind):
    x, q = data
    idx = VectorIndex(kind, nprobe=32).build(x)
    assert idx.built_kind == kind
    assert idx.recall(x, q, 10) >= 0.9


def test_product_codes_trade_recall_for_memory(data):
    x, q = data
    pq = VectorIndex("ivfpq", memory_mb=5000 * 24 / 2**20, nprobe=32).build(x)
    assert pq.built_kind == "ivfpq" and pq.index.pq.M == 16  # 16 bytes + 8 for the id fit
    assert pq.recall(x, q, 10) >= 0.6  # lossy: measured, not assumed
    small = VectorIndex("ivfpq", memory_mb=5000 * 12 / 2**20, nprobe=32).build(x)
    assert small.index.pq.M == 4  # 8 bytes of codes would not fit with the id: the next down
    assert small.recall(x, q, 10) < pq.recall(x, q, 10)


def test_auto_fits_the_memory_budget():
    """Exact while small, HNSW while its graph fits, then the largest codes that fit."""
    idx = VectorIndex("auto", memory_mb=2048)
    assert idx.choose_kind(40_000, 64) == "exact"
    assert idx.choose_kind(1_000_000, 64) == "hnsw"
    assert idx.choose_kind(3_000_000, 64) == "ivf"  # past hnsw_max: full floats fit in 0.8 GB
    assert idx.choose_kind(10_000_000, 64) == "ivfsq8"  # floats 2.6 GB: 8-bit codes 0.7 GB
    assert idx.choose_kind(40_000_000, 64) == "ivfpq"
    assert VectorIndex("auto", memory_mb=400).choose_kind(1_000_000, 64) == "ivf"
    assert VectorIndex("hnsw").choose_kind(10, 64) == "hnsw"  # a named kind is kept
    with pytest.raises(ConfigError):
        VectorIndex(memory_mb=0)


def test_nprobe_is_calibrated_to_the_target_recall(data):
    x, q = data
    lo = VectorIndex("ivfsq8", target_recall=0.5).build(x)
    hi = VectorIndex("ivfsq8", target_recall=0.97).build(x)
    assert lo.calibration["recall"] >= 0.5 and hi.calibration["recall"] >= 0.97
    assert lo.index.nprobe < hi.index.nprobe  # more recall: more lists, chosen by measuring
    assert hi.recall(x, q, 10) >= 0.9  # and it holds on queries calibration never saw


def test_codes_too_coarse_for_the_target_stop_where_recall_stops_growing(data):
    """Product codes of 4 bytes never reach 0.999: not every list (slow, no better) but the
    fewest within 1% of what every list gives."""
    x, _ = data
    idx = VectorIndex("ivfpq", memory_mb=5000 * 12 / 2**20, target_recall=0.999).build(x)
    chosen, nlist = idx.index.nprobe, idx.index.nlist
    idx.index.nprobe = nlist
    q = x[:200]
    ceiling = idx.recall(x, q, 10)
    assert chosen < nlist / 2
    assert idx.calibration["recall"] < 0.999 and idx.calibration["recall"] >= 0.95 * ceiling


@pytest.mark.parametrize("kind", ["ivf", "ivfsq8", "ivfpq"])
def test_saved_inverted_file_is_memory_mapped(data, kind, tmp_path):
    x, q = data
    idx = VectorIndex(kind, memory_mb=1.0).build(x)
    idx.save(tmp_path / "index.faiss")
    again = VectorIndex.open(tmp_path / "index.faiss", kind)
    assert type(again.index.invlists).__name__ != "ArrayInvertedLists"  # mapped, not read
    assert again.index.nprobe == idx.index.nprobe  # the calibrated value travels
    np.testing.assert_array_equal(again.search(q, 10).indices, idx.search(q, 10).indices)
    rng = np.random.default_rng(3)
    allowed = rng.random(len(x)) < 0.02  # few allowed: every list, the allowed items only
    res = again.search(q[:5], 10, allowed=allowed)
    assert (res.indices >= 0).all() and all(allowed[r].all() for r in res.indices)
    with pytest.raises(DataError):
        (tmp_path / "bad.faiss").write_bytes(b"not an index")
        VectorIndex.open(tmp_path / "bad.faiss", kind)


def test_auto_picks_exact_for_small_and_hnsw_for_large(data):
    x, _ = data
    assert VectorIndex("auto").build(x).built_kind == "exact"
    assert VectorIndex("auto", exact_max=1000).build(x).built_kind == "hnsw"


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf", "ivfsq8"])
def test_filters_never_cost_k(data, kind):
    x, q = data
    rng = np.random.default_rng(1)
    allowed = rng.random(len(x)) < 0.05  # a rare category: about 250 items
    exclude = [rng.choice(len(x), 1000, replace=False) for _ in range(len(q))]
    idx = VectorIndex(kind, nprobe=64).build(x)
    res = idx.search(q, 20, allowed=allowed, exclude=exclude)
    assert (res.indices >= 0).all(), "K results although far fewer than K of the top pass"
    for r in range(len(q)):
        assert allowed[res.indices[r]].all()
        assert not set(res.indices[r]) & set(exclude[r])
    if kind == "exact":
        np.testing.assert_array_equal(res.indices, brute(x, q, 20, allowed, exclude))


def test_fewer_than_k_pass(data):
    x, q = data
    allowed = np.zeros(len(x), bool)
    allowed[[3, 7]] = True
    res = VectorIndex("exact").build(x).search(q[:2], 5, allowed=allowed)
    assert set(res.indices[0][:2]) == {3, 7} and (res.indices[:, 2:] == -1).all()
    assert np.isneginf(res.scores[:, 2:]).all()


def test_normalise_makes_it_cosine(data):
    x, q = data
    idx = VectorIndex("exact", normalise=True).build(x * 7.0)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    np.testing.assert_array_equal(idx.search(q, 5).indices, brute(xn, qn, 5))


def test_round_trip_bytes(data):
    x, q = data
    for kind in ("exact", "hnsw"):
        idx = VectorIndex(kind).build(x)
        again = VectorIndex.from_bytes(idx.to_bytes(), kind)
        np.testing.assert_array_equal(again.search(q, 10).indices, idx.search(q, 10).indices)


def test_mistakes(data):
    x, q = data
    with pytest.raises(ConfigError):
        VectorIndex("annoy")
    with pytest.raises(NotFittedError):
        VectorIndex().search(q, 3)
    with pytest.raises(DataError):
        VectorIndex().build(np.zeros(5))
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(DataError):
        VectorIndex().build(bad)
    idx = VectorIndex().build(x)
    with pytest.raises(ConfigError):
        idx.search(q[:, :5], 3)
    with pytest.raises(ConfigError):
        idx.search(q, 0)
    with pytest.raises(ConfigError):
        idx.search(q, 3, allowed=np.ones(3, bool))


@pytest.mark.parametrize("kind", ["hnsw", "ivf", "ivfsq8"])
def test_filtered_search_inside_faiss(data, kind):
    """Many allowed items: the bitmap selector path (not the exact subset), still full K."""
    x, q = data
    rng = np.random.default_rng(2)
    allowed = rng.random(len(x)) < 0.3
    idx = VectorIndex(kind, exact_max=1000, nprobe=32).build(x)
    res = idx.search(q, 10, allowed=allowed)
    assert (res.indices >= 0).all() and all(allowed[r].all() for r in res.indices)
    truth = brute(x, q, 10, allowed)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, res.indices, strict=True)])
    assert recall >= 0.85
