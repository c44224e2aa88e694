from __future__ import annotations

from avrec.language.tokens import stem, tokenize


def test_english_words_are_stemmed_and_stop_words_dropped():
    assert tokenize("Relaxing piano music for studying") == ["relax", "piano", "music", "studi"]
    assert tokenize("Relaxing piano", stem=False) == ["relaxing", "piano"]
    assert tokenize("Schindler's List (1993)") == ["schindler", "list", "1993"]
    assert tokenize("") == [] and tokenize(None) == []


def test_chinese_is_segmented_in_search_mode():
    toks = tokenize("我喜欢节奏感强的电子音乐")
    assert {"电子音乐", "电子", "音乐", "节奏"} <= set(toks)
    assert not {"我", "喜欢", "的"} & set(toks)  # function words carry no topic


def test_mixed_text_keeps_both_scripts_in_order():
    toks = tokenize("经典 90s film 钢琴")
    assert toks == ["经典", "90s", "film", "钢琴"]
    assert stem(["stories", "钢琴"]) == ["stori", "钢琴"]
