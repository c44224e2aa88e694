from __future__ import annotations

import gzip
import json

import polars as pl
import pytest

from avrec.errors import DataError
from avrec.ingest.readers import ERROR, LINE, detect_format, read_batches
from tests.conftest import write


def rows(path, **kw) -> pl.DataFrame:
    return pl.concat(list(read_batches(path, **kw)), how="diagonal")


def test_csv_fast_path_lines_and_empties(tmp_path):
    p = write(tmp_path / "e.csv", "user_id,item_id,value\nu1,i1,1\n\nu2,i2,\r\nu3,i3,3\n")
    df = rows(p)
    assert df["user_id"].to_list() == ["u1", "u2", "u3"]
    assert df[LINE].to_list() == [2, 4, 5]  # the blank line 3 is skipped, CRLF handled
    assert df["value"].to_list() == ["1", None, "3"]
    assert df[ERROR].null_count() == 3


def test_csv_quoted_multiline_and_ragged_rows(tmp_path):
    text = 'item_id,title\n1,"two\nlines"\n2,"a ""quote"", b"\n3,x,extra\n4,ok\n'
    df = rows(write(tmp_path / "i.csv", text))
    assert df["title"].to_list()[:2] == ["two\nlines", 'a "quote", b']
    assert df[LINE].to_list() == [2, 4, 5, 6]
    errors = df[ERROR].to_list()
    assert errors[2] == "expected 2 fields, found 3" and errors[3] is None


def test_chunk_boundaries_keep_every_row(tmp_path):
    lines = [f"u{i},i{i},{i}" for i in range(5000)]
    lines[2500] = 'u2500,"quoted\nvalue",1'
    p = write(tmp_path / "big.csv", "user_id,item_id,value\n" + "\n".join(lines) + "\n")
    df = rows(p, chunk_bytes=4096)
    assert df.height == 5000
    assert df["user_id"].to_list()[-1] == "u4999"
    assert df.filter(pl.col("user_id") == "u2501")[LINE].item() == 2 + 2501 + 1


def test_invalid_utf8_is_marked_not_lost(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_bytes(b"user_id,item_id\nu1,i1\nu\xff2,i2\nu3,i3\n")
    df = rows(p)
    assert df.height == 3
    assert "\ufffd" in df["user_id"][1]


def test_tsv_and_gzip(tmp_path):
    p = tmp_path / "e.tsv.gz"
    with gzip.open(p, "wt") as fh:
        fh.write("user_id\titem_id\nu1\ti1\n")
    assert detect_format(p) == "tsv"
    assert rows(p)["item_id"].to_list() == ["i1"]


def test_jsonl_fast_and_exact_paths(tmp_path):
    good = [
        {"user_id": "u1", "item_id": 7, "value": 0.5, "tags": ["a"]},
        {"user_id": "u2", "item_id": 8, "liked": True},
    ]
    p = write(tmp_path / "e.jsonl", "\n".join(json.dumps(r) for r in good) + "\n")
    df = rows(p)
    assert df["item_id"].to_list() == ["7", "8"]
    assert df["tags"].to_list()[0] == '["a"]'
    assert df["liked"].to_list() == [None, "true"]
    p2 = write(tmp_path / "bad.jsonl", '{"user_id": "u1"}\n{broken\n[1]\n{"user_id": "u4"}\n')
    df2 = rows(p2)
    assert df2[LINE].to_list() == [1, 2, 3, 4]
    errs = df2[ERROR].to_list()
    assert errs[0] is None and errs[1].startswith("invalid JSON") and "not a JSON object" in errs[2]


def test_parquet(tmp_path):
    p = tmp_path / "e.parquet"
    pl.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "item_id": [1, 2],
            "ts": pl.Series([1_700_000_000_000_000, 0]).cast(pl.Datetime("us")),
        }
    ).write_parquet(p)
    df = rows(p)
    assert df["item_id"].to_list() == ["1", "2"]
    assert float(df["ts"][0]) == 1_700_000_000.0
    assert df[LINE].to_list() == [1, 2]


def test_header_problems(tmp_path):
    with pytest.raises(DataError, match="duplicate column"):
        rows(write(tmp_path / "d.csv", "a,a\n1,2\n"))
    with pytest.raises(DataError, match="empty"):
        rows(write(tmp_path / "e.csv", ""))
    with pytest.raises(DataError, match="format"):
        rows(write(tmp_path / "x.bin", "a\n"))


def test_stray_quote_in_an_unquoted_field_keeps_rows_whole(tmp_path):
    """Review finding: quote parity cut a chunk inside a quoted field after a stray quote."""
    text = 'user_id,item_id,text\nu0,i0,5" screen\nu1,i1,"multi\nline"\nu2,i2,ok\n'
    for chunk in (8, 16, 1 << 20):
        df = rows(write(tmp_path / "q.csv", text), chunk_bytes=chunk)
        assert df["text"].to_list() == ['5" screen', "multi\nline", "ok"], chunk
        assert df[LINE].to_list() == [2, 3, 5]
        assert df[ERROR].null_count() == 3


def test_line_numbers_after_unreadable_rows(tmp_path):
    """Review finding: the error fallback split on form feeds and shifted later line numbers."""
    big = "x" * 100
    import csv as _csv

    old = _csv.field_size_limit()
    text = f'user_id,item_id,text\nu1,i1,"page\x0cbreak"\nu2,i2,ok\nu3,i3,fine\n{big}\n'
    df = rows(write(tmp_path / "f.csv", text))
    _csv.field_size_limit(old)
    got = dict(zip(df[LINE].to_list(), df["user_id"].to_list(), strict=True))
    assert got[2] == "u1" and got[3] == "u2" and got[4] == "u3"
    assert df.filter(pl.col(LINE) == 2)["text"].item() == "page\x0cbreak"


def test_jsonl_nested_values_are_kept_as_written(tmp_path):
    """Review finding: polars' struct inference added null keys to other rows' objects."""
    p = write(
        tmp_path / "n.jsonl",
        '{"user_id": "u1", "context": {"a": 1}}\n{"user_id": "u2", "context": {"b": 2.5}}\n',
    )
    df = rows(p)
    assert [json.loads(c) for c in df["context"].to_list()] == [{"a": 1}, {"b": 2.5}]
