"""The contract tests. A model's test class is three lines::

class TestEASE(RecommenderContract):
    def make(self):
        return EASE(l2=10)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from avrec.data.dataset import Dataset
from avrec.data.weighting import EventWeighting
from avrec.errors import NotFittedError, UnknownEntityError
from avrec.models.base import Recommender, load_model


def toy_dataset(n_users: int = 60, seed: int = 0) -> Dataset:
    """Two taste groups over disjoint items (0-19 and 20-39), plus a cold catalogue item."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        base = 0 if u % 2 == 0 else 20
        items = rng.choice(np.arange(base, base + 20), size=8, replace=False)
        for k, i in enumerate(items):
            rows.append((f"u{u}", f"i{i}", "play", float(k)))
    ev = pl.DataFrame(rows, schema=["user_id", "item_id", "event", "ts"], orient="row")
    items = pl.DataFrame({"item_id": [f"i{i}" for i in range(40)] + ["cold"]})
    return Dataset.from_events(ev, items, weighting=EventWeighting.binary())


class RecommenderContract:
    """Inherit and implement :meth:`make`."""

    #: whether the model personalises (group taste should show in its lists)
    personalised = True

    def make(self) -> Recommender:
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def data(cls) -> Dataset:
        return toy_dataset()

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, data: Dataset) -> Recommender:
        return cls().make().fit(data)

    def test_unfitted_raises(self):
        with pytest.raises(NotFittedError):
            self.make().recommend(["u0"])

    def test_score_shape_and_finite(self, fitted, data):
        s = fitted.score(["u0", "u1"])
        assert s.shape == (2, data.n_items)
        assert np.isfinite(s).all()
        sub = fitted.score(["u0"], ["i1", "i2"])
        assert sub.shape == (1, 2)
        np.testing.assert_allclose(sub[0], s[0, data.items.index(["i1", "i2"])], rtol=1e-5)

    def test_recommend_excludes_seen_and_respects_k(self, fitted, data):
        lists = fitted.recommend(["u0", "u1"], k=5)
        assert [len(x) for x in lists] == [5, 5]
        for user, lst in zip(["u0", "u1"], lists, strict=True):
            assert not set(lst.ids) & set(data.user_items(user))
            assert list(lst.scores) == sorted(lst.scores, reverse=True)
        with pytest.raises(ValueError):
            fitted.recommend(["u0"], k=0)

    def test_exclude_and_candidates(self, fitted):
        top = fitted.recommend(["u0"], k=3)[0].ids
        again = fitted.recommend(["u0"], k=3, exclude=top)[0].ids
        assert not set(top) & set(again)
        only = fitted.recommend(
            ["u0"], k=10, candidates=["i25", "i26", "cold"], exclude_seen=False
        )[0].ids
        assert set(only) <= {"i25", "i26", "cold"} and len(only) == 3

    def test_personalisation(self, fitted):
        if not self.personalised:
            pytest.skip("not a personalised model")
        even = fitted.recommend(["u0"], k=5)[0].ids  # group 0: items 0-19
        odd = fitted.recommend(["u1"], k=5)[0].ids
        assert sum(int(i[1:]) < 20 for i in even if i != "cold") >= 4
        assert sum(int(i[1:]) >= 20 for i in odd if i != "cold") >= 4

    def test_unknown_user_gets_a_fallback(self, fitted):
        lst = fitted.recommend(["nobody"], k=5)[0]
        assert len(lst) == 5

    def test_similar_items(self, fitted):
        sims = fitted.similar_items(["i3"], k=4)[0]
        assert len(sims) == 4 and "i3" not in sims.ids
        with pytest.raises(UnknownEntityError):
            fitted.similar_items(["nope"])

    def test_save_load_identical_scores(self, fitted, tmp_path: Path):
        path = fitted.save(tmp_path / "model")
        assert (path / "manifest.json").exists() and (path / "weights.npz").exists()
        again = load_model(path)
        assert type(again) is type(fitted)
        np.testing.assert_array_equal(
            again.score(["u0", "u5", "nobody"]), fitted.score(["u0", "u5", "nobody"])
        )
        assert again.recommend(["u3"], k=5)[0].ids == fitted.recommend(["u3"], k=5)[0].ids
