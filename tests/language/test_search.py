from __future__ import annotations

import numpy as np
import pytest

from avrec.errors import ConfigError
from avrec.language.search import SearchIndex, _title_key, item_documents


@pytest.fixture(scope="module")
def index(lang_pipeline):
    return lang_pipeline.search


def ids(ds, hits):
    return ds.items.lookup([h.item for h in hits])


def test_documents_carry_the_catalogue_fields(lang_ds):
    docs = item_documents(lang_ds, {"v1": {"transcript": "meow meow", "unknown": "x"}})
    v1 = docs[lang_ds.items.index(["v1"])[0]]
    assert v1["title"] == "Kitten fails compilation" and "funny" in v1["tags"]
    assert v1["transcript"] == "meow meow" and "unknown" not in v1


def test_a_title_with_typos_is_found(lang_ds, index):
    assert ids(lang_ds, index.search("shawshenk redemption", k=3))[0] == "v12"
    hits = index.search("toy stroy", k=3)
    assert ids(lang_ds, hits)[0] == "v10"
    assert "story" in hits[0].matched["title"]  # corrected, as the user meant it
    assert _title_key("Shawshank Redemption, The (1994)") == "shawshank redemption"


def test_keyword_search_says_where_the_words_are(lang_ds, index):
    hits = index.search("cat", k=5, mode="keyword")
    found = ids(lang_ds, hits)
    assert {"v2", "v3"} <= set(found[:3])
    assert all("keyword" in h.ranks and set(h.ranks) == {"keyword"} for h in hits)
    top = hits[found.index("v2")]
    assert top.matched["title"] == ["cat"]


def test_chinese_keywords(lang_ds, index):
    assert ids(lang_ds, index.search("钢琴", k=3, mode="keyword"))[0] == "v8"


def test_semantic_search_finds_meaning_across_languages(lang_ds, index):
    top = ids(lang_ds, index.search("funny kitten clips", k=3, mode="semantic"))
    assert {"v1", "v2", "v9"} & set(top)
    top = ids(lang_ds, index.search("安静的钢琴音乐", k=4, mode="semantic"))
    assert {"v4", "v5", "v8"} & set(top[:2])
    assert index.search("xyzzy", k=3, mode="keyword") == []


def test_filters_and_exclusions_apply_inside(lang_ds, lang_pipeline, index):
    from avrec.pipeline.filters import ItemFilter

    zh = lang_pipeline.facts.mask(ItemFilter(languages=["zh"]))
    hits = index.search("music", k=5, allowed=zh)
    assert hits and all(zh[h.item] for h in hits)
    v4 = lang_ds.items.index(["v4"])[0]
    assert v4 not in [h.item for h in index.search("piano", k=10, exclude=[v4])]
    with pytest.raises(ConfigError):
        index.search("piano", k=0)
    with pytest.raises(ConfigError):
        index.search("piano", mode="fuzzy")
    with pytest.raises(ConfigError):
        index.search("piano", allowed=np.ones(3, bool))


def test_round_trip(tmp_path, lang_ds, index):
    index.save(tmp_path / "s")
    again = SearchIndex().load(tmp_path / "s")
    for q in ("toy stroy", "钢琴", "relaxing music"):
        a, b = index.search(q, k=5), again.search(q, k=5)
        assert [(h.item, h.matched) for h in a] == [(h.item, h.matched) for h in b]


def test_without_vectors_it_is_keyword_and_title_only(lang_ds):
    idx = SearchIndex().fit(item_documents(lang_ds))
    hits = idx.search("toy story", k=2)
    assert ids(lang_ds, hits)[0] == "v10" and "semantic" not in hits[0].ranks


def test_a_catalogue_without_words_and_an_unfitted_index(tmp_path):
    import polars as pl

    from avrec.data.dataset import Dataset
    from avrec.errors import NotFittedError

    with pytest.raises(NotFittedError):
        SearchIndex().search("x")
    bare = Dataset.from_events(
        pl.DataFrame({"user_id": ["a"], "item_id": ["x"], "event": ["play"]})
    )
    idx = SearchIndex().fit(item_documents(bare))
    assert idx.search("anything", k=3) == []
    idx.save(tmp_path / "bare")
    assert SearchIndex().load(tmp_path / "bare").search("anything", k=3) == []


def test_fill_text_vectors_encodes_the_empty_rows_once(tmp_path, lang_ds):
    from avrec.content.store import ContentStore
    from avrec.language.search import fill_text_vectors

    docs = item_documents(lang_ds)
    given = np.zeros((len(docs), 384), np.float32)
    given[0] = 1.0  # an analysed item keeps its vector
    with ContentStore(tmp_path / "content.db") as cs:
        x, n = fill_text_vectors(docs, given, budget=5, cache=cs)
        assert n == 5 and (x[0] == 1.0).all()
        filled = np.linalg.norm(x, axis=1) > 0
        assert filled[:6].all() and not filled[6:].any()  # the budget holds
        again, n2 = fill_text_vectors(docs, given, budget=5, cache=cs)
        assert n2 == 0 and np.array_equal(again, x)  # from the cache
    assert fill_text_vectors(docs, x, budget=0) == (x, 0)
