from __future__ import annotations

import csv

import polars as pl
import pytest

from avrec.config import EventsConfig, IngestConfig, WorkspaceConfig
from avrec.errors import DataError
from avrec.ingest.pipeline import ingest_file
from tests.conftest import write

EVENTS = """user_id,item_id,event,value,timestamp,device
u1,i1,play,0.9,2024-01-01T10:00:00Z,tv
u1,i2,like,,1704103200,
u2,i1,play,0.2,2024-01-01T11:00:00+01:00,phone
u2,,search,,1704103300,
"""


def read_rejects(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_events_ingest_and_context(store, tmp_path):
    rep = ingest_file(store, write(tmp_path / "e.csv", EVENTS), "events")
    assert (rep.rows, rep.accepted, rep.rejected, rep.inserted) == (4, 4, 0, 4)
    ev = store.events()
    assert ev.height == 4
    assert ev["ts"].to_list() == sorted(ev["ts"].to_list())
    first = ev.filter(pl.col("user_id") == "u1", pl.col("item_id") == "i1").row(0, named=True)
    assert first["ts"] == 1704103200.0 and first["context"] == '{"device":"tv"}'
    assert ev.filter(pl.col("event") == "search")["item_id"].to_list() == [None]
    assert store.counts()["placeholder_items"] == 2  # i1, i2 not in any catalogue yet


def test_broken_file_goes_to_rejects_and_good_rows_stay(store, tmp_path):
    p = tmp_path / "broken.csv"
    p.write_bytes(
        b"user_id,item_id,event,value,timestamp\n"
        b"u1,i1,play,1,1700000000\n"  # 2 ok
        b"u\xff,i1,play,1,1700000000\n"  # 3 bad encoding
        b"u2,i2,play,1,not-a-time\n"  # 4 bad timestamp
        b"u3,i3,teleport,1,1700000000\n"  # 5 unknown type
        b",i3,play,1,1700000000\n"  # 6 missing user
        b"u4,i4,play,abc,1700000000\n"  # 7 bad value
        b"u5,i5,play,1\n"  # 8 missing field
        b"u1,i1,play,1,1700000000\n"  # 9 duplicate of line 2
        b"u6,i6,like,,\n"  # 10 missing timestamp
        b"u7,i7,like,,1700000001\n"  # 11 ok
    )
    rep = ingest_file(store, p, "events", rejects_dir=tmp_path / "rej")
    assert rep.rows == 10 and rep.accepted == 3 and rep.rejected == 7
    assert rep.inserted == 2 and rep.duplicates == 1
    rejected = {int(r["line"]): r["reason"] for r in read_rejects(rep.rejects_path)}
    assert rejected == {
        3: "invalid UTF-8 in column 'user_id'",
        4: "unparsable timestamp 'not-a-time'",
        5: "unknown event type 'teleport'",
        6: "missing user_id",
        7: "value 'abc' is not a finite number",
        8: "expected 5 fields, found 4",
        10: "missing timestamp",
    }
    assert all(r["file"] == str(p) for r in read_rejects(rep.rejects_path))
    assert store.counts()["events"] == 2


def test_reingest_is_idempotent(store, tmp_path):
    p = write(tmp_path / "e.csv", EVENTS)
    ingest_file(store, p, "events")
    before = store.events()
    rep = ingest_file(store, p, "events")
    assert rep.inserted == 0 and rep.duplicates == 4
    assert store.events().equals(before)
    assert len(store.ingests()) == 2


def test_corrected_value_replaces_stored_event(store, tmp_path):
    ingest_file(
        store,
        write(tmp_path / "a.csv", "user_id,item_id,event,value,timestamp\nu,i,play,0.1,100\n"),
        "events",
    )
    ingest_file(
        store,
        write(tmp_path / "b.csv", "user_id,item_id,event,value,timestamp\nu,i,play,0.8,100\n"),
        "events",
    )
    assert store.events()["value"].to_list() == [0.8]


def test_missing_required_column_is_a_clear_error(store, tmp_path):
    with pytest.raises(DataError, match=r"missing required column.*user_id.*--map"):
        ingest_file(store, write(tmp_path / "e.csv", "uid,item_id\n1,2\n"), "events")
    assert store.counts()["events"] == 0


def test_mapping_and_custom_types(store, tmp_path):
    cfg = WorkspaceConfig(events=EventsConfig(custom_types=["add_to_playlist"]))
    p = write(tmp_path / "e.csv", "uid,vid,kind,when\nu1,v1,add_to_playlist,5\n")
    rep = ingest_file(
        store,
        p,
        "events",
        cfg,
        mapping={"user_id": "uid", "item_id": "vid", "event": "kind", "timestamp": "when"},
    )
    assert rep.accepted == 1
    assert store.events()["event"].to_list() == ["add_to_playlist"]
    with pytest.raises(DataError, match="not in the file"):
        ingest_file(store, p, "events", cfg, mapping={"user_id": "nope"})


def test_no_timestamp_column_orders_by_line(store, tmp_path):
    rep = ingest_file(store, write(tmp_path / "e.csv", "user_id,item_id\nu,b\nu,a\n"), "events")
    assert "ordered by line" in rep.notes[0]
    assert store.events()["item_id"].to_list() == ["b", "a"]


def test_reject_ratio_rolls_back_everything(store, tmp_path):
    cfg = WorkspaceConfig(ingest=IngestConfig(max_reject_ratio=0.1))
    p = write(tmp_path / "e.csv", "user_id,item_id,timestamp\nu,a,1\nu,b,x\n")
    with pytest.raises(DataError, match="max_reject_ratio"):
        ingest_file(store, p, "events", cfg)
    assert store.counts() == {
        "users": 0,
        "items": 0,
        "placeholder_items": 0,
        "events": 0,
        "excluded_users": 0,
    }


def test_items_with_mapping_lists_people_and_upsert(store, tmp_path):
    p = write(
        tmp_path / "items.csv",
        "video_id,name,tags,people,duration,studio\n"
        'v1,Cats,cat|funny,"[{""name"": ""Ann"", ""role"": ""host""}]",00:30,acme\n'
        "v2,Dogs,,,12,\n"
        'v3,Bad,,"[{""name"": ""X"", ""role"": ""pilot""}]",,\n'
        ",NoId,,,,\n",
    )
    rep = ingest_file(
        store, p, "items", mapping={"item_id": "video_id", "title": "name"}, rejects_dir=tmp_path
    )
    assert (rep.accepted, rep.rejected, rep.inserted) == (2, 2, 2)
    reasons = sorted(r["reason"] for r in read_rejects(rep.rejects_path))
    assert reasons[0] == "missing item_id" and reasons[1].startswith("people.0.role")
    items = store.items().filter(~pl.col("placeholder"))
    v1 = items.filter(pl.col("item_id") == "v1").row(0, named=True)
    assert v1["tags"] == '["cat", "funny"]' and v1["duration"] == 30.0
    assert '"host"' in v1["people"] and v1["attributes"] == '{"studio": "acme"}'
    # a partial file updates only the columns it has
    rep2 = ingest_file(store, write(tmp_path / "t.csv", "item_id,title\nv1,Cats!\n"), "items")
    assert (rep2.inserted, rep2.updated) == (0, 1)
    v1 = store.items().filter(pl.col("item_id") == "v1").row(0, named=True)
    assert v1["title"] == "Cats!" and v1["duration"] == 30.0


def test_events_then_catalogue_fills_placeholders(store, tmp_path):
    ingest_file(store, write(tmp_path / "e.csv", "user_id,item_id,timestamp\nu,v9,1\n"), "events")
    assert store.counts()["placeholder_items"] == 1
    ingest_file(store, write(tmp_path / "i.jsonl", '{"item_id": "v9", "title": "Nine"}\n'), "items")
    assert store.counts()["placeholder_items"] == 0


def test_users_file(store, tmp_path):
    rep = ingest_file(
        store,
        write(tmp_path / "u.csv", "user_id,age_band,region\n1,18-24,EU\n,x,y\n"),
        "users",
        rejects_dir=tmp_path,
    )
    assert rep.accepted == 1 and rep.rejected == 1
    assert store.users()["attributes"].to_list() == ['{"age_band": "18-24", "region": "EU"}']


def test_parquet_events(store, tmp_path):
    p = tmp_path / "e.parquet"
    pl.DataFrame(
        {
            "user_id": ["a", "b"],
            "item_id": ["x", "y"],
            "event": ["like", "view"],
            "timestamp": [1.5, 2.5],
        }
    ).write_parquet(p)
    rep = ingest_file(store, p, "events")
    assert rep.accepted == 2
    assert store.event_type_counts() == {"like": 1, "view": 1}
