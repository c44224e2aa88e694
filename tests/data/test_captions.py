from __future__ import annotations

import json

import polars as pl

from avrec.data.captions import caption_entities, with_caption_entities
from avrec.data.dataset import Dataset
from avrec.ingest.pipeline import ingest_file
from tests.conftest import write

ITEMS = """item_id,title,description,tags,people
c1,海边日落 #旅行# #vlog,和 @小王(O123) 一起看日落 #旅行#,"[""风景""]",
c2,Rain on the window,"ASMR for sleep #asmr #rain, see https://example.com/#top or mail a@b.com",,
c3,Plain,no tag #1 #2024,"[""calm""]","[{""name"": ""Ann"", ""role"": ""host""}]"
"""


def test_addresses_and_numbers_are_not_hashtags_or_mentions():
    text, tags, people = caption_entities("see https://example.com/#top, a@b.com #2024 #真好 @Li")
    assert tags == ["真好"] and people == ["Li"]
    assert "example" not in text and "真好" not in text


def test_a_workspace_reads_hashtags_and_mentions_as_tags_and_people(store, tmp_path):
    """Any catalogue's captions, not only the KuaiRec loader's: the hashtags of the title and
    description join the item's tags, the accounts they mention its people; the stored text
    stays as written, and items without either are left alone."""
    rep = ingest_file(store, write(tmp_path / "items.csv", ITEMS), "items")
    assert rep.accepted == 3
    stored = store.items().sort("item_id")
    assert "#旅行#" in stored["title"][0]  # the store keeps what was ingested
    data = Dataset.from_store(store)
    tags = dict(zip(data.items.lookup(range(data.n_items)), data.item_tags, strict=True))
    people = dict(zip(data.items.lookup(range(data.n_items)), data.item_people, strict=True))
    assert tags["c1"] == ["风景", "旅行", "vlog"]
    assert people["c1"] == [{"name": "小王", "role": "guest"}]
    assert tags["c2"] == ["asmr", "rain"] and people["c2"] == []  # no address read
    assert tags["c3"] == ["calm"] and people["c3"] == [{"name": "Ann", "role": "host"}]


def test_frames_without_text_or_entities_are_returned_unchanged():
    frame = pl.DataFrame({"item_id": ["a"], "title": ["no tags"], "tags": [json.dumps(["x"])]})
    assert with_caption_entities(frame) is frame
    no_text = frame.drop("title")
    assert with_caption_entities(no_text) is no_text
