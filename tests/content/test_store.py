"""ContentStore: file hash cache, media/segment caches, item results, attaching to a Dataset."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import avrec.content.store as store_mod
from avrec.content.store import ContentStore, file_sha256
from avrec.data.dataset import Dataset
from avrec.data.weighting import EventWeighting
from avrec.errors import StoreError


@pytest.fixture
def cs(tmp_path: Path):
    s = ContentStore(tmp_path / "ws" / "content.db")  # parent folder created
    yield s
    s.close()


def _row(item_id: str, key: str, status: str = "ok", **vectors: np.ndarray) -> dict:
    return {
        "item_id": item_id,
        "key": key,
        "status": status,
        "errors": [f"{item_id}: none"],
        "info": {"title": f"标题 {item_id}", "n": 3},
        "vectors": vectors,
    }


# -- files ---------------------------------------------------------------------------------------


def test_file_sha256_matches_hashlib(tmp_path: Path):
    p = tmp_path / "big.bin"
    data = os.urandom(3 * 1024 + 7)
    p.write_bytes(data)
    assert file_sha256(p, chunk=1000) == hashlib.sha256(data).hexdigest()


def test_file_hash_cached_until_file_changes(cs, tmp_path: Path, monkeypatch):
    p = tmp_path / "video.mp4"
    p.write_bytes(b"first version")
    h1 = cs.file_hash(p)
    assert h1 == hashlib.sha256(b"first version").hexdigest()

    def boom(*a, **k):
        raise AssertionError("file re-read although unchanged")

    monkeypatch.setattr(store_mod, "file_sha256", boom)
    assert cs.file_hash(p) == h1  # from the cache
    assert cs.file_hash(str(p)) == h1  # same file, path as str
    monkeypatch.undo()

    p.write_bytes(b"second, longer version")  # new size
    h2 = cs.file_hash(p)
    assert h2 == hashlib.sha256(b"second, longer version").hexdigest() != h1
    # same size, new modification time: re-hashed too
    p.write_bytes(b"SECOND, LONGER VERSION")
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert cs.file_hash(p) == hashlib.sha256(b"SECOND, LONGER VERSION").hexdigest()


def test_file_hash_missing_file_raises_oserror(cs, tmp_path: Path):
    with pytest.raises(OSError):
        cs.file_hash(tmp_path / "nope.mp4")


# -- media ---------------------------------------------------------------------------------------


def test_media_round_trip(cs):
    assert cs.get_media("k1") is None
    assert cs.media_errors("k1") is None
    rng = np.random.default_rng(0)
    vis = rng.normal(size=8)  # float64 in, float32 out
    aud = rng.normal(size=5).astype(np.float32)
    result = {"speech": {"language": "zh", "text": "你好"}, "frames": [1.5, 3.0], "ok": True}
    cs.put_media("k1", result, {"visual": vis, "audio": aud})
    assert cs.media_errors("k1") == []
    cs.put_media("k2", {"errors": ["video: truncated"]}, {})
    assert cs.media_errors("k2") == ["video: truncated"]
    got_result, got_vecs = cs.get_media("k1")
    assert got_result == result
    assert set(got_vecs) == {"visual", "audio"}
    assert got_vecs["visual"].dtype == np.float32
    np.testing.assert_array_equal(got_vecs["visual"], vis.astype(np.float32))
    np.testing.assert_array_equal(got_vecs["audio"], aud)
    # replacing drops vectors that are no longer there
    cs.put_media("k1", {"ok": False}, {"audio": aud * 2})
    got_result, got_vecs = cs.get_media("k1")
    assert got_result == {"ok": False}
    assert list(got_vecs) == ["audio"]
    np.testing.assert_array_equal(got_vecs["audio"], aud * 2)


def test_meta_round_trip(cs):
    assert cs.get_meta("calib") is None
    cs.put_meta("calib", {"text": [0.1, 0.2]})
    assert cs.get_meta("calib") == {"text": [0.1, 0.2]}
    cs.put_meta("calib", [1])
    assert cs.get_meta("calib") == [1]


# -- segments ------------------------------------------------------------------------------------


def test_segments_round_trip_with_batches(cs):
    rng = np.random.default_rng(1)
    vecs = {f"seg{i:04d}": rng.normal(size=4).astype(np.float32) for i in range(1203)}
    cs.put_segments(vecs)
    keys = list(vecs) + ["missing-a", "missing-b"]
    got = cs.get_segments(keys)
    assert set(got) == set(vecs)  # all three batches of 500, missing keys left out
    for k, v in vecs.items():
        np.testing.assert_array_equal(got[k], v)
    assert cs.get_segments([]) == {}
    # overwrite one
    cs.put_segments({"seg0001": np.ones(4)})
    np.testing.assert_array_equal(cs.get_segments(["seg0001"])["seg0001"], np.ones(4, np.float32))


# -- items ---------------------------------------------------------------------------------------


def test_items_round_trip(cs):
    assert cs.item("i1") is None
    assert cs.item_keys() == {}
    assert cs.status_counts() == {}
    t = np.arange(4, dtype=np.float32) / 7
    cs.put_items([_row("i1", "key1", text=t, visual=np.ones(3)), _row("i2", "key2")])
    got = cs.item("i1")
    assert got["item_id"] == "i1" and got["status"] == "ok"
    assert got["errors"] == ["i1: none"]
    assert got["info"] == {"title": "标题 i1", "n": 3}
    assert isinstance(got["updated_at"], float)
    np.testing.assert_array_equal(got["vectors"]["text"], t)
    np.testing.assert_array_equal(got["vectors"]["visual"], np.ones(3, np.float32))
    assert cs.item("i2")["vectors"] == {}
    assert cs.item_keys() == {"i1": "key1", "i2": "key2"}
    assert cs.infos()["i2"] == {"title": "标题 i2", "n": 3}
    assert sorted(cs.modalities()) == ["text", "visual"]
    # re-writing an item replaces its key, status and vectors
    cs.put_items([_row("i1", "key1b", status="failed", text=t * 2)])
    got = cs.item("i1")
    assert got["status"] == "failed"
    assert set(got["vectors"]) == {"text"}
    assert cs.item_keys()["i1"] == "key1b"


def test_status_counts(cs):
    cs.put_items(
        [
            _row("a", "k"),
            _row("b", "k"),
            _row("c", "k", status="failed"),
            _row("d", "k", status="partial"),
            _row("e", "k", status="partial"),
            _row("f", "k", status="partial"),
        ]
    )
    assert cs.status_counts() == {"ok": 2, "failed": 1, "partial": 3}


def test_vectors_aligned_with_zero_rows_for_missing(cs):
    cs.put_items(
        [
            _row("a", "k", text=np.array([1.0, 2.0, 3.0])),
            _row("b", "k", visual=np.array([1.0, 1.0])),
            _row("c", "k", text=np.array([4.0, 5.0, 6.0])),
        ]
    )
    v = cs.vectors("text", ["c", "unknown", "a", "b"])
    assert v.dtype == np.float32 and v.shape == (4, 3)
    np.testing.assert_array_equal(v, [[4, 5, 6], [0, 0, 0], [1, 2, 3], [0, 0, 0]])
    assert cs.vectors("audio", ["a", "b"]).shape == (2, 0)  # nobody has it


def test_vectors_mixed_dims_raise_only_for_the_items_asked(cs):
    cs.put_items([_row("a", "k", text=np.ones(3)), _row("b", "k", text=np.ones(5))])
    # a stale row of another size (an item left from an old encoder) does not get in the way
    assert cs.vectors("text", ["a"]).shape == (1, 3)
    with pytest.raises(StoreError, match="3-d: a; 5-d: b"):
        cs.vectors("text", ["a", "b"])


# -- attach --------------------------------------------------------------------------------------


def _dataset() -> Dataset:
    ev = pl.DataFrame(
        [("u1", "i3", "play", 1.0), ("u1", "i1", "play", 2.0), ("u2", "i2", "play", 3.0)],
        schema=["user_id", "item_id", "event", "ts"],
        orient="row",
    )
    items = pl.DataFrame({"item_id": ["i2", "i3", "i1", "cold"]})
    return Dataset.from_events(ev, items, weighting=EventWeighting.binary())


def test_attach_aligns_rows_by_item_id(cs):
    ds = _dataset()
    ids = ds.items.lookup(np.arange(ds.n_items))
    assert set(ids) == {"i1", "i2", "i3", "cold"}
    cs.put_items(
        [
            _row("i1", "k", text=np.array([1.0, 0.0]), visual=np.array([1.0, 1.0, 1.0])),
            _row("i3", "k", text=np.array([3.0, 0.0])),
            _row("cold", "k", text=np.array([9.0, 9.0])),
            _row("not-in-dataset", "k", text=np.array([7.0, 7.0])),
        ]
    )
    assert sorted(cs.attach(ds)) == ["text", "visual"]
    text = ds.item_features["text"]
    assert text.shape == (ds.n_items, 2)
    for row, item in enumerate(ids):
        expected = {"i1": [1, 0], "i3": [3, 0], "cold": [9, 9], "i2": [0, 0]}[item]
        np.testing.assert_array_equal(text[row], expected)
    vis = ds.item_features["visual"]
    np.testing.assert_array_equal(vis[ids.index("i1")], [1, 1, 1])
    assert np.count_nonzero(np.linalg.norm(vis, axis=1)) == 1


def test_attach_selected_modalities(cs):
    ds = _dataset()
    cs.put_items([_row("i1", "k", text=np.ones(2), visual=np.ones(3))])
    assert cs.attach(ds, ["visual"]) == ["visual"]
    assert set(ds.item_features) == {"visual"}


# -- file handling -------------------------------------------------------------------------------


def test_not_sqlite_raises_store_error(tmp_path: Path):
    p = tmp_path / "content.db"
    p.write_bytes(b"this is not a database, just some text " * 100)
    with pytest.raises(StoreError):
        ContentStore(p)


def test_data_survives_close_and_reopen(tmp_path: Path):
    path = tmp_path / "content.db"
    f = tmp_path / "a.bin"
    f.write_bytes(b"abc")
    with ContentStore(path) as s:
        h = s.file_hash(f)
        s.put_media("m", {"x": 1}, {"visual": np.ones(2)})
        s.put_segments({"s": np.full(3, 0.5)})
        s.put_items([_row("i1", "key1", text=np.array([0.25, -1.0]))])
        s.put_meta("m", 3)
    with sqlite3.connect(path) as raw:  # a plain SQLite file with the expected tables
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"files", "media", "media_vectors", "segments", "items", "vectors"} <= tables
    with ContentStore(path) as s:
        assert s.get_media("m")[0] == {"x": 1}
        np.testing.assert_array_equal(s.get_segments(["s"])["s"], np.full(3, 0.5, np.float32))
        assert s.item_keys() == {"i1": "key1"}
        np.testing.assert_array_equal(s.item("i1")["vectors"]["text"], [0.25, -1.0])
        assert s.get_meta("m") == 3
        rows = s._conn.execute("SELECT sha256 FROM files").fetchall()
        assert rows == [(h,)]


def test_an_older_file_cache_is_rebuilt(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as c:
        c.execute(
            "CREATE TABLE files (path TEXT PRIMARY KEY, size INTEGER NOT NULL, "
            "mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL)"
        )
    f = tmp_path / "a.bin"
    f.write_bytes(b"abc")
    with ContentStore(path) as cs:
        assert cs.file_hash(f) == hashlib.sha256(b"abc").hexdigest()
