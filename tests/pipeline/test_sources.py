from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from avrec.data.dataset import Dataset
from avrec.data.weighting import EventWeighting
from avrec.errors import ConfigError, NotFittedError
from avrec.models import create_model
from avrec.pipeline import Request, create_source

DAY = 86400.0


def catalogue_dataset(seed: int = 0) -> Dataset:
    """40 items in two taste groups (0-19 "jazz", 20-39 "rock"), directors shared within
    pairs, content vectors that follow the groups, two new items (40, 41) nobody has played,
    and a burst of recent plays on item 5."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(60):
        base = 0 if u % 2 == 0 else 20
        for k, i in enumerate(rng.choice(np.arange(base, base + 20), size=8, replace=False)):
            rows.append((f"u{u}", f"i{i}", "play", 1000.0 * DAY + k * DAY))
    for u in range(10):  # recent burst on i5
        rows.append((f"u{u}", "i5", "play", 1030.0 * DAY + u))
    ev = pl.DataFrame(rows, schema=["user_id", "item_id", "event", "ts"], orient="row")
    ids = [f"i{i}" for i in range(42)]
    items = pl.DataFrame(
        {
            "item_id": ids,
            "tags": [json.dumps(["jazz" if i < 20 or i == 40 else "rock"]) for i in range(42)],
            "people": [
                json.dumps([{"name": f"Director {i // 2}", "role": "director"}]) for i in range(42)
            ],
            "created_at": [900.0 * DAY] * 40 + [1029.0 * DAY, 1030.0 * DAY],
        }
    )
    ds = Dataset.from_events(ev, items, weighting=EventWeighting.binary())
    x = rng.normal(0, 0.3, (ds.n_items, 8)).astype(np.float32)
    for k, item in enumerate(ds.items.lookup(np.arange(ds.n_items))):
        x[k, 0 if int(item[1:]) < 20 or item == "i40" else 1] += 3.0
    ds.set_item_features("fused", x)
    return ds


@pytest.fixture(scope="module")
def ds():
    return catalogue_dataset()


def request(ds, user: str, extra: list[str] | None = None) -> Request:
    hist = list(ds.user_items(user)) + list(extra or [])
    return Request(int(ds.users.index([user])[0]), ds.items.index(hist))


KINDS = [
    ("model", {"model": "itemknn"}),
    ("neighbours", {}),
    ("interests", {}),
    ("people", {}),
    ("factors", {"model": {"factors": 8, "iterations": 5}}),
    ("popular", {}),
    ("trending", {"half_life_days": 3.0}),
    ("fresh", {"max_age_days": 10.0}),
]


@pytest.mark.parametrize(("kind", "params"), KINDS)
def test_contract(ds, kind, params):
    src = create_source(kind, **params)
    with pytest.raises(NotFittedError):
        src.retrieve([request(ds, "u0")], 5)
    src.fit(ds)
    reqs = [request(ds, "u0"), request(ds, "u1"), Request(-1, [])]
    out = src.retrieve(reqs, 10)
    assert len(out) == 3
    for req, c in zip(reqs, out, strict=True):
        assert len(c) <= 10 and len(set(c.items)) == len(c.items)
        assert not set(c.items) & set(req.exclude)
        assert list(c.scores) == sorted(c.scores, reverse=True)
        assert np.isfinite(c.scores).all()
        anchored = c.anchors[c.anchors >= 0]
        assert set(anchored) <= set(req.history)
    with pytest.raises(ConfigError):
        src.retrieve(reqs, 0)


def test_personal_sources_follow_taste(ds):
    even, odd = request(ds, "u0"), request(ds, "u1")  # jazz, rock
    for kind, params in KINDS[:4]:
        src = create_source(kind, **params).fit(ds)
        a, b = src.retrieve([even, odd], 5)
        jazz = [int(i[1:]) < 20 or i == "i40" for i in ds.items.lookup(a.items)]
        rock = [not (int(i[1:]) < 20 or i == "i40") for i in ds.items.lookup(b.items)]
        assert np.mean(jazz) >= 0.8 and np.mean(rock) >= 0.8, kind


def test_model_source_matches_the_model(ds):
    src = create_source("model", model="itemknn").fit(ds)
    got = src.retrieve([request(ds, "u0")], 5)[0]
    model = create_model("itemknn").fit(ds)
    assert ds.items.lookup(got.items) == model.recommend(["u0"], k=5)[0].ids


def test_factor_source_matches_als_scores(ds):
    """The vector search over ALS item factors gives the top of the model's own scores (an
    exact index), from the request's history, so an event since training changes the list."""
    src = create_source("factors", model={"factors": 8, "iterations": 5}).fit(ds)
    model = src.model
    req = request(ds, "u0")
    got = src.retrieve([req], 5)[0]
    want = model.recommend(["u0"], k=5)[0]
    assert ds.items.lookup(got.items) == want.ids
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-3, atol=1e-4)
    later = src.retrieve([request(ds, "u0", extra=["i25", "i26", "i27"])], 5)[0]
    assert list(later.items) != list(got.items)
    with pytest.raises(ConfigError):
        create_source("factors", model={"factors": 0})


def test_people_source_scales_sparsely():
    """Contributions stay sparse: the same answer as the dense formula it replaced."""
    d = catalogue_dataset(seed=3)
    src = create_source("people").fit(d)
    req = request(d, "u4")
    got = src.retrieve([req], 15)[0]
    h = req.history
    contrib = (src.item_links[h] @ src.weighted.T).toarray().astype(np.float64)
    scores = contrib.sum(axis=0).round(4)  # equal sums compare equal (ties by index)
    scores[req.exclude] = -np.inf
    scores[scores <= 0] = -np.inf
    order = np.lexsort((np.arange(len(scores)), -scores))[: len(got)]
    assert list(got.items) == order.tolist()
    np.testing.assert_allclose(got.scores, scores[order], rtol=1e-5)
    assert list(got.anchors) == h[np.argmax(contrib[:, order], axis=0)].tolist()


def test_neighbours_are_anchored_to_the_nearest_recent_item(ds):
    src = create_source("neighbours", recent=3).fit(ds)
    req = request(ds, "u0")
    c = src.retrieve([req], 8)[0]
    recent = list(dict.fromkeys(req.history[::-1]))[:3]
    assert set(c.anchors) <= set(recent)
    for item, anchor in zip(c.items, c.anchors, strict=True):
        sims = src.vectors[recent] @ src.vectors[item]
        assert anchor == recent[int(np.argmax(sims))]


def test_interests_find_both_tastes_of_a_mixed_user(ds):
    src = create_source("interests", per_interest=4).fit(ds)
    jazz = ds.items.index([f"i{i}" for i in range(0, 8)])
    rock = ds.items.index([f"i{i}" for i in range(20, 28)])
    req = Request(-1, np.concatenate([jazz, rock]))
    cents, shares = src.centroids(req)
    assert len(cents) >= 2 and shares.sum() == pytest.approx(1.0)
    got = ds.items.lookup(src.retrieve([req], 10)[0].items)
    groups = {int(i[1:]) < 20 or i == "i40" for i in got}
    assert groups == {True, False}


def test_people_source_finds_the_same_director(ds):
    src = create_source("people", use=["people"]).fit(ds)
    liked = ds.items.index(["i6"])  # Director 3 also made i7
    c = src.retrieve([Request(-1, liked)], 3)[0]
    assert ds.items.lookup(c.items[:1]) == ["i7"]
    assert c.anchors[0] == liked[0]
    assert src.shared(int(liked[0]), int(c.items[0])) == ["p:Director 3"]
    with pytest.raises(ConfigError):
        create_source("people", use=["colour"])


def test_trending_and_fresh(ds):
    pop = create_source("popular").fit(ds).retrieve([Request(-1, [])], 3)[0]
    trend = create_source("trending", half_life_days=2.0).fit(ds).retrieve([Request(-1, [])], 3)[0]
    assert ds.items.lookup(trend.items[:1]) == ["i5"]  # the burst
    assert ds.items.lookup(pop.items) != ds.items.lookup(trend.items)
    fresh = create_source("fresh", max_age_days=5.0).fit(ds).retrieve([Request(-1, [])], 5)[0]
    assert ds.items.lookup(fresh.items) == ["i41", "i40"]  # newest first, nobody played them


def test_unknown_kind():
    with pytest.raises(ConfigError, match="known"):
        create_source("astrology")
    with pytest.raises(ConfigError):
        create_source("trending", half_life_days=0)


def test_vector_sources_share_one_index_and_keep_a_graph_index(ds, tmp_path):
    """Two sources over the same vectors build one index, and an HNSW index is saved, not
    rebuilt, in a bundle (it takes minutes at a million items)."""
    from avrec.pipeline.pipeline import Pipeline, SourceConfig

    hnsw = {"kind": "hnsw", "hnsw_m": 8}
    p = Pipeline(
        sources=[
            SourceConfig(kind="neighbours", n=10, params={"index": hnsw}),
            SourceConfig(kind="interests", n=10, params={"index": hnsw}),
            SourceConfig(kind="popular", n=5),
            SourceConfig(kind="factors", n=5, params={"model": {"factors": 8}, "index": hnsw}),
        ],
        ranker={"min_child_samples": 5},
        ranker_holdout=2,
    ).fit(ds)
    (a, _), (b, _), _, (f, _) = p.sources
    assert a.index is b.index and a.index.built_kind == "hnsw"
    path = p.save(tmp_path / "bundle")
    for name in ("neighbours", "factors"):
        with np.load(path / "sources" / name / "state.npz") as z:
            assert str(z["index_kind"]) == "hnsw"
        assert (path / "sources" / name / "index.faiss").stat().st_size > 0
    from avrec.models import load_model

    again = load_model(path)
    users = ["u0", "u1", "stranger"]
    np.testing.assert_array_equal(again.score(users), p.score(users))
    assert again.sources[0][0].index is again.sources[1][0].index  # shared again in memory
    assert again.sources[3][0].index.built_kind == "hnsw"


def test_an_inverted_file_in_a_bundle_is_memory_mapped_and_old_bundles_load(ds, tmp_path):
    """A compressed inverted file is opened from index.faiss without reading it; a bundle
    from before index.faiss (the index inside state.npz) still loads and answers the same."""
    import io

    from avrec.models import load_model
    from avrec.pipeline.pipeline import Pipeline, SourceConfig

    ivf = {"kind": "ivfsq8"}
    p = Pipeline(
        sources=[SourceConfig(kind="factors", n=5, params={"model": {"factors": 8}, "index": ivf})],
        ranker_holdout=0,
    ).fit(ds)
    path = p.save(tmp_path / "bundle")
    users = ["u0", "u1", "stranger"]
    again = load_model(path)
    idx = again.sources[0][0].index
    assert idx.built_kind == "ivfsq8" and type(idx.index.invlists).__name__ != "ArrayInvertedLists"
    np.testing.assert_array_equal(again.score(users), p.score(users))
    # the format before: index_bytes in state.npz, no file beside it
    folder = path / "sources" / "factors"
    with np.load(folder / "state.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["index_bytes"] = np.frombuffer(p.sources[0][0].index.to_bytes(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    (folder / "state.npz").write_bytes(buf.getvalue())
    (folder / "index.faiss").unlink()
    old = load_model(path)
    np.testing.assert_array_equal(old.score(users), p.score(users))


def test_a_bundle_of_another_format_is_refused_clearly(ds, tmp_path):
    import io

    from avrec.errors import DataError
    from avrec.models import load_model
    from avrec.pipeline.pipeline import Pipeline, SourceConfig

    p = Pipeline(sources=[SourceConfig(kind="popular")], ranker_holdout=0).fit(ds)
    path = p.save(tmp_path / "b")
    with np.load(path / "weights.npz") as z:
        arrays = {k: z[k] for k in z.files if k != "pipeline_format"}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    (path / "weights.npz").write_bytes(buf.getvalue())
    with pytest.raises(DataError, match="train it again"):
        load_model(path)


def test_people_source_follows_people_named_in_the_text_and_series():
    items = pl.DataFrame(
        {
            "item_id": ["a", "b", "c", "d"],
            "attributes": [
                "{}",
                "{}",
                json.dumps({"series": "Saga"}),
                json.dumps({"series": "Saga"}),
            ],
        }
    )
    ev = pl.DataFrame(
        {"user_id": ["u", "u", "v"], "item_id": ["a", "c", "b"], "event": ["play"] * 3}
    )
    ds = Dataset.from_events(ev, items, weighting=EventWeighting.binary())
    ds.item_texts = {"a": {"mentions": "Jane Doe"}, "b": {"mentions": "Jane Doe"}}
    src = create_source("people").fit(ds)
    idx = {i: int(ds.items.index([i])[0]) for i in "abcd"}
    got = src.retrieve([Request(0, np.asarray([idx["a"]]), exclude=np.asarray([idx["a"]]))], 5)[0]
    assert ds.items.lookup(got.items.tolist()) == ["b"] and got.anchors.tolist() == [idx["a"]]
    assert src.shared(idx["a"], idx["b"]) == ["p:Jane Doe"]
    got = src.retrieve([Request(0, np.asarray([idx["c"]]), exclude=np.asarray([idx["c"]]))], 5)[0]
    assert ds.items.lookup(got.items.tolist()) == ["d"]  # the same series


@pytest.mark.parametrize("model", ["itemknn", "markov"])
def test_sparse_candidates_are_the_dense_candidates(model):
    """ItemKNN and Markov hand the source the few items with a score instead of a row over
    the whole catalogue: the same items, scores and order as the dense row, with exclusions,
    filters, short histories (the rest filled by popularity or index) and strangers."""
    from avrec.models.base import UserBatch
    from avrec.pipeline.sources import ModelSource, _history_matrix, _top
    from avrec.testing.contract import toy_dataset

    ds = toy_dataset(n_users=80)
    params = {"model": model, "neighbours": 5} if model == "itemknn" else {"model": model}
    src = create_source("model", **params).fit(ds)
    assert isinstance(src, ModelSource) and hasattr(src.model, "_sparse_scores")
    rng = np.random.default_rng(0)
    reqs = []
    for u in range(30):
        hist = rng.choice(ds.n_items, rng.integers(0, 4), replace=False)
        allowed = rng.random(ds.n_items) < 0.5 if u % 3 == 0 else None
        exclude = np.concatenate([hist, rng.choice(ds.n_items, 3)]) if u % 2 else None
        reqs.append(Request(u if u % 5 else -1, hist, exclude=exclude, allowed=allowed))
    for n in (3, 25, ds.n_items + 5):
        got = src.retrieve(reqs, n)
        batch = UserBatch(np.asarray([r.user for r in reqs]), _history_matrix(reqs, ds.n_items),
                          [r.history for r in reqs])  # fmt: skip
        dense = np.asarray(src.model._score_batch(batch), np.float32)
        for r, req in enumerate(reqs):
            row = dense[r]
            if row.max() == row.min():
                assert len(got[r].items) == 0
                continue
            items, scores = _top(row, req.exclude, n, req.allowed)
            np.testing.assert_array_equal(got[r].scores, scores)
            # above the last score the items agree one for one; among the items tied with
            # it the dense path's partition picks any (the sparse one takes the lowest ids)
            above = scores > scores[-1]
            np.testing.assert_array_equal(got[r].items[above], items[above])
            tied = np.asarray(got[r].items)[~above]
            assert (row[tied] == scores[-1]).all()
            assert not np.isin(tied, req.exclude).any()
            assert req.allowed is None or req.allowed[tied].all()
