from __future__ import annotations

import numpy as np
import pytest

from avrec.data.dataset import Dataset
from avrec.errors import ConfigError
from avrec.models import create_model
from avrec.testing.contract import RecommenderContract, toy_dataset


def with_features(seed: int = 0) -> Dataset:
    """The toy dataset with content vectors: items 0-19 near one direction, 20-39 near another,
    and the cold item near the first group."""
    data = toy_dataset()
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.3, (data.n_items, 16)).astype(np.float32)
    ids = data.items.lookup(np.arange(data.n_items))
    for k, item in enumerate(ids):
        group = 0 if item == "cold" or int(item[1:]) < 20 else 1
        x[k, group] += 3.0
    data.set_item_features("fused", x)
    return data


class TestContentProfile(RecommenderContract):
    def make(self):
        return create_model("content", mode="profile")

    @pytest.fixture(scope="class")
    @classmethod
    def data(cls) -> Dataset:
        return with_features()


class TestContentProjection(RecommenderContract):
    def make(self):
        return create_model("content", mode="projection", factors=8, iterations=10)

    @pytest.fixture(scope="class")
    @classmethod
    def data(cls) -> Dataset:
        return with_features()


@pytest.mark.parametrize("mode", ["profile", "projection"])
def test_cold_item_goes_to_the_users_whose_taste_it_matches(mode):
    data = with_features()
    assert np.diff(data.binary().tocsc().indptr)[data.items.index(["cold"])[0]] == 0
    model = create_model("content", mode=mode, factors=8, iterations=10).fit(data)
    cold = data.items.index(["cold"])[0]
    group0 = [f"u{u}" for u in range(0, 60, 2)]
    group1 = [f"u{u}" for u in range(1, 60, 2)]
    s0 = model.score(group0)[:, cold]
    s1 = model.score(group1)[:, cold]
    assert s0.mean() > s1.mean()
    # among the other group's items, the cold item ranks above all of them for group 0
    other = [data.items.index([f"i{i}"])[0] for i in range(20, 40)]
    scores = model.score(group0)
    assert (scores[:, cold][:, None] > scores[:, other]).mean() > 0.9


def test_missing_features_is_a_clear_error():
    with pytest.raises(ConfigError, match="avrec analyze"):
        create_model("content").fit(toy_dataset())
