"""``avrec store copy``: SQLite to PostgreSQL and back, every table verified, keys kept."""

from __future__ import annotations

import polars as pl
import pytest
from typer.testing import CliRunner

from avrec.cli.main import app
from avrec.errors import StoreError
from avrec.storage import IngestRecord, open_store
from avrec.storage.copy import TABLES, copy_store, table_checksum


def fill(url: str) -> None:
    with open_store(url) as s:
        s.upsert_items(pl.DataFrame({"item_id": ["a", "b"], "title": ["Ä film", ""],
                                     "duration": [90.5, None]}))  # fmt: skip
        s.upsert_users(pl.DataFrame({"user_id": ["u1"], "attributes": ['{"age": 30}']}))
        ev = pl.DataFrame({
            "user_id": ["u1", "u2", "u2", "u3"], "item_id": ["a", "b", None, "c"],
            "event": ["play", "like", "search", "play"], "ts": [3.0, 1.0, 2.0, 1.7e9],
            "text": [None, None, "piano, \"calm\"\nnight", None], "value": [0.5, None, None, 1],
        })  # fmt: skip
        s.add_events(ev)  # ids not in time order: the copy must keep them
        s.set_users_excluded(["u3"], True, "bot")
        s.record_ingest(IngestRecord("events", "x.csv", "ab", 4, 4, 0, 0, 1.0, 2.0))
        s.register_model("pipeline", "pipeline", "bundles/pipeline/1", {"k": 1},
                         {"last_event_id": 4})  # fmt: skip
        s.put_state("conversation", "c1", {"user": "u1", "turns": ["hi"]})
        s.add_events_once(ev.head(1).with_columns(ts=pl.lit(9.0)), ["key-1"])
        s.delete_items(["b"])


def test_sqlite_to_postgres_and_back(tmp_path, pg_url):
    a = f"sqlite:///{tmp_path / 'a.db'}"
    back = f"sqlite:///{tmp_path / 'back.db'}"
    fill(a)
    runner = CliRunner()
    res = runner.invoke(app, ["store", "copy", a, pg_url])
    assert res.exit_code == 0, res.output
    assert "verified" in res.output and "***" in res.output  # the password is not printed
    res = runner.invoke(app, ["store", "copy", pg_url, back])
    assert res.exit_code == 0, res.output
    with open_store(a) as s1, open_store(pg_url) as s2, open_store(back) as s3:
        for name in TABLES:
            assert table_checksum(s1, name) == table_checksum(s2, name) == table_checksum(s3, name)
        assert s1.events().equals(s3.events()) and s1.events().equals(s2.events())
        assert s2.events_after(0) == s1.events_after(0)  # the same ids
        assert s2.active_model("pipeline").metrics == {"last_event_id": 4}
        assert s2.get_state("conversation", "c1") == {"user": "u1", "turns": ["hi"]}
        assert s2.last_event_id() == s3.last_event_id() == s1.last_event_id()
        # the copy goes on where the source stopped: new keys above the copied ones
        res = s2.add_events(
            pl.DataFrame(
                {
                    "user_id": ["u9", "u1"],
                    "item_id": ["z", "a"],
                    "event": ["play", "play"],
                    "ts": [5.0, 3.0],
                }
            )
        )
        assert (res.inserted, res.duplicates) == (1, 1)  # (u1, a, play, 3.0) was copied
        assert s2.events_after(s1.last_event_id())[0][1:3] == ("u9", "z")
        assert s2.counts()["users"] == s1.counts()["users"] + 1


def test_the_destination_must_be_empty_and_a_difference_is_caught(tmp_path, pg_url):
    a = f"sqlite:///{tmp_path / 'a.db'}"
    fill(a)
    fill(pg_url)
    with open_store(a) as s1, open_store(pg_url) as s2:
        with pytest.raises(StoreError, match="not empty"):
            copy_store(s1, s2)
    empty = f"sqlite:///{tmp_path / 'b.db'}"
    with open_store(a) as s1, open_store(empty) as s3:
        real = s3.load_table

        def lossy(name, rows):  # a destination that drops a row
            real(name, rows.head(rows.height - 1) if name == "events" else rows)

        s3.load_table = lossy
        with pytest.raises(StoreError, match="table events differs"):
            copy_store(s1, s3)
