"""Property-based fuzzing of the readers, the validators and the ingest transaction (Hypothesis).

Properties, for files of every format with random corruption:
- no traceback: a reader yields rows or raises :class:`DataError`, nothing else;
- every line is accounted for: each corrupted line is rejected with its own line number and a
  reason, each intact line is accepted, and ``rows == accepted + rejected``;
- a failed file leaves the store as it was;
- after any accepted file, the stats are valid JSON and the stored times are finite.

Example counts are kept small so ``make test`` stays fast; ``benchmarks/hostile.py --fuzz N``
runs the same properties longer.
"""

from __future__ import annotations

import gzip
import io
import json
import os

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avrec.cli.stats import workspace_stats
from avrec.config import IngestConfig, WorkspaceConfig
from avrec.errors import DataError
from avrec.ingest.pipeline import ingest_file
from avrec.ingest.readers import ERROR, LINE, read_batches
from avrec.storage.sqlite import SQLiteStore

EXAMPLES = int(os.environ.get("AVREC_FUZZ_EXAMPLES", "25"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MAX_ROW = 4096
CONFIG = WorkspaceConfig(ingest=IngestConfig(chunk_bytes=512, max_row_bytes=MAX_ROW))

# -- one line of an events file, intact or broken in one known way ------------------------------
ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_:é音", min_size=1, max_size=12)
times = st.integers(1_000_000_000, 1_790_000_000)
CORRUPTIONS = (
    "missing_field",
    "extra_field",
    "bad_utf8",
    "nul_id",
    "bad_time",
    "huge_time",
    "empty_user",
    "unknown_type",
    "overlong",
)


@st.composite
def event_lines(draw) -> tuple[list[bytes], set[int]]:
    """Encoded CSV lines after the header and the line numbers that must be rejected."""
    n = draw(st.integers(1, 40))
    lines: list[bytes] = []
    bad: set[int] = set()
    for k in range(n):
        user, item, ts = draw(ids), draw(ids), draw(times)
        # every user/item pair once, so duplicates never collapse two intact lines
        user = f"{user}{k}"
        quoted = draw(st.booleans())
        title = '"a, ""quoted""\nvalue"' if quoted else "plain"
        fields = [user, item, "play", str(ts), title]
        how = draw(st.sampled_from((None,) * 4 + CORRUPTIONS))
        line_no = 2 + sum(x.count(b"\n") + 1 for x in lines)
        if how == "missing_field":
            fields = fields[:3] + fields[4:]
        elif how == "extra_field":
            fields.append("surplus")
        elif how == "nul_id":
            fields[0] = user[:1] + "\x00" + user[1:]
        elif how == "bad_time":
            fields[3] = draw(st.sampled_from(["nan", "yesterday", "0000-01-01", "inf", "--1"]))
        elif how == "huge_time":
            fields[3] = str(ts * 1000)
        elif how == "empty_user":
            fields[0] = " "
        elif how == "unknown_type":
            fields[2] = "teleport"
        elif how == "overlong":
            fields[4] = "x" * (MAX_ROW + draw(st.integers(1, 3 * MAX_ROW)))
        raw = ",".join(fields).encode()
        if how == "bad_utf8":
            raw = raw.replace(b"play", b"pl\xffay")
        if how is not None:
            bad.add(line_no)
        lines.append(raw)
    return lines, bad


def _accounted(store: SQLiteStore, report, bad: set[int], total: int) -> None:
    assert report.rows == report.accepted + report.rejected
    assert report.accepted == total - len(bad)
    rejected_lines = set()
    if report.rejects_path:
        with open(report.rejects_path, encoding="utf-8") as fh:
            rows = list(__import__("csv").DictReader(fh))
        for r in rows:
            assert r["reason"], r
            rejected_lines.add(int(r["line"]))
    assert rejected_lines == bad
    events = store.events()
    assert events["ts"].is_finite().all()
    json.dumps(workspace_stats(store), allow_nan=False)


@FUZZ
@given(event_lines(), st.booleans(), st.sampled_from(["\n", "\r\n"]))
def test_every_line_is_accepted_or_rejected_with_its_line(tmp_path_factory, data, gz, eol):
    lines, bad = data
    tmp = tmp_path_factory.mktemp("fz")
    body = ("user_id,item_id,event,timestamp,title" + eol).encode() + eol.encode().join(lines)
    body += eol.encode()
    path = tmp / ("e.csv.gz" if gz else "e.csv")
    path.write_bytes(gzip.compress(body) if gz else body)
    store = SQLiteStore(tmp / "avrec.db")
    try:
        report = ingest_file(store, path, "events", CONFIG, rejects_dir=tmp)
        _accounted(store, report, bad, len(lines))
    finally:
        store.close()


JSON_CORRUPTIONS = (
    "nul_id", "bad_time", "huge_time", "empty_user", "unknown_type", "overlong", "bad_utf8",
    "not_object", "broken", "cut",
)  # fmt: skip


@st.composite
def jsonl_lines(draw) -> tuple[list[bytes], set[int]]:
    n = draw(st.integers(1, 40))
    lines: list[bytes] = []
    bad: set[int] = set()
    for k in range(n):
        obj: dict = {"user_id": f"{draw(ids)}{k}", "item_id": draw(ids), "event": "play",
                     "timestamp": draw(st.one_of(times, times.map(str))),
                     "tags": draw(st.sampled_from([None, ["a", "b"], {"x": 1}]))}  # fmt: skip
        how = draw(st.sampled_from((None,) * 4 + JSON_CORRUPTIONS))
        if how == "nul_id":
            obj["user_id"] += "\x00"
        elif how == "bad_time":
            obj["timestamp"] = draw(st.sampled_from(["nan", "later", "0000-01-01", True]))
        elif how == "huge_time":
            obj["timestamp"] = int(obj["timestamp"]) * 1000
        elif how == "empty_user":
            obj["user_id"] = None
        elif how == "unknown_type":
            obj["event"] = "teleport"
        elif how == "overlong":
            obj["text"] = "x" * (MAX_ROW + draw(st.integers(1, 3 * MAX_ROW)))
        raw = json.dumps(obj, ensure_ascii=draw(st.booleans())).encode()
        if how == "bad_utf8":
            raw = raw.replace(b'"play"', b'"pl\xffay"')
        elif how == "not_object":
            raw = b"[1, 2]"
        elif how == "broken":
            raw = raw[: len(raw) // 2]
        elif how == "cut" and k == n - 1:
            raw = raw[:-3]  # the last line cut off, without its newline
        elif how == "cut":
            how = None
        if how is not None:
            bad.add(k + 1)
        lines.append(raw)
    return lines, bad


@FUZZ
@given(jsonl_lines())
def test_jsonl_lines_are_accounted_for(tmp_path_factory, data):
    lines, bad = data
    tmp = tmp_path_factory.mktemp("fz")
    path = tmp / "e.jsonl"
    cut = (len(lines) in bad) and lines[-1].endswith(b"}") is False
    path.write_bytes(b"\n".join(lines) + (b"" if cut else b"\n"))
    store = SQLiteStore(tmp / "avrec.db")
    try:
        report = ingest_file(store, path, "events", CONFIG, rejects_dir=tmp)
        _accounted(store, report, bad, len(lines))
    finally:
        store.close()


@FUZZ
@given(st.binary(max_size=3000), st.sampled_from(["csv", "tsv", "jsonl"]), st.booleans())
def test_random_bytes_never_raise_anything_but_data_error(tmp_path_factory, blob, fmt, header):
    tmp = tmp_path_factory.mktemp("fz")
    head = b"user_id,item_id,timestamp\n" if fmt != "tsv" else b"user_id\titem_id\ttimestamp\n"
    path = tmp / f"x.{fmt}"
    path.write_bytes((head if header else b"") + blob)
    try:
        for batch in read_batches(path, chunk_bytes=256, max_row_bytes=1024):
            assert batch[LINE].is_not_null().all()
            assert batch[LINE].is_sorted()
    except DataError:
        pass
    store = SQLiteStore(tmp / "avrec.db")
    try:
        try:
            report = ingest_file(store, path, "events", CONFIG, rejects_dir=tmp)
        except DataError:
            assert store.counts()["events"] == 0
        else:
            assert report.rows == report.accepted + report.rejected
            json.dumps(workspace_stats(store), allow_nan=False)
    finally:
        store.close()


@FUZZ
@given(st.binary(min_size=1, max_size=2000), st.integers(0, 4000))
def test_corrupt_gzip_and_parquet_fail_whole_and_leave_the_store(tmp_path_factory, noise, at):
    tmp = tmp_path_factory.mktemp("fz")
    store = SQLiteStore(tmp / "avrec.db")
    good = tmp / "good.csv"
    good.write_text("user_id,item_id,timestamp\nu1,i1,1700000000\nu2,i2,1700000001\n")
    ingest_file(store, good, "events", CONFIG, rejects_dir=tmp)
    before = store.events()
    rows = "".join(f"u{k},i{k},{1_700_000_000 + k}\n" for k in range(500))
    packed = bytearray(gzip.compress(("user_id,item_id,timestamp\n" + rows).encode()))
    cut = at % len(packed)
    packed[cut : cut + len(noise)] = noise  # overwrite a stretch: corrupt, cut or grown
    buf = io.BytesIO()
    pq.write_table(
        pa.table({"user_id": ["a", "b"], "item_id": ["x", "y"], "timestamp": [1, 2]}), buf
    )
    pq_bytes = bytearray(buf.getvalue())
    pq_bytes[at % len(pq_bytes) : at % len(pq_bytes) + len(noise)] = noise
    try:
        for name, blob in (("e.csv.gz", bytes(packed)), ("e.parquet", bytes(pq_bytes))):
            path = tmp / name
            path.write_bytes(blob)
            try:
                report = ingest_file(store, path, "events", CONFIG, rejects_dir=tmp)
            except DataError:
                assert store.events().equals(before)
            else:
                assert report.rows == report.accepted + report.rejected
                before = store.events()
            assert store.events()["ts"].is_finite().all()
    finally:
        store.close()


@FUZZ
@given(
    st.lists(
        st.fixed_dictionaries(
            {"item_id": st.one_of(ids, st.just(""), st.just("a\x00b")),
             "title": st.text(max_size=30),
             "duration": st.sampled_from(["", "90", "1:30:00", "-5", "nan", "1h 46min", "soon"]),
             "created_at": st.sampled_from(["", "2001-01-01", "1e20", "nan", "1895-12-28"]),
             "tags": st.sampled_from(["", "a|b", '["x", "y"]', "[broken"]),
             "people": st.sampled_from(["", '[{"name": "A", "role": "actor"}]', "[{]", "3"])}
        ),
        min_size=1,
        max_size=20,
    )
)  # fmt: skip
def test_item_files_account_for_every_row(tmp_path_factory, items):
    tmp = tmp_path_factory.mktemp("fz")
    path = tmp / "items.jsonl"
    text = [json.dumps(r, ensure_ascii=False) for r in items]
    text[0] = text[0][:-2]  # the first line cut: a block of only unreadable lines at 512 bytes
    path.write_text("\n".join(text) + "\n")
    store = SQLiteStore(tmp / "avrec.db")
    try:
        report = ingest_file(store, path, "items", CONFIG, rejects_dir=tmp)
        assert report.rows == len(items) == report.accepted + report.rejected
        assert report.rejected >= 1
        stored = store.items()
        assert stored.height <= report.accepted
        created = stored["created_at"].drop_nulls()
        assert created.is_finite().all()
        json.dumps(workspace_stats(store), allow_nan=False)
    finally:
        store.close()


def test_the_reader_errors_are_reasons_not_exceptions(tmp_path):
    """A sanity check of the fuzz oracle: a known broken line is reported, not raised."""
    p = tmp_path / "x.csv"
    p.write_bytes(b"a,b\n1,2\n3\n")
    df = pl.concat(list(read_batches(p)), how="diagonal")
    assert df[ERROR].to_list() == [None, "expected 2 fields, found 1"]
