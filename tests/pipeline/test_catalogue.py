"""A catalogue without behaviour trains and answers anyone (issue #17, part 3)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl

from avrec.data.dataset import Dataset
from avrec.data.weighting import EventWeighting
from avrec.pipeline.catalogue import catalogue_order
from avrec.pipeline.pipeline import Pipeline

DAY = 86400.0


def cold_catalogue() -> Dataset:
    """12 items in three categories, no events: item 7 is an editor's pick, items 9-11 are the
    newest."""
    cats = ["音乐", "美食", "宠物"]
    items = pl.DataFrame(
        {
            "item_id": [f"v{i}" for i in range(12)],
            "title": [f"video {i}" for i in range(12)],
            "categories": [json.dumps([cats[i % 3]], ensure_ascii=False) for i in range(12)],
            "created_at": [1000.0 * DAY + i * (DAY if i >= 9 else 0) for i in range(12)],
            "attributes": [json.dumps({"editorial_boost": 2} if i == 7 else {}) for i in range(12)],
        }
    )
    events = pl.DataFrame(schema={"user_id": pl.String, "item_id": pl.String, "ts": pl.Float64})
    return Dataset.from_events(events, items, EventWeighting.binary(), name="cold")


def test_catalogue_order_puts_picks_first_then_new_items_dealt_across_groups():
    boost = np.array([0, 0, 0, 0, 1.0, 0])
    born = np.array([1.0, 5.0, np.nan, 3.0, 0.0, 4.0])
    groups = ["a", "a", "b", "a", "b", "b"]
    # pick 4 first; then newest first: 1 (a), 5 (b), 3 (a), ... dealt a, b, a, b
    assert catalogue_order(boost, born, groups).tolist() == [4, 1, 5, 3, 2, 0]


def test_a_pipeline_without_events_recommends_the_catalogue_to_anyone(tmp_path):
    ds = cold_catalogue()
    p = Pipeline().fit(ds)
    assert any(src.kind == "catalogue" for src, _ in p.sources)
    lists = p.recommend_explained(["someone", "anyone"], k=6)
    ids = lists[0].ids
    assert lists[1].ids == ids and len(ids) == 6
    assert ids[0] == "v7"  # the editor's pick
    assert ids[1] == "v11"  # then the newest
    assert len({json.loads(ds.catalogue.filter(pl.col("item_id") == i)["categories"][0])[0]
                for i in ids[1:4]}) == 3  # fmt: skip
    again = Pipeline.load(p.save(tmp_path / "bundle"))
    assert again.recommend_explained(["someone"], k=6)[0].ids == ids


def test_a_workspace_with_only_a_catalogue_trains_and_answers(tmp_path):
    """Bug #17: `avrec train` stopped with "no events to train on", so a launching platform
    could neither search nor recommend."""
    import subprocess

    from tests.cli.test_cli import AVREC

    def avrec(*args):
        return subprocess.run(
            [AVREC, "-w", str(tmp_path / "ws"), *args], capture_output=True, text=True, timeout=600
        )

    assert avrec("init", str(tmp_path / "ws")).returncode == 0
    items = tmp_path / "items.csv"
    items.write_text(
        "item_id,title,tags,categories,created_at\n"
        "a,Quiet piano for sleep,piano|calm,音乐,2024-01-01\n"
        "b,Drum and bass mix,electronic,音乐,2024-02-01\n"
        "c,红烧肉的做法,家常菜,美食,2024-03-01\n"
        "d,猫咪搞笑合集,搞笑,宠物,2024-03-05\n",
        encoding="utf-8",
    )
    assert avrec("ingest", "items", str(items)).returncode == 0
    train = avrec("train")
    assert train.returncode == 0, train.stderr
    assert "no events yet" in train.stdout
    rec = avrec("recommend", "--user", "newcomer", "--k", "3", "--json")
    assert rec.returncode == 0, rec.stderr
    got = [r["item_id"] for r in json.loads(rec.stdout)[0]["items"]]
    assert got[:3] == ["d", "c", "b"]  # newest first, one per category before repeating
    found = avrec("search", "piano", "--json")
    assert found.returncode == 0 and json.loads(found.stdout)["items"][0]["item_id"] == "a"
