from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from avrec.data.dataset import Dataset
from avrec.data.vocab import Vocabulary
from avrec.data.weighting import EventWeighting
from avrec.errors import DataError, UnknownEntityError


@pytest.fixture
def ds() -> Dataset:
    events = pl.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", "u1", "u2", "u2"],
            "item_id": ["b", "a", "a", "c", "c", None],
            "event": ["play", "like", "play", "dislike", "play", "search"],
            "value": [1.0, None, 0.5, None, 1.0, None],
            "ts": [20.0, 10.0, 5.0, 20.0, 6.0, 7.0],
        }
    )
    items = pl.DataFrame({"item_id": ["a", "b", "c", "cold"], "tags": ['["x"]', None, None, None]})
    return Dataset.from_events(events, items)


def test_vocabularies_include_cold_catalogue_items(ds):
    assert list(ds.items.ids) == ["a", "b", "c", "cold"]
    assert ds.n_users == 2 and ds.n_events == 5  # the search has no item
    assert ds.item_tags[0] == ["x"] and ds.item_tags[3] == []


def test_sequences_are_time_ordered_with_ties_in_input_order(ds):
    assert ds.sequence("u1") == ["a", "b", "c"]  # b and c tie at ts=20: input order kept
    assert ds.sequence("u2") == ["a", "c"]
    with pytest.raises(UnknownEntityError):
        ds.sequence("nobody")


def test_interactions_and_negatives(ds):
    u1 = ds.users.index("u1")[0]
    a, c = ds.items.index(["a", "c"])
    assert ds.interactions[u1, a] == pytest.approx(3.0)
    assert ds.interactions[u1, c] == 0  # disliked: not a positive
    assert ds.negatives[u1, c] == pytest.approx(3.0)
    assert ds.seen[u1, c] == 1
    assert sorted(ds.user_items("u1")) == ["a", "b"]


def test_binary_weighting_counts_every_interaction():
    events = pl.DataFrame(
        {
            "user_id": ["u", "u"],
            "item_id": ["a", "b"],
            "event": ["rate", "rate"],
            "value": [1.0, 5.0],
        }
    )
    d = Dataset.from_events(events, weighting=EventWeighting.binary())
    assert d.interactions.nnz == 2 and set(d.interactions.data) == {1.0}
    d2 = Dataset.from_events(events)  # rating 1 is negative under the default rules
    assert d2.interactions.nnz == 1


def test_item_features_must_align(ds):
    ds.set_item_features("text", np.zeros((4, 8)))
    with pytest.raises(DataError, match="n_items=4"):
        ds.set_item_features("image", np.zeros((3, 8)))


def test_vocabulary_errors():
    v = Vocabulary(["a", "b"], "item")
    assert v.index(["b", "zz"], missing="ignore").tolist() == [1, -1]
    with pytest.raises(UnknownEntityError, match="zz"):
        v.index("zz")
    with pytest.raises(DataError):
        Vocabulary(["a", "a"])
    assert list(v.extend(["b", "c"]).ids) == ["a", "b", "c"]
