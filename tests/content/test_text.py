"""Keywords, people, sentiment, subtitles and script detection on small hand-made texts."""

from __future__ import annotations

from pathlib import Path

import pytest

from avrec.content.text import (
    KeywordExtractor,
    PeopleMatcher,
    SentimentScorer,
    cjk_ratio,
    guess_script_language,
    subtitle_text,
)

# -- keywords ------------------------------------------------------------------------------------

CORPUS = [
    "Cooking video: how to bake sourdough bread",
    "Travel video through the mountains of Norway",
    "Guitar lesson video for beginners",
    "Funny cats compilation video",
]


def test_keyword_common_word_ranks_below_rare_word():
    kx = KeywordExtractor(CORPUS)
    assert kx.n_docs == len(CORPUS)
    # same term frequency: only the document frequency separates them
    words = [w for w, _ in kx.extract("video about sourdough", k=5)]
    assert words.index("sourdough") < words.index("video")
    # a word in no catalogue document ranks above one in a single document
    words = [w for w, _ in kx.extract("sourdough kombucha video", k=5)]
    assert words == ["kombucha", "sourdough", "video"]


def test_keyword_without_corpus_prefers_frequent_words():
    words = [w for w, _ in KeywordExtractor().extract("guitar guitar guitar piano", k=5)]
    assert words[0] == "guitar"
    assert "piano" in words


def test_keywords_sorted_and_limited_to_k():
    out = KeywordExtractor(CORPUS).extract(
        "mountains rivers forests glaciers fjords sunsets bread cats", k=3
    )
    assert len(out) == 3
    weights = [w for _, w in out]
    assert weights == sorted(weights, reverse=True)
    assert all(w > 0 for w in weights)


def test_stopwords_never_appear():
    text = "This is the best film and the movie of the year, and they don't stop there"
    words = {w for w, _ in KeywordExtractor(CORPUS).extract(text, k=50)}
    assert words  # something remains ("best", "year", "stop")
    for stop in ("this", "the", "and", "they", "there", "film", "movie", "don", "of"):
        assert stop not in words
    assert all(len(w) > 2 for w in words)


def test_chinese_keywords_from_jieba():
    words = [w for w, _ in KeywordExtractor().extract("我喜欢节奏感强的电子音乐", k=5)]
    assert "电子音乐" in words or "节奏感" in words
    assert all(len(w) >= 2 for w in words)  # jieba words, not single characters


def test_mixed_chinese_english_gives_both():
    words = [w for w, _ in KeywordExtractor(CORPUS).extract("电子音乐现场 techno festival", k=10)]
    assert any(guess_script_language(w) == "zh" for w in words)
    assert "techno" in words and "festival" in words


@pytest.mark.parametrize("text,k", [("", 5), ("   \n", 5), ("sourdough bread", 0), ("abc", -1)])
def test_keywords_empty(text, k):
    assert KeywordExtractor(CORPUS).extract(text, k=k) == []


# -- people --------------------------------------------------------------------------------------

CREDITS = [
    ("Steven Spielberg", "director"),
    ("Steven Spielberg", "producer"),
    ("Tom Hanks", "cast"),
    ("Madonna", "artist"),
    ("周星驰", "director"),
    ("吴孟达", "cast"),
    ("成龙", "cast"),
    ("", "cast"),
]


def test_people_latin_case_insensitive_word_boundaries():
    pm = PeopleMatcher(CREDITS)
    found = dict(pm.find("a film by steven spielberg."))
    assert found == {"Steven Spielberg": ("director", "producer")}  # roles merged, sorted
    assert pm.find("STEVEN SPIELBERG's best") == [("Steven Spielberg", ("director", "producer"))]


def test_people_not_matched_inside_longer_words():
    pm = PeopleMatcher(CREDITS)
    assert pm.find("the tom hanksville gazette") == []
    assert pm.find("atom hanks") == []
    assert pm.find("steven spielbergian framing") == []


def test_people_one_word_names_ignored_at_min_tokens_2():
    pm = PeopleMatcher(CREDITS)
    assert pm.find("a new madonna song") == []
    assert len(pm) == 5  # two Latin names, three CJK names; the blank and one-word ones dropped


def test_people_one_word_names_found_at_min_tokens_1():
    pm = PeopleMatcher(CREDITS, min_tokens=1)
    assert pm.find("a new Madonna song") == [("Madonna", ("artist",))]


def test_people_cjk_names_inside_chinese_text():
    pm = PeopleMatcher(CREDITS)
    found = pm.find("这是周星驰导演的喜剧，吴孟达也出演了")
    assert found == [("周星驰", ("director",)), ("吴孟达", ("cast",))]
    assert pm.find("周星星的电影") == []


def test_people_order_of_appearance():
    pm = PeopleMatcher(CREDITS)
    names = [n for n, _ in pm.find("Tom Hanks stars; Steven Spielberg directs; tom hanks again")]
    assert names == ["Tom Hanks", "Steven Spielberg"]
    names = [n for n, _ in pm.find("吴孟达和周星驰")]
    assert names == ["吴孟达", "周星驰"]
    names = [n for n, _ in pm.find("成龙 和 周星驰")]  # a shorter name first
    assert names == ["成龙", "周星驰"]


def test_people_latin_name_inside_chinese_text():
    pm = PeopleMatcher(CREDITS)
    names = [n for n, _ in pm.find("周星驰推荐Steven Spielberg的电影，吴孟达说好")]
    assert names == ["周星驰", "Steven Spielberg", "吴孟达"]


def test_people_longest_name_wins():
    pm = PeopleMatcher([("Spielberg", "crew"), ("Steven Spielberg", "director")], min_tokens=1)
    assert pm.find("steven spielberg") == [("Steven Spielberg", ("director",))]
    pm = PeopleMatcher([("周星", "crew"), ("周星驰", "director")])
    assert pm.find("周星驰") == [("周星驰", ("director",))]


def test_mentions_once_with_first_source():
    pm = PeopleMatcher(CREDITS)
    got = pm.mentions(
        {
            "title": "Tom Hanks interview",
            "description": "Steven Spielberg and Tom Hanks talk",
            "comments": "周星驰 fans and steven spielberg fans",
        }
    )
    assert [(m.name, m.source) for m in got] == [
        ("Tom Hanks", "title"),
        ("Steven Spielberg", "description"),
        ("周星驰", "comments"),
    ]
    assert got[1].roles == ("director", "producer")
    assert pm.mentions({"title": "", "description": "nobody known"}) == []


# -- sentiment -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scorer():
    return SentimentScorer()


def test_sentiment_english(scorer):
    assert scorer.score("I love this, it is wonderful and absolutely amazing!") > 0.3
    assert scorer.score("This is terrible, awful and boring. I hate it.") < -0.3
    assert scorer.score("") == 0.0
    assert scorer.score("   ") == 0.0


def test_sentiment_chinese(scorer):
    pos = scorer.score("这部电影太好看了，我非常喜欢")
    neg = scorer.score("太难看了，浪费时间，很失望")
    assert pos > neg
    assert -1.0 <= neg <= 1.0 and -1.0 <= pos <= 1.0


def test_sentiment_summarise(scorer):
    texts = [
        "I love this, it is wonderful!",
        "Fantastic, great work, brilliant",
        "This is terrible and awful.",
        "",  # ignored
        "   ",  # ignored
    ]
    s = scorer.summarise(texts)
    assert s is not None
    assert s["count"] == 3.0
    assert s["positive"] == pytest.approx(2 / 3)
    assert s["negative"] == pytest.approx(1 / 3)
    scores = [scorer.score(t) for t in texts[:3]]
    assert s["mean"] == pytest.approx(sum(scores) / 3)


def test_sentiment_summarise_empty(scorer):
    assert scorer.summarise([]) is None
    assert scorer.summarise(["", "  "]) is None


# -- subtitles -----------------------------------------------------------------------------------

SRT = """\ufeff1
00:00:01,000 --> 00:00:03,500
<i>Hello there.</i>

2
00:00:03,600 --> 00:00:05,000
Hello there.

3
00:00:05,100 --> 00:00:07,000
How are <b>you</b> today?
{\\an8}Fine, thanks.

4
00:00:07,100 --> 00:00:08,000
42

5
00:00:08,100 --> 00:00:09,000
NOTE THE TIME
"""

VTT = """WEBVTT
Kind: captions
Language: en

NOTE This is a comment
that spans two lines

STYLE
::cue { color: yellow }

intro
00:00.000 --> 00:02.000 align:start position:10%
<v Roger>Welcome back</v>

00:02.000 --> 00:04.000 line:0
Welcome back

00:04.000 --> 00:06.000
<c.yellow>Let's begin.</c>
Let's begin.
"""


def test_subtitle_srt(tmp_path: Path):
    p = tmp_path / "a.srt"
    p.write_text(SRT, encoding="utf-8")
    lines = subtitle_text(p).split("\n")
    assert lines == ["Hello there.", "How are you today?", "Fine, thanks.", "42", "NOTE THE TIME"]


def test_subtitle_vtt(tmp_path: Path):
    p = tmp_path / "a.vtt"
    p.write_text(VTT, encoding="utf-8")
    assert subtitle_text(p).split("\n") == ["Welcome back", "Let's begin."]


def test_subtitle_plain_text_and_max_chars(tmp_path: Path):
    p = tmp_path / "a.txt"
    p.write_text("first line\n\nsecond line\nsecond line\nthird", encoding="utf-8")
    assert subtitle_text(p) == "first line\nsecond line\nthird"
    assert subtitle_text(p, max_chars=5) == "first"


# -- script --------------------------------------------------------------------------------------


def test_cjk_ratio():
    assert cjk_ratio("") == 0.0
    assert cjk_ratio("   ") == 0.0
    assert cjk_ratio("hello") == 0.0
    assert cjk_ratio("电影") == 1.0
    assert cjk_ratio("电影 ab") == pytest.approx(0.5)  # spaces not counted


def test_guess_script_language():
    assert guess_script_language("") is None
    assert guess_script_language("  \n") is None
    assert guess_script_language("a nice movie") == "en"
    assert guess_script_language("一部好电影") == "zh"
    assert guess_script_language("周星驰 in Hustle") == "zh"  # 3 of 11 characters are CJK
    assert guess_script_language("a very long english sentence with 电") == "en"
