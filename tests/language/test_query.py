from __future__ import annotations

import pytest

from avrec.language.query import Constraints, QueryParser, chinese_number

LABELS = ["funny", "pets", "documentary", "piano", "classical", "electronic", "dance",
          "animation", "comedy", "drama", "crime", "horror", "thriller", "romance", "fantasy",
          "jazz", "food", "Sci-Fi"]  # fmt: skip
TITLES = {"toy story": "v10", "the shawshank redemption": "v12"}


def find_title(text: str) -> str | None:
    return TITLES.get(text.lower().strip())


@pytest.fixture
def parser():
    return QueryParser(LABELS, find_title)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("a funny cat video, under a minute", {"max_duration": 60, "include": ["funny"]}),
        ("piano less than 5 minutes", {"max_duration": 300, "include": ["piano"]}),
        ("films longer than 2 hours", {"min_duration": 7200}),
        ("clips between 3 and 10 min", {"min_duration": 180, "max_duration": 600}),
        ("a 5-minute recipe", {"min_duration": 150, "max_duration": 450}),
        ("comedies from the 90s", {"include": ["comedy"], "year_from": 1990, "year_to": 1999}),
        ("thrillers from the 1980s", {"include": ["thriller"], "year_from": 1980, "year_to": 1989}),
        ("something made before 1980", {"year_to": 1979}),
        ("dramas after 2000", {"include": ["drama"], "year_from": 2001}),
        ("a film from 1995", {"year_from": 1995, "year_to": 1995}),
        ("from 2010 onwards", {"year_from": 2010}),
        ("between 1990 and 1995", {"year_from": 1990, "year_to": 1995}),
        ("romance in French", {"include": ["romance"], "languages": ["fr"]}),
        ("Spanish-language drama", {"include": ["drama"], "languages": ["es"]}),
        ("comedy but not romance", {"include": ["comedy"], "exclude": ["romance"]}),
        ("cat videos without lions", {"exclude_words": ["lions"]}),
        ("science fiction please", {"include": ["Sci-Fi"]}),
    ],
)
def test_english_constraints(parser, query, expected):
    got = parser.parse(query).constraints.model_dump(exclude_defaults=True)
    assert got == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("我喜欢节奏感强的电子音乐", {"include": ["electronic"]}),
        ("一分钟以内的搞笑猫咪视频", {"max_duration": 60, "include": ["funny"]}),
        ("不超过十分钟的钢琴曲", {"max_duration": 600, "include": ["piano"]}),
        ("半小时以上的纪录片", {"min_duration": 1800, "include": ["documentary"]}),
        ("90年代的喜剧", {"year_from": 1990, "year_to": 1999, "include": ["comedy"]}),
        ("九十年代的爱情片", {"year_from": 1990, "year_to": 1999, "include": ["romance"]}),
        ("2000年以后的动画", {"year_from": 2000, "include": ["animation"]}),
        ("喜剧，不要恐怖片", {"include": ["comedy"], "exclude": ["horror"]}),
        ("法语的爱情电影", {"languages": ["fr"], "include": ["romance"]}),
        ("猫咪视频，不要广告", {"exclude_words": ["广告"]}),
    ],
)
def test_chinese_constraints(parser, query, expected):
    got = parser.parse(query).constraints.model_dump(exclude_defaults=True)
    assert got == expected


def test_description_keeps_meaning_and_loses_constraints(parser):
    p = parser.parse("a funny cat video, under a minute")
    assert p.text == "a funny cat video"
    p = parser.parse("comedies from the 90s but not romance")
    assert "90s" not in p.text and "romance" not in p.text and "comedies" in p.text
    p = parser.parse("我喜欢节奏感强的电子音乐")
    assert "电子音乐" in p.text  # the genre word still carries meaning for the search


def test_like_a_title_is_resolved_to_the_item(parser):
    p = parser.parse("something like Toy Story but without horror")
    assert p.constraints.like == ["v10"] and p.constraints.exclude == ["horror"]
    assert "toy" not in p.text.lower()
    assert parser.parse("像《Toy Story》那样的电影").constraints.like == ["v10"]
    # a title the catalogue does not have stays in the description
    p = parser.parse("something like Nonexistent Film")
    assert p.constraints.like == [] and "Nonexistent" in p.text


def test_chinese_numbers():
    assert chinese_number("十五") == 15
    assert chinese_number("二十五") == 25
    assert chinese_number("两百") == 200
    assert chinese_number("半") == 0.5
    assert chinese_number("3") == 3
    assert chinese_number("猫") is None


def test_constraints_merge_like_a_conversation():
    first = Constraints(include=["comedy"], max_duration=3600, exclude=["horror"])
    second = Constraints(max_duration=1800, include=["horror"], languages=["fr"])
    m = first.merged(second)
    assert m.max_duration == 1800 and m.languages == ["fr"]
    assert m.include == ["comedy", "horror"] and m.exclude == []  # the newer turn wins
    assert first.max_duration == 3600  # the earlier constraints are not changed


def test_constraints_reject_nonsense():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        Constraints(max_duration=-1)
    with pytest.raises(ValidationError):
        Constraints(unknown=1)


def test_free_tags_count_only_when_written_as_tags():
    p = QueryParser(["comedy"], tags=["fancy", "cats", "comedy"])
    assert p.parse("fancy cats comedy").constraints.include == ["comedy"]  # the genre only
    assert p.parse("#fancy cats").constraints.include == ["fancy"]
    assert p.parse("videos tagged cats").constraints.include == ["cats"]
    got = p.parse("funny videos without cats").constraints
    assert got.exclude == ["cats"] and got.exclude_words == []
