"""Regression tests for bad and hostile input (issue #16): each reproduces a reported defect.

Every case checks the same three things: a clear reason (a reject with its line, or one
DataError naming the file), the good rows kept, and a store a later step can use.
"""

from __future__ import annotations

import gzip
import json
import math

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from avrec.cli.stats import workspace_stats
from avrec.config import IngestConfig, WorkspaceConfig
from avrec.errors import DataError
from avrec.ingest.pipeline import ingest_file
from avrec.ingest.readers import ERROR, LINE, OVERLONG, read_batches
from tests.conftest import write
from tests.ingest.test_pipeline import read_rejects

GOOD = "".join(f"u{k % 7},i{k % 11},play,{1_700_000_000 + k}\n" for k in range(40))
HEADER = "user_id,item_id,event,timestamp\n"


def _reasons(report) -> list[tuple[int, str]]:
    return [(int(r["line"]), r["reason"]) for r in read_rejects(report.rejects_path)]


# -- 1. timestamps ------------------------------------------------------------------------------
BAD_TIMES = {
    "0000-01-01T00:00:00": "unparsable timestamp",
    "9999-12-31T23:59:59": "timestamp outside",
    "1704067200000": "looks like milliseconds",
    "1704067200000000": "looks like microseconds",
    "1e20": "timestamp outside",
    "inf": "unparsable timestamp",
    "-inf": "unparsable timestamp",
    "nan": "unparsable timestamp",
    "-86400": "timestamp outside",
}


def test_implausible_timestamps_are_rejected_with_reason_and_the_store_stays_usable(
    store, tmp_path
):
    bad = "".join(f"u1,i1,play,{t}\n" for t in BAD_TIMES)
    rep = ingest_file(store, write(tmp_path / "e.csv", HEADER + GOOD + bad), "events")
    assert rep.accepted == 40 and rep.rejected == len(BAD_TIMES)
    reasons = _reasons(rep)
    for (line, reason), (value, expected) in zip(reasons, BAD_TIMES.items(), strict=True):
        assert expected in reason and value in reason, (line, reason)
    assert [line for line, _ in reasons] == list(range(42, 42 + len(BAD_TIMES)))
    ts = store.events()["ts"]
    assert ts.is_finite().all() and ts.min() >= 0
    stats = workspace_stats(store)
    json.dumps(stats, allow_nan=False)  # no NaN or Infinity anywhere
    assert stats["first_event"] == 1_700_000_000


def test_millisecond_files_are_read_with_the_unit_setting(store, tmp_path):
    text = HEADER + "u1,i1,play,1704067200000\nu1,i2,play,1704067201500\n"
    cfg = WorkspaceConfig(ingest=IngestConfig(timestamp_unit="ms"))
    rep = ingest_file(store, write(tmp_path / "ms.csv", text), "events", cfg)
    assert rep.accepted == 2
    assert sorted(store.events()["ts"].to_list()) == [1704067200.0, 1704067201.5]


def test_the_window_is_configurable(store, tmp_path):
    text = HEADER + "u1,i1,play,1990-06-01\nu1,i2,play,2024-01-01\n"
    cfg = WorkspaceConfig(ingest=IngestConfig(earliest_event="2000-01-01"))
    rep = ingest_file(store, write(tmp_path / "w.csv", text), "events", cfg)
    assert rep.accepted == 1 and "1990-06-01" in _reasons(rep)[0][1]


def test_item_times_outside_the_calendar_are_rejected(store, tmp_path):
    text = "item_id,title,created_at\na,A,1895-12-28\nb,B,1e20\nc,C,nan\n"
    rep = ingest_file(store, write(tmp_path / "i.csv", text), "items")
    assert rep.accepted == 1  # an old film is fine; an impossible time is not
    assert [line for line, _ in _reasons(rep)] == [3, 4]
    created = store.items()["created_at"].drop_nulls()
    assert all(math.isfinite(v) for v in created)


# -- ids ----------------------------------------------------------------------------------------
def test_control_characters_and_huge_ids_are_rejected(store, tmp_path):
    long_id = "x" * 300
    text = HEADER + f"u\x002,i1,play,1700000000\nu3,i\n,play,1700000000\n{long_id},i1,play,1\n"
    text += "u4,i1,play,1700000000\n"
    p = tmp_path / "ids.csv"
    p.write_bytes(text.encode())
    rep = ingest_file(store, p, "events")
    assert rep.accepted == 1 and store.events()["user_id"].to_list() == ["u4"]
    reasons = [r for _, r in _reasons(rep)]
    assert "user_id holds a control character" in reasons
    assert any("longer than 256" in r for r in reasons)
    users = write(tmp_path / "u.csv", "user_id,age\nok,3\nbad\x01id,4\n")
    rep = ingest_file(store, users, "users")
    assert rep.accepted == 1 and "control character" in _reasons(rep)[0][1]


# -- 3. wide headers ----------------------------------------------------------------------------
def test_a_header_wider_than_max_columns_is_refused_before_reading(store, tmp_path):
    names = ["user_id", "item_id", *[f"c{i}" for i in range(10_000)]]
    p = write(tmp_path / "wide.csv", ",".join(names) + "\n" + ",".join(["1"] * len(names)) + "\n")
    with pytest.raises(DataError, match="10,002 columns, more than .*max_columns"):
        ingest_file(store, p, "events")
    assert store.counts()["events"] == 0


def test_a_wide_file_under_the_limit_ingests(store, tmp_path):
    names = ["user_id", "item_id", "timestamp", *[f"c{i}" for i in range(900)]]
    row = ["u1", "i1", "1700000000", *["v"] * 900]
    bad = ["u2", "i2", "1700000000", *["\ufffd"] * 900]
    p = write(tmp_path / "w.csv", "\n".join(",".join(r) for r in (names, row, bad)) + "\n")
    rep = ingest_file(store, p, "events")
    assert rep.accepted == 1
    assert "invalid UTF-8 in column 'c0'" in _reasons(rep)[0][1]
    assert len(json.loads(store.events()["context"][0])) == 900


# -- 4. long lines and compressed input ---------------------------------------------------------
@pytest.mark.parametrize("quoted", [False, True])
def test_an_overlong_line_is_one_reject_and_the_rest_is_read(store, tmp_path, quoted):
    huge = "u9,i9,play," + "9" * 3_000_000
    tail = 'u1,"i,1",play,1700000001\n' if quoted else "u1,i1,play,1700000001\n"
    p = write(tmp_path / "long.csv", HEADER + GOOD + huge + "\n" + tail)
    cfg = WorkspaceConfig(ingest=IngestConfig(chunk_bytes=1 << 20))
    rep = ingest_file(store, p, "events", cfg)
    assert rep.accepted == 41 and rep.rejected == 1
    line, reason = _reasons(rep)[0]
    assert line == 42 and "max_row_bytes" in reason
    assert len(read_rejects(rep.rejects_path)[0]["row"]) < 1000  # the line itself is not kept


def test_an_unclosed_quote_is_bounded_by_the_row_limit(tmp_path):
    body = 'u1,"never closed,play,1\n' + "u2,i2,play,1\n" * 200_000
    p = write(tmp_path / "q.csv", HEADER + body)
    df = pl.concat(list(read_batches(p, max_row_bytes=64 * 1024)), how="diagonal")
    assert df[ERROR][0] == (
        "the row is longer than [ingest] max_row_bytes = 65,536; it was not read"
    )
    assert df.filter(pl.col(ERROR).is_null()).height > 190_000  # reading goes on after it


def test_a_gzip_bomb_after_a_header_is_one_reject(store, tmp_path):
    p = tmp_path / "bomb.csv.gz"
    with gzip.open(p, "wb", compresslevel=9) as fh:
        fh.write(HEADER.encode() + GOOD.encode())
        zeros = b"\0" * (1 << 20)
        for _ in range(64):  # 64 MB of one line, about 64 kB on disk
            fh.write(zeros)
        fh.write(b"\nu1,i1,play,1700000001\n")
    rep = ingest_file(store, p, "events")
    assert rep.accepted == 41 and rep.rejected == 1
    assert "max_row_bytes" in _reasons(rep)[0][1]


def test_a_header_longer_than_the_row_limit_is_refused(store, tmp_path):
    p = tmp_path / "h.csv.gz"
    with gzip.open(p, "wb") as fh:
        fh.write(b"user_id,item_id," + b"x" * 3_000_000 + b"\n")
    with pytest.raises(DataError, match="line 1 .*longer than"):
        ingest_file(store, p, "events")


def test_jsonl_overlong_and_cut_off_lines(store, tmp_path):
    good = [{"user_id": f"u{k}", "item_id": "i1", "timestamp": 1_700_000_000 + k} for k in range(5)]
    lines = [json.dumps(r) for r in good]
    lines.insert(2, json.dumps({"user_id": "u9", "item_id": "i9", "text": "y" * 2_000_000}))
    p = write(tmp_path / "e.jsonl", "\n".join(lines) + '\n{"user_id": "u7", "item_id": "i')
    rep = ingest_file(store, p, "events")
    assert rep.accepted == 5 and rep.rejected == 2
    reasons = _reasons(rep)
    assert reasons[0][0] == 3 and "max_row_bytes" in reasons[0][1]
    assert reasons[1][0] == 7 and reasons[1][1].startswith("invalid JSON")


def test_a_cut_off_last_jsonl_line_alone_in_its_block(store, tmp_path):
    good = [{"user_id": f"u{k}", "item_id": "i1", "timestamp": 1_700_000_000 + k} for k in range(3)]
    text = "\n".join(json.dumps(r) for r in good) + '\n{"user_id": "u7", "ite'
    cfg = WorkspaceConfig(ingest=IngestConfig(chunk_bytes=64))
    rep = ingest_file(store, write(tmp_path / "cut.jsonl", text), "events", cfg)
    assert rep.accepted == 3 and _reasons(rep)[0][0] == 4


def test_line_blocks_never_hold_a_line_over_the_limit(tmp_path):
    text = "a,b\n" + "1,2\n" * 10 + "3," + "4" * 5000 + "\n" + "5,6\n" + "7," + "8" * 5000
    df = pl.concat(
        list(read_batches(write(tmp_path / "x.csv", text), chunk_bytes=100, max_row_bytes=1024)),
        how="diagonal",
    )
    assert df[LINE].to_list() == list(range(2, 15))
    errors = df[ERROR].to_list()
    assert errors[10] is not None and errors[12] is not None and errors[11] is None
    assert not any(OVERLONG in (v or "") for v in df["b"].to_list())


# -- 5. files that are not what they claim ------------------------------------------------------
def _assert_refused(store, path, match, kind="events"):
    before = store.counts()
    with pytest.raises(DataError, match=match):
        ingest_file(store, path, kind)
    assert store.counts() == before


def test_broken_and_disguised_files_are_one_clear_error(store, tmp_path):
    ingest_file(store, write(tmp_path / "ok.csv", HEADER + GOOD), "events")
    _assert_refused(
        store, write(tmp_path / "fake.parquet", HEADER + GOOD), "not a readable Parquet"
    )
    _assert_refused(store, write(tmp_path / "fake.csv.gz", HEADER + GOOD), "gzip")
    good = gzip.compress((HEADER + GOOD * 200).encode())
    (tmp_path / "cut.csv.gz").write_bytes(good[: len(good) // 2])
    _assert_refused(store, tmp_path / "cut.csv.gz", "gzip data is not valid, corrupt or cut short")
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0xFF
    (tmp_path / "flip.csv.gz").write_bytes(bytes(flipped))
    _assert_refused(store, tmp_path / "flip.csv.gz", "gzip")
    (tmp_path / "bin.csv").write_bytes(b"\x00\x01\x02\x89PNG\r\n\x1a\n" * 10)
    _assert_refused(store, tmp_path / "bin.csv", "NUL bytes|missing required")


def test_parquet_with_invalid_utf8_rejects_those_rows(store, tmp_path):
    users = pa.array([b"u1", b"u\xff2", b"u3"], type=pa.binary()).view(pa.string())
    table = pa.table(
        {
            "user_id": users,
            "item_id": ["i1", "i2", "i3"],
            "timestamp": [1_700_000_000, 1_700_000_001, 1_700_000_002],
        }
    )
    p = tmp_path / "e.parquet"
    pq.write_table(table, p)
    rep = ingest_file(store, p, "events")
    assert rep.accepted == 2
    assert _reasons(rep) == [(2, "invalid UTF-8 in column 'user_id'")]


def test_items_jsonl_whose_first_block_is_unreadable(store, tmp_path):
    text = '{"item_id": "a", "tit\n{"item_id": "b", "title": "B"}\n{"item_id": "c"}\n'
    cfg = WorkspaceConfig(ingest=IngestConfig(chunk_bytes=16))
    rep = ingest_file(store, write(tmp_path / "i.jsonl", text), "items", cfg)
    assert rep.accepted == 2 and _reasons(rep)[0][0] == 1


# -- the whole loop after hostile input, through the command line --------------------------------
def _avrec(ws, *args, **kw):
    import subprocess

    from tests.cli.test_cli import AVREC

    return subprocess.run(
        [AVREC, "-w", str(ws), *args], capture_output=True, text=True, timeout=600, **kw
    )


def test_stats_train_and_recommend_work_after_hostile_events(tmp_path):
    ws = tmp_path / "ws"
    assert _avrec(tmp_path, "init", str(ws)).returncode == 0
    bad = "".join(f"u1,i1,play,{t}\n" for t in BAD_TIMES) + "u\x002,i2,play,1700000000\n"
    good = "".join(f"u{k % 9},i{(k * 7) % 23},play,{1_700_000_000 + k}\n" for k in range(300))
    p = tmp_path / "e.csv"
    p.write_bytes((HEADER + good + bad).encode())
    ingest = _avrec(ws, "ingest", "events", str(p))
    assert ingest.returncode == 0, ingest.stderr
    assert "300 accepted, 10 rejected" in ingest.stdout
    assert "[ingest] timestamp_unit" in ingest.stdout  # the hint, not eaten as markup
    stats = _avrec(ws, "stats", "--json")
    assert stats.returncode == 0 and json.loads(stats.stdout)["events"] == 300
    assert _avrec(ws, "stats").returncode == 0
    train = _avrec(ws, "train")
    assert train.returncode == 0, train.stderr
    assert "DEBUG" not in train.stdout + train.stderr
    rec = _avrec(ws, "recommend", "--user", "u1", "--k", "3", "--json")
    assert rec.returncode == 0 and "Traceback" not in rec.stderr, rec.stderr


@pytest.mark.slow
def test_ctrl_c_stops_an_ingest_rolls_back_and_says_so(tmp_path):
    import signal
    import subprocess

    from tests.cli.test_cli import AVREC

    ws = tmp_path / "ws"
    assert _avrec(tmp_path, "init", str(ws)).returncode == 0
    big = tmp_path / "big.csv"
    with open(big, "w") as fh:
        fh.write(HEADER + "u0,i0,teleport,1600000000\n")  # a reject: its file shows progress
        for k in range(2_000_000):
            fh.write(f"u{k % 5000},i{k % 3000},play,{1_600_000_000 + k}\n")
    proc = subprocess.Popen(
        [AVREC, "-w", str(ws), "ingest", "events", str(big)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    import time

    deadline = time.time() + 60
    # the rejects file appears once the first block is written, well before the last
    while not list((ws / "rejects").glob("big.csv.*")) and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the ingest ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, (out, err)
    assert "interrupted: nothing from" in err and "Traceback" not in err
    stats = _avrec(ws, "stats", "--json")
    assert json.loads(stats.stdout)["events"] == 0


def test_a_refused_file_is_one_error_line_with_its_setting(tmp_path):
    ws = tmp_path / "ws"
    assert _avrec(tmp_path, "init", str(ws)).returncode == 0
    wide = tmp_path / "wide.csv"
    wide.write_text(",".join(["user_id", "item_id", *(f"c{i}" for i in range(5000))]) + "\n")
    res = _avrec(ws, "ingest", "events", str(wide))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "\nerror: " in "\n" + res.stderr
    assert "[ingest] max_columns" in " ".join(res.stderr.split())  # not eaten as markup
