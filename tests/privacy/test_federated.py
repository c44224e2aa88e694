"""Federated MF (issue 20): the client's update, the server's step, DP-FedAvg, and the same
rounds run as a real Flower simulation on Ray."""

from __future__ import annotations

import importlib.util

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from avrec.data.dataset import Dataset
from avrec.models import create_model, load_model
from avrec.models.factors import als_fold_in
from avrec.models.fedmf import FederatedMFConfig
from avrec.privacy import federated


def _events(n_users: int = 60, n_items: int = 40, seed: int = 0) -> sp.csr_matrix:
    """Two taste groups: users mostly play items of their group."""
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for u in range(n_users):
        group = u % 2
        pool = np.arange(group * n_items // 2, (group + 1) * n_items // 2)
        picks = rng.choice(pool, size=6, replace=False)
        noise = rng.choice(n_items, size=1)
        for i in np.concatenate([picks, noise]):
            rows.append(u)
            cols.append(int(i))
    x = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_users, n_items))
    x.sum_duplicates()
    x.data[:] = 1.0
    return x


def _objective(x: sp.csr_matrix, y: np.ndarray, alpha: float, reg: float) -> float:
    """ALS's loss with every user's factors solved for ``y`` (the clients' best answer)."""
    u = als_fold_in(y, x, alpha, reg).astype(np.float64)
    pred = u @ y.astype(np.float64).T
    c = np.ones_like(pred)
    p = np.zeros_like(pred)
    r, i = x.nonzero()
    c[r, i] = alpha * np.asarray(x[r, i]).ravel()
    p[r, i] = 1.0
    return float(
        (c * (p - pred) ** 2).sum() + reg * ((u**2).sum() + (y.astype(np.float64) ** 2).sum())
    )


def test_client_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    y = rng.normal(0, 0.3, (12, 4))
    items, weights = np.array([1, 5, 7]), np.array([1.0, 2.0, 1.0])
    alpha, reg = 2.0, 0.1
    x, update = federated.client_update(y, items, weights, alpha, reg)

    def loss(yy: np.ndarray) -> float:  # the client's part, x held fixed
        c, p = np.ones(12), np.zeros(12)
        c[items], p[items] = alpha * weights, 1.0
        return float((c * (p - yy @ x.astype(np.float64)) ** 2).sum())

    eps = 1e-6
    num = np.zeros_like(y)
    for i in range(12):
        for k in range(4):
            d = np.zeros_like(y)
            d[i, k] = eps
            num[i, k] = (loss(y + d) - loss(y - d)) / (2 * eps)
    # float32 factors: compare at their precision
    np.testing.assert_allclose(2 * update.grad, num, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(update.outer, np.outer(x, x), rtol=1e-6)
    assert (update.curvature[items] > 0).all() and (np.delete(update.curvature, items) == 0).all()


def test_client_factors_are_als_fold_in():
    rng = np.random.default_rng(2)
    y = rng.normal(0, 0.3, (15, 5)).astype(np.float32)
    h = sp.csr_matrix((np.array([1.0, 3.0]), (np.array([0, 0]), np.array([2, 9]))), shape=(1, 15))
    x, _ = federated.client_update(y, np.array([2, 9]), np.array([1.0, 3.0]), 2.0, 0.05)
    np.testing.assert_allclose(x, als_fold_in(y, h, 2.0, 0.05)[0], rtol=1e-4, atol=1e-6)


def test_rounds_reach_the_objective_centralised_als_reaches():
    x = _events()
    cfg = FederatedMFConfig(factors=8, rounds=15, engine="inprocess", regularization=0.1)
    losses = []
    y, log = federated.train_inprocess(
        x, cfg, on_round=lambda r, yy, e: losses.append(_objective(x, yy, cfg.alpha, 0.1))
    )
    assert len(log) == 15 and all(e["clients"] == 60 for e in log)
    # exact alternating least squares from the same start, the centralised reference
    ya = federated.initial_factors(x.shape[1], 8, cfg.seed).astype(np.float64)
    for _ in range(15):
        u = als_fold_in(ya, x, cfg.alpha, 0.1).astype(np.float64)
        ya = als_fold_in(u, x.T.tocsr(), cfg.alpha, 0.1).astype(np.float64)
    reference = _objective(x, ya, cfg.alpha, 0.1)
    start = _objective(x, federated.initial_factors(x.shape[1], 8, cfg.seed), cfg.alpha, 0.1)
    assert losses[-1] < 0.6 * start  # it learned
    assert losses[-1] <= reference * 1.05, (losses[-1], reference)


def test_clipping_and_noise():
    rng = np.random.default_rng(3)
    y = rng.normal(0, 1.0, (30, 6))
    _, update = federated.client_update(y, np.arange(10), np.ones(10), 2.0, 0.05)
    assert update.norm() > 1.0
    clipped = federated.clip_update(update, 1.0)
    assert abs(clipped.norm() - 1.0) < 1e-9
    zero = federated.ClientUpdate(np.zeros((300, 6)), np.zeros((6, 6)), np.zeros(300))
    noisy = federated.add_noise(zero, 0.7, np.random.default_rng(0))
    values = np.concatenate([a.ravel() for a in noisy.arrays()])
    assert abs(values.std() - 0.7) < 0.03 and abs(values.mean()) < 0.03


def test_poisson_sampling_rate():
    rng = np.random.default_rng(4)
    sizes = [len(federated.sample_clients(1000, 0.1, rng)) for _ in range(200)]
    assert 95 < np.mean(sizes) < 105 and np.std(sizes) > 3  # binomial, not a fixed count
    assert len(federated.sample_clients(7, 1.0, rng)) == 7


def _dataset(x: sp.csr_matrix) -> Dataset:
    u, i = x.nonzero()
    rows = [(f"u{a}", f"i{b}", float(t)) for t, (a, b) in enumerate(zip(u, i, strict=True))]
    return Dataset.from_events(
        pl.DataFrame(rows, schema=["user_id", "item_id", "ts"], orient="row")
    )


def test_dp_model_states_its_accounting_and_saves_only_item_factors(tmp_path):
    data = _dataset(_events())
    model = create_model("fedmf", engine="inprocess", factors=4, rounds=5, fraction=0.5,
                         dp_epsilon=4.0, dp_clip=0.5, dp_delta=1e-5)  # fmt: skip
    model.fit(data)
    p = model.privacy
    assert p["unit"] == "user" and p["rounds"] == 5 and p["sample_rate"] == 0.5
    assert 3.9 < p["epsilon"] <= 4.0  # the accountant's spend of the calibrated noise
    sigma = p["noise_multiplier"]
    assert federated.account(sigma, 0.5, 5, 1e-5) == p["epsilon"]
    assert federated.account(sigma * 2, 0.5, 5, 1e-5) < p["epsilon"] / 1.5  # more noise
    assert federated.account(sigma, 0.5, 20, 1e-5) > p["epsilon"]  # more rounds
    path = model.save(tmp_path / "m")
    with np.load(path / "weights.npz") as npz:
        assert "item_factors" in npz.files and "user_factors" not in npz.files
    again = load_model(path)
    assert again.privacy["epsilon"] == p["epsilon"]
    users = ["u0", "u1", "u2"]
    np.testing.assert_allclose(again.score(users), model.score(users), rtol=1e-5)
    # noise is drawn: another seed, other factors
    other = create_model("fedmf", engine="inprocess", factors=4, rounds=5, fraction=0.5,
                         dp_epsilon=4.0, dp_clip=0.5, dp_delta=1e-5, seed=1).fit(data)  # fmt: skip
    assert not np.allclose(other.item_factors, model.item_factors)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("flwr") is None, reason="needs Flower (make dev)")
def test_flower_simulation_runs_the_same_rounds():
    """A real Flower simulation on a local Ray cluster, one SuperNode per user: the same item
    factors as the in-process loop, and each client sends what the log says. (Everyone takes
    part: which node is which person is Flower's secret, so a sample would draw others.)"""
    x = _events(n_users=24, n_items=30)
    cfg = FederatedMFConfig(factors=4, rounds=3, engine="flower")
    from avrec.privacy.flower import run_flower

    seen: list[int] = []
    y_flower, log = run_flower(x, cfg, on_round=lambda r, y, e: seen.append(r))
    y_local, log_local = federated.train_inprocess(
        x, cfg.model_copy(update={"engine": "inprocess"})
    )
    assert seen == [1, 2, 3]
    assert [e["clients"] for e in log] == [24, 24, 24]
    np.testing.assert_allclose(y_flower, y_local, atol=1e-5)
    assert log[0]["bytes_up"] == 30 * 4 * 4 + 4 * 4 * 8 + 30 * 4
    assert log[0]["bytes_down"] == 30 * 4 * 4


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("flwr") is None, reason="needs Flower (make dev)")
def test_secure_aggregation_gives_the_clipped_rounds_and_hides_each_update():
    """Flower's SecAgg+ (issue 20: "secure aggregation where Flower provides it"): the
    server's factors are those of the in-process rounds with the same clipping, up to the
    quantisation; what each client sends is its masked, quantised update plus the
    protocol's keys and shares, more than the plain update."""
    x = _events(n_users=24, n_items=30)
    cfg = FederatedMFConfig(factors=4, rounds=3, engine="flower", secure_aggregation=True,
                            dp_clip=2.0)  # fmt: skip
    from avrec.privacy.flower import run_flower, secagg_settings

    y_secure, log = run_flower(x, cfg)
    local = cfg.model_copy(update={"engine": "inprocess"})
    y_local, _ = federated.train_inprocess(x, local)
    y_plain, _ = federated.train_inprocess(
        x, local.model_copy(update={"secure_aggregation": False})
    )
    assert [e["clients"] for e in log] == [24, 24, 24]
    np.testing.assert_allclose(y_secure, y_local, atol=1e-4)
    assert not np.allclose(y_local, y_plain, atol=1e-3)  # the clipping bit: it is applied
    plain = 30 * 4 * 4 + 4 * 4 * 4 + 30 * 4  # the update as float32
    assert all(e["bytes_up"] > plain for e in log[1:]), log
    s = secagg_settings(24, 2.0)
    assert s["quantization_range"] * 25 < s["modulus_range"]  # 24 clients' sum cannot wrap
    assert 3 <= s["reconstruction_threshold"] < s["num_shares"] <= 24
    big = secagg_settings(943, 5.0)
    assert big["quantization_range"] == 2**22 and big["num_shares"] == 11
