from __future__ import annotations

import numpy as np
import pytest

from avrec.errors import ConfigError
from avrec.language import MAX_QUERY_CHARS, clip_query
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


def test_segment_texts_cut_transcripts_at_sentences():
    from avrec.language.search import segment_texts

    said = " ".join(f"Sentence number {i} is about the weather." for i in range(40))
    parts = segment_texts({"tag_list": "jazz, live", "transcript": said, "ocr": "OPEN 24H"})
    fields = [f for f, _ in parts]
    assert parts[0] == ("tags", "tags: jazz, live")
    assert fields.count("transcript") == 4 and fields[-1] == "ocr"  # at most four passages
    chunks = [t for f, t in parts if f == "transcript"]
    assert all(len(c) <= 400 and c.endswith(".") for c in chunks)
    assert chunks[1].startswith("Sentence number")  # cut between sentences, nothing lost between
    assert segment_texts({"title": "no parts"}) == []


def test_what_is_said_in_an_item_is_matched_by_meaning(tmp_path, lang_ds):
    """An item's description says nothing of what is said in it; a request about the speech
    finds it through its transcript's own vector, and says so."""
    from avrec.content.store import ContentStore
    from avrec.language.search import encode_segments, fill_text_vectors

    texts = {
        "v18": {
            "transcript": "Today we talk about black holes, the expansion of the universe "
            "and how astronomers measure the distance to far away galaxies."
        }
    }
    docs = item_documents(lang_ds, texts)
    for i, tags in enumerate(["kittens", "puppies", "cats, fails", "piano", "rain, sleep"]):
        docs[i]["tag_list"] = tags  # free tags get a row of their own (genres do not)
    vectors, _ = fill_text_vectors(docs, None, budget=100)
    with ContentStore(tmp_path / "content.db") as cs:
        every = ("tags", "transcript", "ocr")
        segments = encode_segments(docs, budget=100, cache=cs, fields=every)
        again = encode_segments(docs, budget=100, cache=cs, fields=every)
    items, fields, x = segments
    v18 = lang_ds.items.index(["v18"])[0]
    assert items[0] == v18  # items with speech or screen text come first
    assert (fields[items == v18] == 1).any() and np.allclose(np.linalg.norm(x, axis=1), 1.0)
    assert all(np.array_equal(a, b) for a, b in zip(segments, again, strict=True))  # cached
    assert len(items) == 6 and set(fields[items != v18]) == {0}  # the five tag rows
    assert len(encode_segments(docs, budget=3, fields=every)[0]) == 3  # the budget holds
    plain_items, plain_fields, _ = encode_segments(docs, budget=100)
    assert plain_items[0] == v18 and 0 not in set(plain_fields.tolist())  # by default, no tags

    query = "a lecture on astronomy and distant galaxies"
    plain = SearchIndex().fit(docs, vectors)
    with_parts = SearchIndex().fit(docs, vectors, segments)
    before = [h.item for h in plain.search(query, k=3, mode="semantic")]
    hits = with_parts.search(query, k=3, mode="semantic")
    assert v18 not in before[:1] and hits[0].item == v18 and hits[0].near == "transcript"
    # filters and exclusions hold for the parts' rows too
    assert v18 not in [h.item for h in with_parts.search(query, k=5, exclude=[v18])]
    allowed = np.ones(len(docs), bool)
    allowed[v18] = False
    assert v18 not in [h.item for h in with_parts.search(query, k=5, allowed=allowed)]
    with_parts.save(tmp_path / "s")
    loaded = SearchIndex().load(tmp_path / "s")
    assert [(h.item, h.near) for h in loaded.search(query, k=3)] == [
        (h.item, h.near) for h in with_parts.search(query, k=3)
    ]
    with pytest.raises(ConfigError, match="outside"):
        plain.set_segments(np.asarray([len(docs)]), np.asarray([0]), x[:1])


def test_clip_query():
    assert clip_query("toy stroy") == ("toy stroy", False)
    exact = "x" * MAX_QUERY_CHARS
    assert clip_query(exact) == (exact, False)
    words = "piano " * 1000  # the cut would fall inside a word: it goes back to the space
    kept, cut = clip_query(words)
    assert cut and len(kept) <= MAX_QUERY_CHARS and kept.split(" ")[-1] == "piano"
    han = "猫" * 5000  # no spaces: cut at the limit
    assert clip_query(han) == ("猫" * MAX_QUERY_CHARS, True)


def test_a_long_query_is_cut(lang_ds, index):
    """Bug #16: a 100,000-character query took 21-56 s and 600 MB."""
    # only the beginning is read: the techno past the limit does not count
    query = "relaxing piano for studying " * 40 + "heavy techno workout mix " * 4000
    assert len(query) > 100_000
    hits = index.search(query, k=3, mode="keyword")
    assert ids(lang_ds, hits) == ids(
        lang_ds, index.search(clip_query(query)[0], k=3, mode="keyword")
    )
    assert ids(lang_ds, hits)[0] == "v4" and "v6" not in ids(lang_ds, hits)


def test_the_multilingual_leg_crosses_languages_both_ways(lang_ds, index):
    """Issue #17: a Chinese request over English text and an English one over Chinese text
    are found by the USE sentence vectors (the e5 leg keeps to the query's language)."""
    assert index.mindex is not None and len(index.m_items) >= lang_ds.n_items
    top = ids(lang_ds, index.search("一个人一遍又一遍地重复过同一天", k=3, mode="multilingual"))
    assert top[0] == "v15"  # Groundhog Day, told in Chinese
    top = ids(lang_ds, index.search("quiet piano late at night", k=4, mode="multilingual"))
    assert "v8" in top  # 深夜钢琴曲, found in English
    hits = index.search("一个人一遍又一遍地重复过同一天", k=3)
    found = ids(lang_ds, hits)
    assert "v15" in found and hits[found.index("v15")].ranks["multilingual"] == 1


def test_multilingual_passages_are_short_sentences():
    from avrec.language.search import multilingual_passages

    doc = {
        "title": "Toy Story",
        "tag_list": "animation, toys",
        "description": "A cowboy doll is jealous. A spaceman toy arrives!  Ok.  新玩具来了。好",
    }
    assert multilingual_passages(doc) == [
        "Toy Story", "animation, toys", "A cowboy doll is jealous.", "A spaceman toy arrives!",
        "新玩具来了。",
    ]  # fmt: skip
    assert len(multilingual_passages({"description": "word. " * 50}, max_passages=3)) == 1


def test_matches_quote_the_catalogues_own_tag_names():
    """Issue #17: explanations said 标签含有"fi, sci, war" for the genres Sci-Fi and War."""
    docs = [
        {"title": "Star Wars", "tags": "Sci-Fi War Action", "tag_names": "Sci-Fi|War|Action"},
        {"title": "Babe", "tags": "Children's Comedy", "tag_names": "Children's|Comedy"},
    ]
    ix = SearchIndex().fit(docs)
    hits = ix.search("sci-fi war", k=1, mode="keyword")
    assert hits[0].item == 0 and hits[0].matched["tags"] == ["Sci-Fi", "War"]


def test_a_request_made_of_an_items_words_finds_that_item(lang_ds, index):
    """Fusion by evidence (issue #17): when the best keyword match holds the request's words,
    the keyword list's weight is multiplied by ``keyword_evidence``."""
    v1 = lang_ds.items.index(["v1"])[0]
    assert index.coverage(v1, "cats falling off sofas") == 1.0
    assert index.coverage(v1, "cats") == 0.0  # one word is too little evidence
    assert index.coverage(v1, "cats playing piano") == pytest.approx(1 / 3)
    boosted = SearchIndex(keyword_evidence=16.0).fit(
        index.docs, index.vectors, multilingual=(index.m_items, index.m_vectors)
    )
    plain = SearchIndex(keyword_evidence=1.0).fit(
        index.docs, index.vectors, multilingual=(index.m_items, index.m_vectors)
    )
    q = "cats falling off sofas"
    a, b = boosted.search(q, k=3), plain.search(q, k=3)
    assert a[0].item == v1 and a[0].score > b[[h.item for h in b].index(v1)].score
    # a request whose words no item holds together is fused as before
    q = "cats playing piano"
    assert [h.score for h in boosted.search(q, k=3)] == [h.score for h in plain.search(q, k=3)]


PLOTS = [
    {"title": "Toy Story (1995)", "tags": "Animation Children's Comedy",
     "people": "Tom Hanks Tim Allen John Lasseter",
     "description": "A cowboy doll is profoundly threatened and jealous when a new spaceman "
     "figure supplants him as top toy in a boy's room."},
    {"title": "Babe (1995)", "tags": "Children's Comedy Drama", "people": "James Cromwell",
     "description": "A pig raised by sheepdogs learns to herd sheep with a little help."},
    {"title": "Apollo 13 (1995)", "tags": "Action Drama Thriller", "people": "Tom Hanks",
     "description": "NASA must devise a strategy to return the crew to Earth safely after "
     "the spacecraft undergoes massive internal damage."},
    {"title": "Heat (1995)", "tags": "Action Crime Thriller", "people": "Al Pacino",
     "description": "A group of professional bank robbers start to feel the heat from the "
     "police when they leave a clue at their latest heist."},
    {"title": "你们吵的越狠 他们的手就握的越紧", "tags": "明星娱乐",
     "description": "你们吵的越狠 他们的手就握的越紧 #文轩 #刘耀文"},
]  # fmt: skip


@pytest.fixture(scope="module")
def plots():
    from avrec.language.search import encode_segments, fill_text_vectors

    docs = [dict(d) for d in PLOTS]
    vectors, _ = fill_text_vectors(docs, None, budget=100)
    return docs, vectors, encode_segments(docs, budget=100)


def test_a_description_that_says_more_than_its_title_gets_a_leg_of_its_own(plots, tmp_path):
    """A plot gets a description row; a caption that repeats its title with hashtags does
    not. A Chinese request about the plot finds the English film by its description, and
    the semantic leg (the whole text vector) does not read those rows."""
    from avrec.language.passages import SEGMENT_FIELDS, says_more

    docs, vectors, segments = plots
    items, fields, _ = segments
    desc = SEGMENT_FIELDS.index("description")
    assert sorted(items[fields == desc].tolist()) == [0, 1, 2, 3]  # not the caption (4)
    assert not says_more(PLOTS[4]["description"], PLOTS[4]["title"])
    assert says_more(PLOTS[1]["description"], PLOTS[1]["title"])

    index = SearchIndex().fit(docs, vectors, segments)
    query = "一只小猪跟着牧羊犬学会了赶羊"
    assert index.description(query, 3)[0][0] == 1  # Babe
    assert all(h.near != "description" for h in index.search(query, k=5, mode="semantic"))
    hits = index.search(query, k=3, mode="description")
    assert hits[0].item == 1 and hits[0].near == "description"
    assert set(hits[0].ranks) == {"description"}
    only_caption = np.zeros(len(docs), bool)
    only_caption[4] = True  # a filter that no described item passes
    assert index.search(query, k=3, mode="description", allowed=only_caption) == []
    assert [h.item for h in index.search(query, k=3, allowed=only_caption)] in ([], [4])
    only_caption = np.zeros(len(docs), bool)
    only_caption[4] = True  # a filter that no described item passes
    assert index.search(query, k=3, mode="description", allowed=only_caption) == []
    assert [h.item for h in index.search(query, k=3, allowed=only_caption)] in ([], [4])
    index.save(tmp_path / "s")
    again = SearchIndex().load(tmp_path / "s")
    assert [h.item for h in again.search(query, k=3, mode="description")] == [h.item for h in hits]


def test_each_language_pair_is_fused_at_its_own_weights(plots):
    """A request's language pair (its language, the catalogue's) decides which legs run and
    how they count; fusing the legs gives what ``search`` gives."""
    docs, vectors, segments = plots
    index = SearchIndex(
        weights={"semantic": 1.0, "description": 0.0},
        pair_weights={"zh-en": {"semantic": 0.0, "description": 5.0, "multilingual": 0.0}},
    ).fit(docs, vectors, segments)
    zh, en = "一只小猪跟着牧羊犬学会了赶羊", "a pig that learns to herd sheep"
    assert index.pair(zh) == "zh-en" and index.pair(en) == "en-en"
    cross = index.legs(zh)
    assert index.crosses(zh) and cross.crossing and cross.pair == "zh-en"
    assert "description" in cross.lists and "semantic" not in cross.lists
    assert "translated" in cross.lists  # the word-by-word translation (weight 1 by default)
    own = index.legs(en)
    assert not index.crosses(en) and not own.crossing
    assert "semantic" in own.lists and "description" not in own.lists
    assert "translated" not in own.lists  # a request in the catalogue's language: as typed
    for q, legs in ((zh, cross), (en, own)):
        want = [(h.item, h.score) for h in index.search(q, k=4)]
        assert [(h.item, h.score) for h in index.fuse(legs, k=4)] == want
    assert index.search(zh, k=1)[0].item == 1
    # every leg at once (the benchmark's grid) and a weight that turns one off
    every = index.legs(zh, weights=dict.fromkeys(("semantic", "description", "keyword"), 1.0))
    assert {"semantic", "description", "keyword"} <= set(every.lists)
    off = index.fuse(every, k=4, weights={"semantic": 1.0})
    assert all(set(h.ranks) == {"semantic"} for h in off)
    with pytest.raises(ConfigError, match="unknown retrievers"):
        SearchIndex(pair_weights={"zh-en": {"plot": 1.0}})
    with pytest.raises(ConfigError, match="unknown language pairs"):
        SearchIndex(pair_weights={"fr-en": {"semantic": 1.0}})
