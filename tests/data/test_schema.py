from __future__ import annotations

import pytest
from pydantic import ValidationError

from avrec.data.schema import Event, Item, Role, parse_duration, parse_timestamp, split_list


def test_parse_timestamp_iso_and_unix():
    assert parse_timestamp("1700000000") == 1_700_000_000.0
    assert parse_timestamp("2024-01-02T03:04:05Z") == 1704164645.0
    assert parse_timestamp("2024-01-02T05:04:05+02:00") == 1704164645.0
    assert parse_timestamp("2024-01-02 03:04:05") == 1704164645.0  # naive = UTC
    assert parse_timestamp("") is None
    with pytest.raises(ValueError, match="unparsable timestamp"):
        parse_timestamp("yesterday")


def test_split_list_accepts_pipes_and_json():
    assert split_list("jazz| piano |") == ["jazz", "piano"]
    assert split_list('["a", "b"]') == ["a", "b"]
    with pytest.raises(ValueError, match="JSON"):
        split_list("[not json")


def test_parse_duration_forms():
    assert parse_duration("90") == 90.0
    assert parse_duration("01:02:03") == 3723.0
    assert parse_duration("1h 46min") == 6360.0
    with pytest.raises(ValueError):
        parse_duration("long")


def test_item_from_text_fields():
    item = Item(
        item_id=42,
        title="Clip",
        tags="cat|funny",
        duration="00:45",
        people='[{"name": "Ann", "role": "director"}]',
        video="https://example.org/v.mp4",
        available_from="2024-01-01T00:00:00Z",
        available_until="2024-01-02T00:00:00Z",
    )
    assert item.item_id == "42"
    assert item.tags == ["cat", "funny"]
    assert item.duration == 45.0
    assert item.people[0].role is Role.DIRECTOR
    assert item.video is not None and item.video.is_remote
    assert item.is_available(1704067200.0 + 10)
    assert not item.is_available(1704153600.0)  # the window is half-open


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"people": "[{bad"}, "people"),
        ({"people": '[{"name": "A", "role": "pilot"}]'}, "role"),
        ({"video": "ftp://host/x.mp4"}, "scheme"),
        ({"available_from": 10, "available_until": 5}, "before"),
        ({"duration": -1}, "greater than or equal"),
    ],
)
def test_item_rejects_bad_fields(kwargs, message):
    with pytest.raises(ValidationError, match=message):
        Item(item_id="x", **kwargs)


def test_event_needs_item_unless_search():
    assert Event(user_id="u", event="search", text="cats", timestamp=1).item_id is None
    with pytest.raises(ValidationError, match="needs an item_id"):
        Event(user_id="u", event="play", timestamp=1)


def test_caption_entities_reads_hashtags_and_mentions():
    from avrec.data.loaders.kuairec import caption_entities

    text, tags, people = caption_entities(
        "#搞笑 #五爱市场 这真是完美搭配啊！@小王(O123456) @Young heben(O5) #话题# 结尾"
    )
    assert tags == ["搞笑", "五爱市场", "话题"]
    assert people == ["小王", "Young"]
    assert "完美搭配" in text and "#" not in text and "@" not in text
    assert caption_entities(None) == ("", [], [])
