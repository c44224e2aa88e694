"""Word-by-word translation of requests (CC-CEDICT) and the search legs that use it."""

from __future__ import annotations

from avrec.language.search import SearchIndex
from avrec.language.translate import cjk_share, dictionary, request_language

DOCS = [
    {"title": "Whiskers", "description": "a cat chases a red ball around the kitchen"},
    {"title": "Harbour", "description": "a banker sent to prison digs a tunnel and escapes"},
    {"title": "Night drive", "description": "neon city streets and electronic music"},
    {"title": "小猫", "description": "一只小猫在厨房里追球"},  # a Chinese quarter
]


def test_languages_of_requests():
    assert request_language("我喜欢节奏感强的电子音乐") == "zh"
    assert request_language("relaxing piano music") == "en"
    assert request_language("想看 BBC 的纪录片") == "zh"  # a Latin name inside Chinese
    assert cjk_share("") == 0.0


def test_both_directions():
    lex = dictionary()
    en = lex.translate("银行家被冤枉入狱，挖地道越狱", "en")
    assert "banker" in en and "tunnel" in en and "prison" in en
    assert "quilt" not in en  # 被 is a function word here, not its first gloss
    zh = lex.translate("a cat and electronic music", "zh")
    assert "猫" in zh and "音乐" in zh
    assert lex.translate("relaxing piano music", "en") == ""  # already English
    assert lex.translate("纯属虚构", "zh") == ""


def test_translated_words_join_the_keyword_leg_only_when_asked():
    idx = SearchIndex(weights={"semantic": 0, "multilingual": 0}, translate_keywords=False).fit(
        DOCS
    )
    assert idx.search("银行家挖地道", k=3, mode="keyword") == []  # no Chinese word in the plots
    idx.translate_keywords = True
    hits = idx.search("银行家挖地道", k=3, mode="keyword")
    assert hits and hits[0].item == 1
    # a catalogue with no Chinese at all is not searched in Chinese for an English request
    en_only = SearchIndex(translate_keywords=True).fit(DOCS[:3])
    assert en_only.zh_share == 0.0 and en_only.translation("a cat") == ""
    # a request is translated into the catalogue's majority language only: this one is a
    # quarter Chinese, so an English request is not; a mostly Chinese one translates it
    assert idx.translation("a cat") == ""
    zh = SearchIndex().fit([DOCS[3]] * 3 + [DOCS[0]])
    assert "猫" in zh.translation("a cat") and zh.translation("小猫") == ""


def test_the_language_share_survives_save_and_load(tmp_path):
    idx = SearchIndex().fit(DOCS)
    idx.save(tmp_path / "s")
    assert SearchIndex().load(tmp_path / "s").zh_share == idx.zh_share == 0.25
