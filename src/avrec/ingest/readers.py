"""Streaming readers for CSV/TSV, JSONL and Parquet.

Every reader yields batches as polars DataFrames whose columns are the file's columns as text
(``None`` for empty), plus two bookkeeping columns: ``__line`` (the 1-based line of the row in the
file; the row number for Parquet) and ``__error`` (why the reader could not read the row, else
``None``). Memory stays bounded by ``chunk_bytes``.

Delimited files take a fast path per chunk when it has no quote characters and every line has the
header's field count: polars parses it natively and numpy finds the line numbers. A chunk with
quotes, ragged lines or broken bytes takes Python's ``csv`` module, which reports each bad row.
Invalid UTF-8 is decoded with U+FFFD so the row can be reported, never silently changed.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import polars as pl

from avrec.errors import DataError

__all__ = ["ERROR", "LINE", "detect_format", "read_batches", "read_header"]

LINE = "__line"
ERROR = "__error"
REPLACEMENT = "\ufffd"

_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".txt": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def detect_format(path: Path, fmt: str | None = None) -> str:
    """The format of ``path``: ``csv``, ``tsv``, ``jsonl`` or ``parquet``.

    Raises:
        DataError: the extension is not one avrec reads and no ``fmt`` was given.
    """
    if fmt:
        if fmt not in {"csv", "tsv", "jsonl", "parquet"}:
            raise DataError(f"unknown format {fmt!r}; use csv, tsv, jsonl or parquet")
        return fmt
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in _FORMATS:
        return _FORMATS[suffixes[-1]]
    raise DataError(
        f"{path}: cannot tell the format from the extension; pass --format csv|tsv|jsonl|parquet"
    )


def _open_binary(path: Path) -> IO[bytes]:
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def read_header(path: Path, fmt: str) -> list[str]:
    """Column names of a delimited file, or of a Parquet file's schema; [] for JSONL."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return list(pq.ParquetFile(path).schema_arrow.names)
    if fmt == "jsonl":
        return []
    with _open_binary(path) as fh:
        return _parse_header(fh.readline(), path, "," if fmt == "csv" else "\t")


def _parse_header(raw: bytes, path: Path, sep: str) -> list[str]:
    text = raw.decode("utf-8-sig", errors="replace").rstrip("\r\n")
    if not text.strip():
        raise DataError(f"{path}: the file is empty or its first line (the header) is blank")
    names = [n.strip() for n in next(csv.reader([text], delimiter=sep))]
    if any(not n for n in names):
        raise DataError(f"{path}: line 1: the header has an empty column name")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"{path}: line 1: duplicate column names {dupes}")
    return names


def read_batches(
    path: str | Path,
    fmt: str | None = None,
    chunk_bytes: int = 32 * 1024 * 1024,
    progress: Callable[[int], None] | None = None,
) -> Iterator[pl.DataFrame]:
    """Yield the file as batches of text columns plus ``__line`` and ``__error``.

    Args:
        progress: called with the number of (compressed) bytes read since the last call.

    Raises:
        DataError: the file is missing, unreadable or has an unusable header.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    fmt = detect_format(path, fmt)
    tick = progress or (lambda n: None)
    if fmt == "parquet":
        yield from _read_parquet(path, chunk_bytes, tick)
    elif fmt == "jsonl":
        yield from _read_jsonl(path, chunk_bytes, tick)
    else:
        yield from _read_delimited(path, "," if fmt == "csv" else "\t", chunk_bytes, tick)


# -- chunking ---------------------------------------------------------------------------------
def _chunks(fh: IO[bytes], chunk_bytes: int, tick: Callable[[int], None]) -> Iterator[bytes]:
    """Blocks of whole lines."""
    carry = b""
    raw = getattr(fh, "fileobj", None) or fh  # gzip: count compressed bytes
    pos = raw.tell()
    while True:
        block = fh.read(chunk_bytes)
        now = raw.tell()
        tick(now - pos)
        pos = now
        if not block:
            if carry:
                yield carry
            return
        data = carry + block
        cut = data.rfind(b"\n") + 1
        if cut <= 0:
            carry = data
            continue
        yield data[:cut]
        carry = data[cut:]


def _line_spans(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive, without ``\\r``) of every line in a chunk."""
    nl = np.flatnonzero(buf == 10)
    starts = np.r_[0, nl + 1]
    ends = np.r_[nl, len(buf)]
    if len(starts) and starts[-1] >= len(buf):  # nothing after the final newline
        starts, ends = starts[:-1], ends[:-1]
    cr = (ends > starts) & (buf[np.maximum(ends - 1, 0)] == 13)
    ends = ends - cr.astype(ends.dtype)
    return starts, ends


def _finish(df: pl.DataFrame, lines: Any, errors: list[str | None] | None = None) -> pl.DataFrame:
    df = df.with_columns(
        pl.Series(LINE, lines, dtype=pl.Int64),
        pl.Series(ERROR, errors if errors is not None else [None] * df.height, dtype=pl.String),
    )
    text_cols = [c for c in df.columns if c not in (LINE, ERROR)]
    return df.with_columns(
        [
            pl.when(pl.col(c).str.strip_chars() == "").then(None).otherwise(pl.col(c)).alias(c)
            for c in text_cols
        ]
    )


# -- delimited --------------------------------------------------------------------------------
class _Chained(io.RawIOBase):
    """A byte stream that yields ``prefix`` and then the rest of ``fh`` (reporting progress)."""

    def __init__(self, prefix: bytes, fh: IO[bytes], tick: Callable[[int], None]) -> None:
        self._prefix = memoryview(prefix)
        self._fh = fh
        self._tick = tick
        self._raw = getattr(fh, "fileobj", None) or fh
        self._pos = self._raw.tell()

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # noqa: ANN001
        if len(self._prefix):
            n = min(len(buf), len(self._prefix))
            buf[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._fh.read(len(buf))
        now = self._raw.tell()
        self._tick(now - self._pos)
        self._pos = now
        buf[: len(data)] = data
        return len(data)


def _read_delimited(
    path: Path, sep: str, chunk_bytes: int, tick: Callable[[int], None]
) -> Iterator[pl.DataFrame]:
    """Chunks without quote characters take the fast path (polars + numpy line numbers); from
    the first chunk with a quote on, the rest of the file goes through one streaming ``csv``
    reader, which handles quoted newlines, stray quotes and broken rows exactly."""
    batch_rows = max(10_000, chunk_bytes // 64)
    with _open_binary(path) as fh:
        header = _parse_header(fh.readline(), path, sep)
        line = 2
        raw = getattr(fh, "fileobj", None) or fh
        pos = raw.tell()
        carry = b""
        while True:
            block = fh.read(chunk_bytes)
            now = raw.tell()
            tick(now - pos)
            pos = now
            data = carry + block
            if not data:
                return
            if b'"' in data:
                stream = io.TextIOWrapper(
                    io.BufferedReader(_Chained(data, fh, tick)),
                    encoding="utf-8",
                    errors="replace",
                    newline="",
                )
                yield from _exact_rows(stream, line, header, sep, batch_rows)
                return
            cut = len(data) if not block else data.rfind(b"\n") + 1
            if cut <= 0:
                carry = data
                continue
            chunk, carry = data[:cut], data[cut:]
            batch = _parse_delimited_fast(chunk, line, header, sep)
            if batch is None:
                text = io.StringIO(chunk.decode("utf-8", errors="replace"), newline="")
                yield from _exact_rows(text, line, header, sep, batch_rows)
            elif batch.height:
                yield batch
            line += chunk.count(b"\n")


def _parse_delimited_fast(
    chunk: bytes, first_line: int, header: list[str], sep: str
) -> pl.DataFrame | None:
    if b'"' in chunk:
        return None
    buf = np.frombuffer(chunk, dtype=np.uint8)
    starts, ends = _line_spans(buf)
    nonempty = ends > starts
    seps = np.flatnonzero(buf == ord(sep))
    per_line = np.bincount(np.searchsorted(starts, seps, side="right") - 1, minlength=len(starts))
    if np.any(per_line[nonempty] != len(header) - 1):
        return None
    lines = first_line + np.flatnonzero(nonempty)
    try:
        df = pl.read_csv(
            io.BytesIO(chunk),
            has_header=False,
            new_columns=header,
            schema={h: pl.String for h in header},
            separator=sep,
            quote_char=None,
            encoding="utf8-lossy",
        )
    except Exception:  # noqa: BLE001 - any parser complaint sends the chunk to the exact path
        return None
    if df.height != len(lines):
        return None
    return _finish(df, lines)


def _exact_rows(
    stream: IO[str], first_line: int, header: list[str], sep: str, batch_rows: int
) -> Iterator[pl.DataFrame]:
    """Python's csv reader over a text stream, in batches, with each record's first line."""
    csv.field_size_limit(64 * 1024 * 1024)
    n = len(header)
    reader = csv.reader(stream, delimiter=sep)

    def empty() -> tuple[list[list[str | None]], list[int], list[str | None]]:
        return [[] for _ in header], [], []

    cols, lines, errors = empty()
    prev = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            lines.append(first_line + prev)
            errors.append(f"unreadable row: {exc}")
            for c in cols:
                c.append(None)
            prev = reader.line_num
            continue
        start = first_line + prev
        prev = reader.line_num
        if not row or not any(v.strip() for v in row):
            continue
        if len(row) == n:
            for c, v in zip(cols, row, strict=True):
                c.append(v)
            errors.append(None)
        else:
            for i, c in enumerate(cols):
                c.append(row[i] if i < len(row) else None)
            errors.append(f"expected {n} fields, found {len(row)}")
        lines.append(start)
        if len(lines) >= batch_rows:
            yield _rows_frame(header, cols, lines, errors)
            cols, lines, errors = empty()
    if lines:
        yield _rows_frame(header, cols, lines, errors)


def _rows_frame(
    header: list[str], cols: list[list[str | None]], lines: list[int], errors: list[str | None]
) -> pl.DataFrame:
    df = pl.DataFrame(
        {h: c for h, c in zip(header, cols, strict=True)}, schema={h: pl.String for h in header}
    )
    return _finish(df, lines, errors)


# -- JSON lines -------------------------------------------------------------------------------
def _to_text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v) if isinstance(v, float) else str(v)
    return json.dumps(v, ensure_ascii=False)


def _read_jsonl(
    path: Path, chunk_bytes: int, tick: Callable[[int], None]
) -> Iterator[pl.DataFrame]:
    with _open_binary(path) as fh:
        line = 1
        for chunk in _chunks(fh, chunk_bytes, tick=tick):
            batch = _parse_jsonl_fast(chunk, line)
            if batch is None:
                batch = _parse_jsonl_slow(chunk, line)
            if batch.height:
                yield batch
            line += chunk.count(b"\n")


def _parse_jsonl_fast(chunk: bytes, first_line: int) -> pl.DataFrame | None:
    buf = np.frombuffer(chunk, dtype=np.uint8)
    starts, ends = _line_spans(buf)
    nonempty = ends > starts
    lines = first_line + np.flatnonzero(nonempty)
    try:
        df = pl.read_ndjson(io.BytesIO(chunk), infer_schema_length=None)
    except Exception:  # noqa: BLE001 - malformed lines are reported by the exact path
        return None
    if df.height != len(lines):
        return None
    if any(dtype.is_nested() for dtype in df.schema.values()):
        # polars unifies objects across rows (adding null keys) and lists' element types: the
        # exact path keeps every value as it was written
        return None
    out = {}
    for name, dtype in df.schema.items():
        s = df[name]
        if dtype == pl.Boolean:
            out[name] = s.cast(pl.String).str.to_lowercase()
        else:
            out[name] = s.cast(pl.String)
    return _finish(pl.DataFrame(out), lines)


def _parse_jsonl_slow(chunk: bytes, first_line: int) -> pl.DataFrame:
    records: list[dict[str, Any]] = []
    lines: list[int] = []
    errors: list[str | None] = []
    for offset, raw in enumerate(chunk.split(b"\n")):
        if not raw.strip():
            continue
        lines.append(first_line + offset)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            records.append({})
            errors.append(f"invalid UTF-8 at byte {exc.start}")
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            records.append({})
            errors.append(f"invalid JSON: {exc.msg} (column {exc.colno})")
            continue
        if not isinstance(obj, dict):
            records.append({})
            errors.append("the line is not a JSON object")
            continue
        records.append(obj)
        errors.append(None)
    names: list[str] = []
    for r in records:
        for k in r:
            if k not in names:
                names.append(k)
    df = pl.DataFrame(
        {k: [_to_text(r.get(k)) for r in records] for k in names},
        schema={k: pl.String for k in names},
    )
    if not names:  # every line was bad: keep their count with a placeholder column
        df = pl.DataFrame([pl.Series("__dummy", [None] * len(records), dtype=pl.String)])
        return _finish(df, lines, errors).drop("__dummy")
    return _finish(df, lines, errors)


# -- Parquet ----------------------------------------------------------------------------------
def _read_parquet(
    path: Path, chunk_bytes: int, tick: Callable[[int], None]
) -> Iterator[pl.DataFrame]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    row = 1
    batch_rows = max(10_000, chunk_bytes // 64)
    total_rows = max(pf.metadata.num_rows, 1)
    size = path.stat().st_size
    for rb in pf.iter_batches(batch_size=batch_rows):
        df = pl.from_arrow(rb)
        assert isinstance(df, pl.DataFrame)
        out = []
        for name, dtype in df.schema.items():
            col = pl.col(name)
            if dtype.is_nested():
                out.append(
                    pl.Series(name, [_to_text(v) for v in df[name].to_list()], dtype=pl.String)
                )
                continue
            if isinstance(dtype, pl.Datetime):
                expr = (col.dt.epoch("us") / 1e6).cast(pl.String)
            elif isinstance(dtype, pl.Date):
                expr = (col.cast(pl.Datetime("us")).dt.epoch("us") / 1e6).cast(pl.String)
            elif dtype == pl.Boolean:
                expr = col.cast(pl.String).str.to_lowercase()
            else:
                expr = col.cast(pl.String)
            out.append(df.select(expr.alias(name)).to_series())
        batch = pl.DataFrame(out)
        yield _finish(batch, np.arange(row, row + batch.height))
        row += batch.height
        tick(int(size * batch.height / total_rows))
