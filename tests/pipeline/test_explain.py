from __future__ import annotations

import re

import pytest

from avrec.eval import LeaveOneOut
from avrec.pipeline.explain import Explanation, Reason, render, top_tags
from avrec.pipeline.pipeline import Pipeline, SourceConfig
from avrec.pipeline.rerank import RerankRules
from tests.pipeline.test_sources import catalogue_dataset

SOURCES = [
    SourceConfig(kind="model", name="itemknn", n=20, params={"model": "itemknn"}),
    SourceConfig(kind="people", n=20),
    SourceConfig(kind="neighbours", n=20),
    SourceConfig(kind="popular", n=10),
]


@pytest.fixture(scope="module")
def fitted():
    ds = catalogue_dataset()
    split = LeaveOneOut(order="time").split(ds)
    valid = split.full.select(split.masks["valid"])
    p = Pipeline(sources=SOURCES, ranker={"min_child_samples": 5}).fit(split.train, valid)
    return p, split.train


def people_of(ds, item):
    return {p["name"] for p in ds.item_people[ds.items.index([item])[0]]}


def test_explanations_name_true_things(fitted):
    p, train = fitted
    for user in ("u0", "u1", "u2"):
        [lst] = p.recommend_explained([user], k=8)
        history = set(train.user_items(user))
        assert len(lst) == 8 and not set(lst.ids) & history
        for item, sources, exp in zip(
            lst.ids, lst.fields["sources"], lst.fields["explanation"], strict=True
        ):
            reasons = {r["kind"]: r["value"] for r in exp["reasons"]}
            assert sources and reasons["source"]
            if "anchor" in reasons:
                anchor = reasons["anchor"]["id"]
                assert anchor in history  # "because you watched X": X really was watched
                for link in reasons.get("shared", []):
                    kind, _, name = link.partition(":")
                    if kind == "p":
                        assert name in people_of(train, item) & people_of(train, anchor)
            for feature, value in reasons.get("features", []):
                assert feature in p.ranker.feature_names and value > 0
            assert exp["text"]


def test_people_anchor_renders_the_person(fitted):
    p, train = fitted
    found = 0
    for user in [f"u{u}" for u in range(20)]:
        [lst] = p.recommend_explained([user], k=10)
        for exp in lst.fields["explanation"]:
            reasons = {r["kind"]: r["value"] for r in exp["reasons"]}
            shared = [s for s in reasons.get("shared", []) if s.startswith("p:")]
            if shared:
                found += 1
                assert shared[0][2:] in exp["text"]
    assert found > 0


def test_chinese_rendering_and_paging(fitted):
    p, _ = fitted
    [zh] = p.recommend_explained(["u0"], k=3, lang="zh")
    assert all(re.search(r"[\u4e00-\u9fff]", e["text"]) for e in zh.fields["explanation"])
    pages = [p.recommend_explained(["u0"], k=4, offset=4 * i)[0].ids for i in range(3)]
    flat = [i for page in pages for i in page]
    assert len(flat) == len(set(flat))
    shown = pages[0]
    [again] = p.recommend_explained(["u0"], k=4, exclude=shown)
    assert not set(again.ids) & set(shown)
    [blocked] = p.recommend_explained(
        ["u0"], k=4, rules=RerankRules(blocked=set(p.items.index(shown[:1]).tolist()))
    )
    assert shown[0] not in blocked.ids
    [diverse] = p.recommend_explained(["u0"], k=4, diversity=0.5)
    assert len(diverse) == 4


def test_unknown_user_gets_popular_with_a_reason(fitted):
    p, _ = fitted
    [lst] = p.recommend_explained(["stranger"], k=5)
    assert len(lst) == 5
    for exp in lst.fields["explanation"]:
        reasons = {r["kind"]: r["value"] for r in exp["reasons"]}
        assert "popular" in reasons["source"] and "anchor" not in reasons


def test_render_and_tags_helpers():
    e = Explanation(
        "i1",
        [
            Reason("source", ["people"]),
            Reason("anchor", {"id": "i0", "title": "Heat"}),
            Reason("shared", ["p:Michael Mann", "t:crime"]),
        ],
    )
    assert render(e) == 'With Michael Mann, like "Heat"'
    assert "Michael Mann" in render(e, "zh") and "《Heat》" in render(e, "zh")
    assert render(Explanation("x")) == "recommended for you"
    both = Explanation(
        "i2",
        [
            Reason("source", ["collaborative", "next"]),
            Reason("anchor", {"id": "i0", "title": "Heat"}),
        ],
    )
    assert (
        render(both)
        == 'Because you watched "Heat"; also, it often comes next after what you played'
    )
    assert "；；" not in render(both, "zh") and "；也因为" in render(both, "zh")
    assert top_tags([["Jazz", "live"], ["jazz"]], ["rock", "jazz", "live"]) == ["jazz", "live"]


def test_a_new_user_adapts_within_the_session(fitted):
    p, train = fitted
    [cold] = p.recommend_explained(["newcomer"], k=5)
    jazz = [f"i{i}" for i in range(0, 4)]
    [warm] = p.recommend_explained(["newcomer"], k=5, session_items=[jazz])
    assert not set(warm.ids) & set(jazz)  # what was played is not offered again
    is_jazz = [int(i[1:]) < 20 or i == "i40" for i in warm.ids]
    assert sum(is_jazz) >= 4 and warm.ids != cold.ids
    anchors = [
        r["value"]["id"]
        for e in warm.fields["explanation"]
        for r in e["reasons"]
        if r["kind"] == "anchor"
    ]
    assert anchors and set(anchors) <= set(jazz)


def test_a_meaning_match_names_the_part_that_matched():
    def said(near, matched=None):
        return Explanation("i", [Reason("query", {"matched": matched or {}, "semantic": near})])

    assert render(said("transcript")).startswith("What is said in it is close in meaning")
    assert render(said("text")).startswith("Close in meaning to what you asked for")
    assert render(said("ocr"), "zh").startswith("画面文字与你的描述意思相近")
    # words found say more than a meaning match, and no match says nothing about meaning
    assert "close in meaning" not in render(said("tags", {"title": ["cat"]}))
    assert "close in meaning" not in render(said(""))
