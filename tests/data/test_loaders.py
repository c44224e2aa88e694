from __future__ import annotations

import shutil

import pytest

from avrec.data.loaders import get_loader, load_dataset
from avrec.data.loaders.microlens import hashtags
from avrec.errors import ConfigError, DataError, DatasetNotFoundError
from avrec.ingest.pipeline import ingest_public

pytestmark = pytest.mark.realdata


def test_movielens_counts_and_side_information(data_dir):
    data = get_loader("movielens-100k").load(data_dir)
    assert data.meta["files"] == {"u.data": 100_000, "u.item": 1_682, "u.user": 943}
    assert (data.events.height, data.items.height, data.users.height) == (100_000, 1_682, 943)
    toy = data.items.filter(data.items["item_id"] == "1").row(0, named=True)
    assert toy["title"] == "Toy Story (1995)"
    assert '"Animation"' in toy["categories"]
    assert toy["image"].endswith("posters/1.jpg")
    assert "John Lasseter" in toy["people"] and toy["description"]
    assert data.items["image"].is_not_null().sum() == 1_620
    assert data.items["description"].is_not_null().sum() == 1_591


def test_movielens_dataset(data_dir):
    from avrec.config import Settings

    ds = load_dataset("movielens-100k", settings=Settings(data_dir=data_dir))
    assert (ds.n_users, ds.n_items, ds.n_events) == (943, 1_682, 100_000)
    assert ds.interactions.nnz == 100_000  # every rating is a positive (research protocol)
    seq = ds.sequence("1")
    assert len(seq) == 272


def test_microlens(data_dir):
    data = get_loader("microlens-50k").load(data_dir)
    assert data.events.height == 359_708
    assert data.events["user_id"].n_unique() == 50_000
    assert data.items.height == 19_220
    videos = data.items.filter(data.items["video"].is_not_null())["item_id"].to_list()
    assert sorted(videos, key=int) == ["1002", "10034", "10040"]
    first = data.events.filter(data.events["user_id"] == "1")
    assert first["item_id"].to_list() == ["1958", "6346", "15223", "17700", "1707"]
    assert first["ts"].to_list() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_hashtags():
    assert hashtags("dish so hot # I am the king # summer food") == (
        "dish so hot",
        ["I am the king", "summer food"],
    )


def test_lastfm(data_dir):
    data = get_loader("lastfm-2k").load(data_dir)
    assert (data.events.height, data.items.height, data.users.height) == (92_834, 17_632, 1_892)
    assert data.items.filter(data.items["item_id"] == "1")["title"].item() == "MALICE MIZER"
    assert data.users["attributes"].str.contains("friends").all()


def test_missing_dataset_names_file_and_url(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        get_loader("movielens-100k").load(tmp_path)
    msg = str(err.value)
    assert "u.data" in msg and "https://files.grouplens.org" in msg and "AVREC_DATA_DIR" in msg


def test_count_mismatch_names_the_file(data_dir, tmp_path):
    copy = tmp_path / "movielens-100k"
    shutil.copytree(data_dir / "movielens-100k", copy, ignore=shutil.ignore_patterns("posters"))
    lines = (copy / "u.data").read_text().splitlines()[:-10]
    (copy / "u.data").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"u.data: expected 100,000 rows.*found 99,990"):
        get_loader("movielens-100k").load(tmp_path)


def test_unknown_dataset():
    known = "known: kuairec-captions, lastfm-2k, microlens-50k, movielens-100k"
    with pytest.raises(ConfigError, match=known):
        get_loader("netflix")


def test_ingest_public_is_idempotent(data_dir, store):
    data = get_loader("movielens-100k").load(data_dir)
    reports = ingest_public(store, data)
    assert [r.rejected for r in reports] == [0, 0, 0]
    assert store.counts()["events"] == 100_000
    assert store.counts()["items"] == 1_682 and store.counts()["placeholder_items"] == 0
    again = ingest_public(store, data)
    assert again[-1].inserted == 0 and again[-1].duplicates == 100_000
    assert store.counts()["events"] == 100_000


def test_kuairec_captions_rejoins_the_broken_records_and_says_so(data_dir, store):
    """Bug #17: four records are broken by a line break inside an unquoted caption; each is
    rejoined and reported with its lines, none swallowed, none guessed."""
    data = get_loader("kuairec-captions").load(data_dir)
    assert data.items.height == 10_728 and data.events.height == 0
    assert data.items["item_id"].n_unique() == 10_728
    lines = sorted(int(n.split(":")[0].removeprefix("line ")) for n in data.notes)
    assert lines == [1380, 1616, 5914, 6336]
    row = data.items.filter(data.items["item_id"] == "1378").row(0, named=True)
    assert row["description"].endswith("王朝\n！”")
    assert '"明星娱乐"' in row["categories"]
    # hashtags join the topic tags; mentioned accounts are the item's people
    tagged = data.items.filter(data.items["item_id"] == "4").row(0, named=True)
    assert tagged["title"] == "五爱街最美美女 一天1q"
    assert {"搞笑", "五爱市场"} <= set(__import__("json").loads(tagged["tags"]))
    assert data.items["people"].str.contains('"role": "guest"').sum() > 1000
    reports = ingest_public(store, data)
    assert reports[0].accepted == 10_728 and reports[0].rejected == 0
    assert store.counts()["events"] == 0
