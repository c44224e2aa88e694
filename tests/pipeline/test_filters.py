from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from avrec.data.dataset import Dataset
from avrec.data.weighting import EventWeighting
from avrec.errors import ConfigError
from avrec.pipeline import Request, create_source
from avrec.pipeline.filters import ItemFacts, ItemFilter
from avrec.pipeline.pipeline import Pipeline, SourceConfig
from tests.pipeline.test_sources import DAY, KINDS, catalogue_dataset


def facts_dataset() -> Dataset:
    """catalogue_dataset's events with languages, durations and availability windows:
    items 0-9 French, the rest English; item i lasts 10 * i seconds; item 3 is available only
    after day 2000 and item 4 only until day 900."""
    base = catalogue_dataset()
    ids = base.items.ids
    n = len(ids)
    idx = [int(i[1:]) for i in ids]
    items = pl.DataFrame(
        {
            "item_id": list(ids),
            "tags": [json.dumps(["jazz" if i < 20 or i == 40 else "rock"]) for i in idx],
            "people": [json.dumps([{"name": f"Director {i // 2}"}]) for i in idx],
            "language": ["fr" if i < 10 else "en" for i in idx],
            "duration": [10.0 * i for i in idx],
            "available_from": [2000.0 * DAY if i == 3 else None for i in idx],
            "available_until": [900.0 * DAY if i == 4 else None for i in idx],
        }
    )
    rows = base.items.lookup(base.item_index)
    ev = pl.DataFrame(
        {
            "user_id": base.users.lookup(base.user_index),
            "item_id": rows,
            "event": ["play"] * base.n_events,
            "ts": base.ts,
        }
    )
    ds = Dataset.from_events(ev, items, weighting=EventWeighting.binary())
    assert ds.n_items == n
    ds.set_item_features("fused", base.item_features["fused"][base.items.index(ds.items.ids)])
    return ds


@pytest.fixture(scope="module")
def fds():
    return facts_dataset()


def item_numbers(ds, idx) -> list[int]:
    return [int(x[1:]) for x in ds.items.lookup(np.asarray(idx))]


def test_facts_mask(fds):
    facts = ItemFacts().fit(fds)
    nums = np.asarray(item_numbers(fds, np.arange(fds.n_items)))
    m = facts.mask(ItemFilter(categories=["ROCK"]))
    assert set(nums[m]) == set(range(20, 40)) | {41}
    m = facts.mask(ItemFilter(languages=["fr"], max_duration=50.0))
    assert set(nums[m]) == {0, 1, 2, 3, 4, 5}
    m = facts.mask(ItemFilter(min_duration=395.0))
    assert set(nums[m]) == {40, 41}
    assert facts.mask(None) is None  # windows exist but no time given: no mask
    m = facts.mask(None, t=1000.0 * DAY)
    assert not m[nums == 3].any() and not m[nums == 4].any() and m.sum() == fds.n_items - 2
    assert facts.mask(None, t=2100.0 * DAY)[nums == 3].all()
    again = ItemFacts().set_state(facts.state())
    np.testing.assert_array_equal(
        again.mask(ItemFilter(languages=["fr"], categories=["jazz"]), t=1000.0 * DAY),
        facts.mask(ItemFilter(languages=["fr"], categories=["jazz"]), t=1000.0 * DAY),
    )
    with pytest.raises(ConfigError):
        ItemFilter(min_duration=10, max_duration=5)


@pytest.mark.parametrize(("kind", "params"), KINDS)
def test_every_source_respects_the_mask(fds, kind, params):
    src = create_source(kind, **params).fit(fds)
    nums = np.asarray(item_numbers(fds, np.arange(fds.n_items)))
    allowed = nums % 3 == 0
    u0 = int(fds.users.index(["u0"])[0])
    hist = fds.items.index(fds.user_items("u0"))
    plain = src.retrieve([Request(u0, hist)], 10)[0]
    got = src.retrieve([Request(u0, hist, allowed=allowed)], 10)[0]
    assert allowed[got.items].all()
    assert not set(got.items) & set(hist)
    # what passes is not lost: the plain list's allowed items are all still there, and the
    # list is refilled from further down (a third of the items pass, plenty for 10)
    kept = [i for i in plain.items if allowed[i]]
    assert set(kept) <= set(got.items.tolist())
    everything = src.retrieve([Request(u0, hist)], fds.n_items)[0]
    assert len(got) == min(10, int(allowed[everything.items].sum()))


def test_pipeline_filters_keep_k_and_never_leak(fds):
    sources = [
        SourceConfig(kind="model", name="itemknn", n=20, params={"model": "itemknn"}),
        SourceConfig(kind="people", n=20),
        SourceConfig(kind="neighbours", n=20),
        SourceConfig(kind="popular", n=20),
    ]
    p = Pipeline(sources=sources, ranker={"min_child_samples": 5}, ranker_holdout=2).fit(fds)
    nums = {i: int(i[1:]) for i in fds.items.ids}
    # u0 likes jazz; ask for French rock: nothing from its taste, still k results
    rec = p.recommend_explained(["u0"], k=5, filters=ItemFilter(categories=["rock"]))[0]
    assert len(rec) == 5 and all(20 <= nums[i] < 40 or nums[i] == 41 for i in rec.ids)
    rec = p.recommend_explained(["u0"], k=5, filters=ItemFilter(languages=["fr"]))[0]
    seen = set(fds.user_items("u0"))
    french_unseen = [i for i in fds.items.ids if nums[i] < 10 and i not in seen]
    available = [i for i in french_unseen if i not in ("i3", "i4")]  # see facts_dataset
    assert len(rec) == min(5, len(available)) and set(rec.ids) <= set(available)
    assert all(nums[i] < 10 for i in rec.ids)
    # availability: i3 opens on day 2000 and i4 closed on day 900 (data end is day 1030)
    many = p.recommend_explained(["u1", "nobody"], k=40)
    for r in many:
        assert "i3" not in r.ids and "i4" not in r.ids
    later = p.recommend_explained(["nobody"], k=40, at=2100.0 * DAY)[0]
    assert "i4" not in later.ids and "i3" in later.ids  # i3 has opened by then
    # the service reads the windows at its own clock, the timeline staying at training's
    served = p.recommend_explained(["nobody"], k=40, available_at=2100.0 * DAY)[0]
    assert "i3" in served.ids and "i4" not in served.ids
    before = p.recommend_explained(["nobody"], k=40, available_at=800.0 * DAY)[0]
    assert "i4" in before.ids and "i3" not in before.ids  # i4 had not closed yet
    for r in p.recommend(["u1", "nobody"], k=40):  # the plain model surface serves now too
        assert "i3" not in r.ids and "i4" not in r.ids
    # what the caller excludes is refilled inside the sources: still k, none of them
    first = p.recommend_explained(["u0"], k=5)[0]
    second = p.recommend_explained(["u0"], k=5, exclude=first.ids)[0]
    assert len(second) == 5 and not set(second.ids) & set(first.ids)
    timings: dict[str, float] = {}
    p.recommend_explained(["u0"], k=5, timings=timings)
    assert set(timings) == {"retrieval", "ranking", "reranking", "explaining"}
    assert all(v >= 0 for v in timings.values()) and sum(timings.values()) > 0


@pytest.fixture(scope="module")
def fitted(fds):
    sources = [
        SourceConfig(kind="model", name="markov", n=20, params={"model": "markov"}),
        SourceConfig(kind="model", name="itemknn", n=20, params={"model": "itemknn"}),
        SourceConfig(kind="neighbours", n=20),
        SourceConfig(kind="popular", n=20),
    ]
    return Pipeline(sources=sources, ranker={"min_child_samples": 5}, ranker_holdout=2).fit(fds)


def test_playlist_from_a_seed_flows_and_never_repeats(fds, fitted):
    pl_ = fitted.playlist(seed="i6", n=12)
    assert pl_.ids[0] == "i6" and len(pl_) == 12 and len(set(pl_.ids)) == 12
    assert pl_.fields["after"][1:] == pl_.ids[:-1]
    assert "i3" not in pl_.ids and "i4" not in pl_.ids  # not available now
    jazz = [int(i[1:]) < 20 or i == "i40" for i in pl_.ids]
    assert np.mean(jazz) >= 0.8  # a jazz seed flows through jazz
    assert fitted.playlist(seed="i6", n=12).ids == pl_.ids  # deterministic
    # flow 1: each next item is the candidate most similar to the one before it
    strict = fitted.playlist(seed="i6", n=4, flow=1.0)
    v = fitted.features.vectors
    for prev, nxt in zip(strict.ids[:-1], strict.ids[1:], strict=True):
        a, b = fds.items.index([prev, nxt])
        sims = v @ v[a]
        assert sims[b] >= np.sort(sims)[-len(strict) - 1] - 1e-6  # among the very nearest


def test_playlist_for_a_user_with_filters(fds, fitted):
    seen = set(fds.user_items("u1"))
    pl_ = fitted.playlist(user="u1", n=6, filters=ItemFilter(languages=["en"]))
    assert len(pl_) == 6 and not set(pl_.ids) & seen
    assert all(int(i[1:]) >= 10 for i in pl_.ids)
    first = fitted.recommend_explained(["u1"], k=1, filters=ItemFilter(languages=["en"]))[0]
    assert pl_.ids[0] == first.ids[0]  # a user's playlist opens with their top pick
    capped = fitted.playlist(user="u1", n=6, max_per_group=1)
    directors = [int(i[1:]) // 2 for i in capped.ids]
    assert len(set(directors)) == len(directors)
    with pytest.raises(ConfigError):
        fitted.playlist(n=5)
    with pytest.raises(ConfigError):
        fitted.playlist(seed="i1", n=0)


def test_language_and_duration_match_features(fds):
    from avrec.pipeline.ranker import FeatureBuilder, merge
    from avrec.pipeline.sources import Candidates

    fb = FeatureBuilder().fit(fds)
    names = fb.names(["a"])
    assert names[-2:] == ["language_share", "log_duration_gap"]
    hist = fds.items.index(["i1", "i2", "i15"])  # two French, one English
    cands = fds.items.index(["i5", "i30"])
    req = Request(-1, hist)
    x = fb.build(req, merge({"a": Candidates(cands, [2.0, 1.0])}))
    share = x[:, names.index("language_share")]
    np.testing.assert_allclose(share, [2 / 3, 1 / 3], rtol=1e-6)
    gap = x[:, names.index("log_duration_gap")]
    median = np.median(np.log1p([10.0, 20.0, 150.0]))
    np.testing.assert_allclose(gap, np.abs(np.log1p([50.0, 300.0]) - median), rtol=1e-5)
    assert "language_share" not in FeatureBuilder().fit(catalogue_dataset()).names(["a"])
