from __future__ import annotations

import numpy as np
import pytest

from avrec.errors import ConfigError
from avrec.models import EASE, ItemKNN, Popularity, create_model
from avrec.testing import RecommenderContract, toy_dataset


class TestPopularity(RecommenderContract):
    personalised = False

    def make(self):
        return Popularity()


class TestEASE(RecommenderContract):
    def make(self):
        return EASE(l2=10.0)


class TestItemKNN(RecommenderContract):
    def make(self):
        return ItemKNN(neighbours=10)


class TestItemKNNBM25(RecommenderContract):
    def make(self):
        return ItemKNN(neighbours=10, similarity="bm25")


def test_popularity_counts_every_interaction():
    """RecBole's popularity drops repeats within a batch; ours counts each event."""
    import polars as pl

    from avrec.data.dataset import Dataset

    ev = pl.DataFrame({"user_id": ["a", "a", "a", "b"], "item_id": ["x", "x", "x", "y"]})
    m = Popularity().fit(Dataset.from_events(ev))
    assert m.score(["a"], ["x", "y"]).tolist() == [[3.0, 1.0]]
    users = Popularity(count="users").fit(Dataset.from_events(ev))
    assert users.score(["a"], ["x", "y"]).tolist() == [[1.0, 1.0]]


def test_trending_decays_old_events():
    import polars as pl

    from avrec.data.dataset import Dataset

    day = 86400.0
    ev = pl.DataFrame(
        {"user_id": ["a", "b", "c"], "item_id": ["old", "old", "new"], "ts": [0.0, 0.0, 30 * day]}
    )
    m = Popularity(half_life_days=7).fit(Dataset.from_events(ev))
    old, new = m.score(["a"], ["old", "new"])[0]
    assert new > old and old == pytest.approx(2 * 0.5 ** (30 / 7), rel=1e-5)


def test_ease_closed_form_matches_definition():
    data = toy_dataset(20)
    m = EASE(l2=5.0).fit(data)
    x = data.binary().toarray().astype(np.float64)
    p = np.linalg.inv(x.T @ x + 5.0 * np.eye(x.shape[1]))
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    np.testing.assert_allclose(m.weights, b, atol=1e-5)


def test_registry():
    assert isinstance(create_model("ease", l2=1.0), EASE)
    with pytest.raises(
        ConfigError,
        match="known: als, bpr, content, ease, fedmf, itemknn, markov, mf, pipeline, pop, sasrec",
    ):
        create_model("svd")
    with pytest.raises(ConfigError):
        create_model("ease", lambda_=3)


class TestALS(RecommenderContract):
    def make(self):
        from avrec.models import ALS

        return ALS(factors=8, iterations=5)


class TestBPR(RecommenderContract):
    def make(self):
        from avrec.models import BPR

        return BPR(factors=8, iterations=50, learning_rate=0.05)


class TestMarkov(RecommenderContract):
    def make(self):
        from avrec.models import Markov

        return Markov(window=3)


def test_als_fold_in_solves_the_normal_equations():
    import scipy.sparse as sp

    from avrec.models.factors import als_fold_in

    rng = np.random.default_rng(0)
    y = rng.normal(size=(30, 4)).astype(np.float32)
    h = sp.random(5, 30, density=0.2, format="csr", random_state=1, dtype=np.float32)
    h.data[:] = rng.integers(1, 5, len(h.data))
    got = als_fold_in(y, h, alpha=2.0, regularization=0.1)
    yd = y.astype(np.float64)
    for u in range(5):
        r = h[u].toarray().ravel()
        c = np.where(r > 0, 2.0 * r, 1.0)  # alpha * r observed, 1 elsewhere
        p = (r > 0).astype(float)
        a = yd.T @ (c[:, None] * yd) + 0.1 * np.eye(4)
        b = yd.T @ (c * p)
        np.testing.assert_allclose(got[u], np.linalg.solve(a, b), rtol=1e-4, atol=1e-5)


def test_als_fold_in_matches_implicit_solve():
    """The fold-in uses implicit's confidence (alpha * r): a trained user's factors, solved again
    from the same history, come out (nearly) the same."""
    from implicit.cpu.als import AlternatingLeastSquares

    from avrec.models.factors import als_fold_in

    data = toy_dataset(60)
    x = data.interactions.astype(np.float32).tocsr()
    m = AlternatingLeastSquares(
        factors=8, regularization=0.05, alpha=2.0, iterations=30, use_cg=False, random_state=0
    )
    m.fit(x, show_progress=False)
    ours = als_fold_in(m.item_factors, x, 2.0, 0.05)
    rel = np.linalg.norm(ours - m.user_factors) / np.linalg.norm(m.user_factors)
    assert rel < 0.05


def test_markov_predicts_the_next_item():
    import polars as pl

    from avrec.data.dataset import Dataset
    from avrec.models import Markov

    # everyone watches a -> b -> c in order; after "a" comes "b"
    rows = [(f"u{k}", it, float(t)) for k in range(10) for t, it in enumerate("abc")]
    ds = Dataset.from_events(pl.DataFrame(rows, schema=["user_id", "item_id", "ts"], orient="row"))
    m = Markov(window=1).fit(ds)
    batch = m.user_batch(["u0"])
    batch.sequences = [np.asarray(ds.items.index(["a"]))]
    scores = m._score_batch(batch)[0]
    assert ds.items.id(int(np.argmax(scores))) == "b"


class TestBiasedMF(RecommenderContract):
    def make(self):
        from avrec.models import BiasedMF

        return BiasedMF(factors=8, iterations=8, negatives=4)


class TestSASRec(RecommenderContract):
    def make(self):
        from avrec.models import SASRec

        return SASRec(dim=16, layers=1, heads=1, max_len=8, epochs=40, dropout=0.0, lr=5e-3)


def test_mf_rating_target_fits_ratings():
    import polars as pl

    from avrec.data.dataset import Dataset
    from avrec.models import BiasedMF

    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 50, 800), rng.integers(0, 40, 800)
    taste = rng.normal(size=50)
    quality = rng.normal(size=40)
    ratings = np.clip(np.round(3 + taste[users] + quality[items]), 1, 5)
    ev = pl.DataFrame(
        {
            "user_id": users.astype(str),
            "item_id": items.astype(str),
            "event": "rate",
            "value": ratings,
            "ts": np.arange(800.0),
        }
    )
    ds = Dataset.from_events(ev)
    m = BiasedMF(target="rating", factors=4, iterations=20, regularization=0.5).fit(ds)
    pred = m.score(list(ds.users.ids))
    u = ds.users.index(users.astype(str).tolist())
    i = ds.items.index(items.astype(str).tolist())
    rmse = float(np.sqrt(np.mean((pred[u, i] - ratings) ** 2)))
    baseline = float(np.std(ratings))
    assert rmse < 0.6 * baseline  # biases alone explain most of this data


@pytest.mark.parametrize("loss", ["ce", "sampled", "gbce"])
def test_sasrec_learns_a_deterministic_order(loss):
    """After a, b comes c: the sequence model must learn the transition from order alone."""
    import polars as pl

    from avrec.data.dataset import Dataset
    from avrec.models import SASRec

    rng = np.random.default_rng(0)
    rows = []
    for k in range(60):
        start = int(rng.integers(0, 10))
        for t in range(6):
            rows.append((f"u{k}", f"i{(start + t) % 10}", float(t)))
    ds = Dataset.from_events(pl.DataFrame(rows, schema=["user_id", "item_id", "ts"], orient="row"))
    m = SASRec(
        dim=16,
        layers=1,
        heads=1,
        max_len=5,
        epochs=60,
        dropout=0.0,
        lr=1e-2,
        loss=loss,
        negatives=5,
    ).fit(ds)
    batch = m.user_batch(["u0"])
    batch.sequences = [ds.items.index(["i3", "i4"])]
    scores = m._score_batch(batch)[0]
    assert ds.items.id(int(np.argmax(scores))) == "i5"


def test_tuning_searches_on_validation_and_records_the_choice(tmp_path):
    from avrec.eval.splits import LeaveOneOut
    from avrec.models import load_model
    from avrec.models.tuning import tune

    split = LeaveOneOut().split(toy_dataset(80))
    res = tune("ease", split, n_trials=6, seed=0)
    assert len(res.trials) == 6 and 10.0 <= res.best_params["l2"] <= 5000.0
    assert res.best_value == max(t["value"] for t in res.trials)
    path = res.best_model.save(tmp_path / "m")
    again = load_model(path)
    assert again.tuned_["params"]["l2"] == res.best_params["l2"]
    assert again.config.l2 == res.best_params["l2"]


def test_sasrec_side_features_reach_cold_items(tmp_path):
    """A never-played item scores like the group its content vector places it in."""
    import polars as pl

    from avrec.data.dataset import Dataset
    from avrec.errors import ConfigError
    from avrec.models import SASRec, load_model

    rng = np.random.default_rng(0)
    rows = []
    for k in range(80):
        group = k % 2
        for t in range(6):
            rows.append((f"u{k}", f"i{group * 10 + int(rng.integers(0, 10))}", float(t)))
    items = pl.DataFrame({"item_id": [f"i{i}" for i in range(20)] + ["cold_a", "cold_b"]})
    ds = Dataset.from_events(
        pl.DataFrame(rows, schema=["user_id", "item_id", "ts"], orient="row"), items
    )
    feats = np.zeros((ds.n_items, 2), np.float32)
    for idx, item in enumerate(ds.items.ids):
        feats[idx] = (
            [1, 0] if item == "cold_a" or (item[1:].isdigit() and int(item[1:]) < 10) else [0, 1]
        )
    ds.set_item_features("content", feats)
    m = SASRec(
        dim=16,
        layers=1,
        heads=1,
        max_len=6,
        epochs=30,
        dropout=0.0,
        lr=5e-3,
        side_features="content",
    ).fit(ds)
    group_a = [f"u{k}" for k in range(0, 80, 2)]
    s = m.score(group_a, ["cold_a", "cold_b"])
    assert (s[:, 0] > s[:, 1]).mean() > 0.8
    again = load_model(m.save(tmp_path / "m"))
    np.testing.assert_allclose(again.score(group_a[:3]), m.score(group_a[:3]), rtol=1e-5)
    with pytest.raises(ConfigError, match="side_features"):
        SASRec(side_features="nope", epochs=1).fit(ds)


def test_ease_refuses_a_catalogue_it_cannot_hold_before_allocating():
    """200,000 items: 480 GB of Gram matrices. A clear error, not an out-of-memory kill."""
    import polars as pl

    from avrec.data.dataset import Dataset

    n = 200_000
    ev = pl.DataFrame({"user_id": ["a", "b"] * 5, "item_id": ["0", "1"] * 5, "ts": range(10)})
    cat = pl.DataFrame({"item_id": [str(i) for i in range(n)]})
    ds = Dataset.from_events(ev, cat)
    assert ds.n_items == n
    with pytest.raises(ConfigError, match="ALS"):
        EASE().fit(ds)
