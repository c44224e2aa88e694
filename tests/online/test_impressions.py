"""The impression journal: one append per served list, moved to the store in the
background, recovered from a process that is gone, stored once when replayed."""

from __future__ import annotations

import contextlib
import os
import time

import pytest

from avrec.online.impressions import ImpressionLog
from avrec.storage.sqlite import SQLiteStore


@pytest.fixture()
def db(tmp_path):
    s = SQLiteStore(tmp_path / "avrec.db")
    yield s
    s.close()


def _log(tmp_path, db, flush_s=3600.0) -> ImpressionLog:
    return ImpressionLog(tmp_path / "spool", db, contextlib.nullcontext, flush_s)


def test_lists_reach_the_store_with_their_positions(tmp_path, db):
    log = _log(tmp_path, db)
    log.log("r1", "recommendations", ["a", "b", "c"], "u1", "pipeline-v2", offset=10)
    log.log("r2", "similar", [], None, "pipeline-v2")  # nothing shown: nothing logged
    log.log("r3", "search", ["d"], None, "pipeline-v2", propensities=[0.25])
    assert db.impressions().height == 0  # not yet: the thread moves them
    assert log.flush() == 4
    got = db.impressions()
    assert got["position"].to_list() == [10, 11, 12, 0]
    assert got["propensity"].to_list()[-1] == 0.25 and got["user_id"].to_list()[0] == "u1"
    log.journal.set_offset(0)  # as if killed between the commit and the offset
    log.flush()
    assert db.impressions().height == 4  # stored once
    log.close()
    assert not log.journal.path.exists()  # all stored: the journal is gone


def test_the_thread_moves_them_without_being_asked(tmp_path, db):
    log = _log(tmp_path, db, flush_s=0.05)
    log.log("r1", "recommendations", ["a", "b"], "u1", "v")
    deadline = time.time() + 10
    while time.time() < deadline and db.impressions().height < 2:
        time.sleep(0.05)
    assert db.impressions().height == 2
    log.close()


def test_a_stopped_process_journal_is_recovered_and_a_live_one_left(tmp_path, db):
    dead = _log(tmp_path, db)
    dead.log("r1", "recommendations", ["a", "b"], "u1", "v")
    dead._stop.set()
    os.close(dead._fd)  # the process is gone: its lock with it (nothing was flushed)
    live = _log(tmp_path, db)  # a process that starts recovers the orphans (its thread)
    live.log("r2", "recommendations", ["c"], "u2", "v")
    deadline = time.time() + 10
    while time.time() < deadline and dead.journal.path.exists():
        time.sleep(0.05)
    assert not dead.journal.path.exists()
    assert sorted(db.impressions()["request_id"].to_list()) == ["r1", "r1"]
    other = _log(tmp_path, db)
    assert other.recover() == 0  # the live one's journal is not taken
    assert live.journal.path.exists()
    live.close()
    other.close()
    assert sorted(db.impressions()["request_id"].unique().to_list()) == ["r1", "r2"]


def test_a_full_journal_is_emptied_once_stored(tmp_path, db, monkeypatch):
    import avrec.online.impressions as imp

    monkeypatch.setattr(imp, "ROTATE_BYTES", 200)
    log = _log(tmp_path, db)
    for n in range(5):
        log.log(f"r{n}", "recommendations", ["a", "b", "c"], "u1", "v")
    log.flush()
    assert log.journal.path.stat().st_size == 0 and log.journal.offset() == 0
    log.log("r9", "recommendations", ["z"], "u1", "v")
    log.flush()
    assert db.impressions().height == 16
    log.close()
