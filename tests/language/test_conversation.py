from __future__ import annotations

import pytest

from avrec.language import MAX_QUERY_CHARS
from avrec.language.ask import Asker
from avrec.language.conversation import Conversation
from tests.language.conftest import CATALOGUE

FACTS = {c[0]: {"tags": set(c[3]), "duration": c[5], "year": c[6]} for c in CATALOGUE}


@pytest.fixture
def conv(lang_pipeline, tmp_path):
    from avrec.storage.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "store.db")
    yield Conversation(Asker(lang_pipeline), store, ttl_s=600)
    store.close()


ORDINAL = ["first", "second", "third", "fourth", "fifth"]


def test_three_turns_and_the_last_answer_honours_all_three(conv):
    first = conv.turn("c1", "comedies from the 90s", k=5)
    shown = first.items.ids
    assert len(shown) >= 3 and all("comedy" in FACTS[i]["tags"] for i in shown)
    # refer to the longest one shown, so that "shorter" leaves something to show
    pos = max(range(len(shown)), key=lambda j: FACTS[shown[j]]["duration"])
    ref = shown[pos]
    conv.turn("c1", f"more like the {ORDINAL[pos]} one", k=5)
    st = conv.state("c1")
    assert st.liked == [ref] and st.focus == ref
    last = conv.turn("c1", "shorter please", k=5)
    limit = 0.75 * FACTS[ref]["duration"]
    assert last.items.ids
    for item, why in zip(last.items.ids, last.items.fields["explanation"], strict=True):
        f = FACTS[item]
        assert "comedy" in f["tags"] and 1990 <= f["year"] <= 1999  # turn 1
        assert why["reasons"][0]["kind"] == "like"  # turn 2: chosen for resembling it
        assert why["reasons"][0]["value"]["id"] == ref
        assert f["duration"] <= limit  # turn 3: shorter than the one referred to
    assert conv.state("c1").turns == [
        "comedies from the 90s",
        f"more like the {ORDINAL[pos]} one",
        "shorter please",
    ]


def test_not_that_one_is_never_shown_again(conv):
    first = conv.turn("c3", "piano music", k=3)
    top = first.items.ids[0]
    again = conv.turn("c3", "not that one", k=3)
    assert conv.state("c3").rejected == [top]
    assert top not in again.items.ids and again.items.ids


def test_chinese_references(conv):
    first = conv.turn("c2", "钢琴音乐", k=3)
    assert first.items.ids
    third = first.items.ids[-1]
    conv.turn("c2", "不要最后一个", k=3)
    assert conv.state("c2").rejected == [third]


def test_state_expires_and_conversations_are_separate(lang_pipeline, tmp_path):
    from avrec.storage.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "s.db")
    c = Conversation(Asker(lang_pipeline), store, ttl_s=-1)  # already expired when read
    c.turn("old", "piano", k=2)
    assert c.state("old").turns == []  # a fresh start
    assert store.delete_state("conversation") == 1  # the expired one is swept
    c2 = Conversation(Asker(lang_pipeline), store, ttl_s=600)
    c2.turn("a", "piano", k=2)
    c2.turn("b", "cat", k=2)
    assert c2.state("a").turns == ["piano"] and c2.state("b").turns == ["cat"]
    store.close()


def test_a_long_turn_is_cut_and_so_is_what_the_turns_add_up_to(conv):
    """Bug #16: a 100,000-character request was read (and stored) whole."""
    res = conv.turn("c3", "calm piano music " * 6000, k=3)  # 102,000 characters
    assert res.query_truncated and len(res.query) <= MAX_QUERY_CHARS
    st = conv.state("c3")
    assert st.turns == [res.query] and len(st.text) <= MAX_QUERY_CHARS
    again = conv.turn("c3", "for studying " * 60, k=3)  # the description stays within bounds
    assert not again.query_truncated
    st = conv.state("c3")
    assert len(st.text) <= MAX_QUERY_CHARS and st.text.endswith("for studying")
