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
    with pytest.raises(ConfigError, match="known: ease, itemknn, pop"):
        create_model("svd")
    with pytest.raises(ConfigError):
        create_model("ease", lambda_=3)
