"""Differentially private SASRec (DP-SGD, Opacus): the network Opacus can see through, exact
per-user gradients, the accounting in the manifest, the noise, and what the route refuses."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch

from avrec.data.dataset import Dataset
from avrec.errors import ConfigError
from avrec.models import load_model
from avrec.models.sasrec import SASRec, SASRecConfig, _build, _pad_last
from avrec.privacy.dpsgd import DPSASRecNet, per_user_loss, train_private
from avrec.testing import RecommenderContract

SCHEMA = ["user_id", "item_id", "ts"]
SMALL = {"dim": 16, "layers": 1, "heads": 2, "max_len": 8, "threads": 1}


def _ordered_dataset(n_users: int = 60, length: int = 6) -> Dataset:
    """Each user plays items in a cycle of 10 from a random start (after i3 comes i4)."""
    rng = np.random.default_rng(0)
    rows = []
    for k in range(n_users):
        start = int(rng.integers(0, 10))
        rows += [(f"u{k}", f"i{(start + t) % 10}", float(t)) for t in range(length)]
    return Dataset.from_events(pl.DataFrame(rows, schema=SCHEMA, orient="row"))


def _perturbed_net(n_items: int, c: SASRecConfig):  # noqa: ANN202
    """The standard network with every weight moved off its initial value."""
    torch.manual_seed(0)
    net = _build(n_items, c)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
        net.items.weight[0].zero_()
    return net


def _rows(n_items: int, max_len: int, lengths: list[int]) -> torch.Tensor:
    rng = np.random.default_rng(1)
    seqs = [rng.integers(0, n_items, n) for n in lengths]
    return torch.from_numpy(_pad_last(seqs, max_len + 1))


def test_the_dp_network_computes_what_the_standard_one_does():
    c = SASRecConfig(dim=16, layers=2, heads=2, max_len=10, dropout=0.2)
    net = _perturbed_net(50, c).eval()
    dp = DPSASRecNet.from_net(net, c).eval()
    x = _rows(50, c.max_len, [1, 3, 10, 15, 0, 7])[:, 1:]  # padded, full and empty rows
    with torch.no_grad():
        h, h_dp = net(x), dp(x)
        np.testing.assert_allclose(h_dp.numpy(), h.numpy(), atol=1e-5)
        scores = h[:, -1] @ net.item_matrix().T
        np.testing.assert_allclose(dp.output(h_dp)[:, -1, 1:].numpy(), scores.numpy(), atol=1e-5)
        back = dp.to_net(c).eval()  # the way trained weights go back for scoring and saving
        np.testing.assert_array_equal(back(x).numpy(), h.numpy())
    assert dp.output.weight is dp.items.weight  # tied, one Parameter


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_per_user_gradients_are_each_users_own():
    """Guards the Opacus bugs on SASRec's network: the tied output layer used outside a module
    call silently lost its share of each user's gradient, and positions indexed with one
    ``[L]`` tensor got a per-sample gradient batched over positions (silently wrong when a
    batch holds ``L`` users)."""
    from opacus import GradSampleModule

    c = SASRecConfig(dim=16, layers=2, heads=2, max_len=10, dropout=0.0)
    dp = DPSASRecNet.from_net(_perturbed_net(40, c), c)
    w = _rows(40, c.max_len, [2, 5, 11, 1, 8])  # the 1-item row has no transition
    params = list(dp.parameters())
    alone = [torch.autograd.grad(per_user_loss(dp, w[i : i + 1]).sum(), params) for i in range(5)]
    GradSampleModule(dp, loss_reduction="sum")
    dp.train()
    per_user_loss(dp, w).sum().backward()
    for (name, p), k in zip(dp.named_parameters(), range(len(params)), strict=True):
        assert p.grad_sample.shape == (5, *p.shape), name
        for i in range(5):
            torch.testing.assert_close(p.grad_sample[i], alone[i][k], atol=1e-5, rtol=1e-4)
    # the tied weight's gradient reaches target items the user never had as input
    target_only = int(w[0, -1])
    assert target_only not in w[0, :-1].tolist()
    assert dp.items.weight.grad_sample[0, target_only].abs().sum() > 0
    assert (dp.items.weight.grad_sample[3] == 0).all()  # nothing to learn from one item


def test_a_private_fit_spends_its_budget_and_keeps_the_accounting(tmp_path):
    ds = _ordered_dataset()
    m = SASRec(**SMALL, lr=5e-3, batch_size=8, dp_epsilon=4.0, dp_epochs=2, dp_physical_batch=4)
    m.fit(ds)
    acct = m.privacy
    assert 3.9 <= acct["epsilon"] <= 4.0  # within Opacus' search tolerance, never above
    assert acct["unit"] == "user" and acct["rows_per_user"] == 1 and acct["history_items"] == 8
    assert acct["sample_rate"] == pytest.approx(1 / 8)  # 60 users, 8 per step: 8 batches
    assert acct["steps"] == 2 * 8 and acct["epochs"] == 2 and acct["noise_multiplier"] > 0.5
    assert [e["epoch"] for e in m.history_] == [1, 2]
    path = m.save(tmp_path / "dp")
    assert json.loads((path / "manifest.json").read_text())["privacy"] == acct
    again = load_model(path)
    assert again.privacy == acct
    users = ["u0", "u1", "u7"]
    np.testing.assert_array_equal(again.score(users), m.score(users))


def test_the_noise_moves_weights_that_no_data_moves():
    """Every user has one item, so no transition: every clipped gradient is exactly zero and
    only the Gaussian noise can change a weight."""
    rows = [(f"u{k}", f"i{k % 10}", 0.0) for k in range(40)]
    ds = Dataset.from_events(pl.DataFrame(rows, schema=SCHEMA, orient="row"))
    m = SASRec(**SMALL, lr=1e-2, batch_size=8, dp_epsilon=2.0, dp_epochs=1, seed=3).fit(ds)
    torch.manual_seed(3)  # train_private's initialisation, replayed
    start = DPSASRecNet.from_config(ds.n_items, m.config).to_net(m.config).state_dict()
    for name, value in m.net.state_dict().items():
        moved = (value - start[name]).abs()
        if name == "items.weight":
            assert (value[0] == 0).all()  # the padding row stays empty
            moved = moved[1:]
        assert (moved > 0).float().mean() > 0.99, name
    assert m.privacy["epsilon"] <= 2.0


def test_empty_poisson_draws_still_step(monkeypatch):
    """Poisson sampling can draw nobody; that step must still run (and be counted)."""
    import avrec.privacy.dpsgd as dpsgd

    sizes: list[int] = []

    def counting(net, w):  # noqa: ANN001, ANN202
        sizes.append(len(w))
        return per_user_loss(net, w)

    monkeypatch.setattr(dpsgd, "per_user_loss", counting)
    m = SASRec(**SMALL, batch_size=1, dp_epsilon=8.0, dp_epochs=1).fit(_ordered_dataset(20))
    assert 0 in sizes  # each of the 20 draws is empty with probability (19 / 20) ** 20 = 0.36
    assert m.privacy["steps"] == 20 and m.privacy["epsilon"] <= 8.0
    assert np.isfinite(m.score(["u0"])).all()


def test_private_fits_are_reproducible_by_seed_and_differ_across_seeds():
    ds = _ordered_dataset(40)
    kw = dict(SMALL, batch_size=8, dp_epsilon=8.0, dp_epochs=1)
    a, b = SASRec(**kw, seed=1).fit(ds), SASRec(**kw, seed=1).fit(ds)
    c = SASRec(**kw, seed=2).fit(ds)
    users = ["u0", "u5"]
    np.testing.assert_array_equal(a.score(users), b.score(users))
    assert not np.allclose(a.score(users), c.score(users), atol=1e-4)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"side_features": "content"}, "side_features='content' with dp_epsilon"),
        ({"engine": "ray"}, "engine='ray' with dp_epsilon"),
        ({"loss": "sampled"}, "loss='sampled' with dp_epsilon"),
        ({"loss": "gbce"}, "loss='gbce' with dp_epsilon"),
    ],
)
def test_the_private_route_refuses_what_it_cannot_do(extra, match):
    ds = _ordered_dataset(10)
    # real item vectors: without DP, side_features="content" would train
    ds.set_item_features("content", np.eye(ds.n_items, 4, dtype=np.float32))
    with pytest.raises(ConfigError, match=match):
        SASRec(**SMALL, epochs=1, dp_epsilon=1.0, **extra).fit(ds)


def test_train_private_needs_an_epsilon():
    with pytest.raises(ConfigError, match="dp_epsilon"):
        train_private([np.arange(3)], 5, SASRecConfig())


class TestDPSASRec(RecommenderContract):
    """The whole recommender contract under DP-SGD, at an epsilon loose enough to learn the
    toy dataset's two taste groups from 60 users."""

    def make(self):
        return SASRec(**SMALL, lr=1e-2, batch_size=20, dropout=0.0, dp_epsilon=1000.0, dp_epochs=30)
