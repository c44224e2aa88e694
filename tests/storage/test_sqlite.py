from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from avrec.errors import DataError, StoreError, UnknownEntityError
from avrec.storage import ArtifactStore, open_store, registered_schemes
from avrec.storage.sqlite import SQLiteStore


def events(n: int, user: str = "u") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": [user] * n,
            "item_id": [f"i{k}" for k in range(n)],
            "event": ["play"] * n,
            "value": [None] * n,
            "ts": [float(k) for k in range(n)],
            "session_id": [None] * n,
            "text": [None] * n,
            "context": [None] * n,
        },
        schema_overrides={
            "value": pl.Float64,
            "session_id": pl.String,
            "text": pl.String,
            "context": pl.String,
        },
    )


def test_open_by_url(tmp_path):
    s = open_store(f"sqlite:///{tmp_path}/x.db")
    assert isinstance(s, SQLiteStore) and s.counts()["events"] == 0
    assert (tmp_path / "x.db").exists()
    s.close()
    mem = open_store("sqlite:///:memory:")
    assert mem.counts()["users"] == 0
    assert "sqlite" in registered_schemes()
    with pytest.raises(StoreError, match="known schemes: postgres, postgresql, sqlite"):
        open_store("mongodb://localhost/x")


def test_wal_mode(store):
    if not isinstance(store, SQLiteStore):
        pytest.skip("SQLite only")
    assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_transaction_rolls_back_on_error(store):
    store.add_events(events(3))
    with pytest.raises(RuntimeError), store.transaction():
        store.add_events(events(5, user="v"))
        assert store.counts()["events"] == 8
        raise RuntimeError("boom")
    assert store.counts()["events"] == 3
    assert store.counts()["users"] == 1
    # id caches were reset: a later write still maps ids correctly
    res = store.add_events(events(2, user="w"))
    assert res.inserted == 2 and res.new_users == 1
    assert set(store.events()["user_id"]) == {"u", "w"}


def test_add_events_counts_duplicates(store):
    r1 = store.add_events(events(4))
    r2 = store.add_events(events(6))
    assert (r1.inserted, r1.duplicates, r1.new_items) == (4, 0, 4)
    assert (r2.inserted, r2.duplicates, r2.new_items) == (2, 4, 2)


def test_exclusion_hides_users_from_training_reads(store):
    store.add_events(events(2, "good"))
    store.add_events(events(2, "bot"))
    assert store.set_users_excluded(["bot"], True, "automated") == 1
    assert set(store.events(include_excluded=False)["user_id"]) == {"good"}
    assert store.users().filter(pl.col("excluded"))["exclude_reason"].to_list() == ["automated"]


def test_model_registry(store):
    a = store.register_model("als", "als", "bundles/als/1", {"factors": 64}, {"ndcg@10": 0.1})
    b = store.register_model("als", "als", "bundles/als/2")
    assert (a.version, b.version) == (1, 2)
    assert store.active_model("als").version == 2
    store.activate_model("als", 1)
    assert store.active_model("als").config == {"factors": 64}
    with pytest.raises(UnknownEntityError):
        store.activate_model("als", 9)
    with pytest.raises(UnknownEntityError):
        store.active_model("nope")


def test_iter_events_batches(store):
    store.add_events(events(7))
    sizes = [b.height for b in store.iter_events(batch_size=3)]
    assert sizes == [3, 3, 1]


def test_artifacts_roundtrip_and_checksum(tmp_path):
    art = ArtifactStore(tmp_path / "artifacts")
    vec = np.arange(12, dtype=np.float32).reshape(3, 4)
    entry = art.save("vectors/text", {"vectors": vec}, kind="item_vectors", meta={"dim": 4})
    assert entry["arrays"] == {"vectors": [3, 4]}
    np.testing.assert_array_equal(art.load("vectors/text")["vectors"], vec)
    assert art.names() == ["vectors/text"]
    (tmp_path / "artifacts" / "vectors" / "text.npz").write_bytes(b"corrupt")
    with pytest.raises(DataError, match="checksum"):
        art.load("vectors/text")
    with pytest.raises(UnknownEntityError):
        art.load("missing")
    with pytest.raises(DataError):
        art.save("../escape", {"x": vec}, kind="x")
    with pytest.raises(DataError, match="object dtype"):
        art.save("objs", {"x": np.array([{}], dtype=object)}, kind="x")


def test_two_writers_on_one_file(tmp_path):
    """Review finding: a stale id cache made the second writer reuse user keys."""
    a = SQLiteStore(tmp_path / "x.db")
    b = SQLiteStore(tmp_path / "x.db")
    a.add_events(events(2, "ua"))
    b.add_events(events(2, "ub"))
    a.add_events(events(3, "uc"))  # a's cached maps predate b's users
    b.add_events(events(1, "ud"))
    assert set(a.events()["user_id"]) == {"ua", "ub", "uc", "ud"}
    assert a.counts()["users"] == 4 and a.integrity_check() == "ok"
    a.close()
    b.close()


def test_user_texts_are_their_searches_and_comments_newest_first(tmp_path):
    import polars as pl

    from avrec.storage.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "s.db")
    ev = events(5, "a").with_columns(
        user_id=pl.Series(["a", "a", "a", "b", "a"]),
        item_id=pl.Series([None, "i1", "i1", None, None], dtype=pl.String),
        event=pl.Series(["search", "comment", "play", "search", "search"]),
        text=pl.Series(["piano", "lovely", None, "jazz", "calm piano"], dtype=pl.String),
    )
    store.add_events(ev)
    assert store.user_texts("a") == ["calm piano", "lovely", "piano"]
    assert store.user_texts("a", types=("search",), limit=1) == ["calm piano"]
    assert store.user_texts("nobody") == []
    store.close()


def test_the_same_event_twice_in_one_batch_keeps_the_last(store):
    ev = events(2).with_columns(
        item_id=pl.Series(["i0", "i0"]), ts=pl.Series([1.0, 1.0]), value=pl.Series([1.0, 2.0])
    )
    res = store.add_events(ev)
    assert (res.inserted, res.duplicates) == (1, 1)
    assert store.events()["value"].to_list() == [2.0]
    again = store.add_events(ev.with_columns(value=pl.Series([3.0, 4.0])))
    assert (again.inserted, again.duplicates) == (0, 2)
    assert store.events()["value"].to_list() == [4.0]


def test_several_batches_in_one_transaction(store):
    """Regression (PostgreSQL): an ingest writes a file's chunks in one transaction; the
    staging table must not carry one chunk into the next."""
    with store.transaction():
        r1 = store.add_events(events(3))
        r2 = store.add_events(events(2, "v"))
        store.upsert_items(pl.DataFrame({"item_id": ["i0"], "title": ["Zero"]}))
        n_new, n_old = store.upsert_items(pl.DataFrame({"item_id": ["i1"], "title": ["One"]}))
    assert (r1.inserted, r2.inserted, r2.duplicates, r2.new_users) == (3, 2, 0, 1)
    assert store.counts()["events"] == 5 and (n_new, n_old) == (0, 1)
