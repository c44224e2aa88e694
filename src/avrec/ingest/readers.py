"""Streaming readers for CSV/TSV, JSONL and Parquet, in bounded memory whatever the input.

Every reader yields batches as polars DataFrames whose columns are the file's columns as text
(``None`` for empty), plus two bookkeeping columns: ``__line`` (the 1-based line of the row in the
file; the row number for Parquet) and ``__error`` (why the reader could not read the row, else
``None``).

Memory is bounded by ``chunk_bytes`` (less for wide files: see :data:`CELLS_PER_BATCH`) and
``max_row_bytes``, not by the file: text is read in
blocks of whole lines (gzip decompressed block by block), and a line longer than
``max_row_bytes`` is never held: it is skipped up to its newline and stands in its block as one
:data:`OVERLONG` marker line, which becomes a reject with its line number and reason. A header
wider than ``max_columns`` is refused before any row is read.

Delimited files take a fast path per block when it has no quote characters and every line has
the header's field count: polars parses it natively and numpy finds the line numbers. From the
first block with a quote on, Python's ``csv`` module reads the rest line by line (quoted newlines
may span blocks) and reports each bad row. Invalid UTF-8 is decoded with U+FFFD so the row can be
reported, never silently changed. A broken or truncated gzip stream, a file that is not Parquet,
or Parquet text that is not UTF-8 is a :class:`~avrec.errors.DataError` or a rejected row, never a
traceback.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from avrec.errors import DataError

__all__ = [
    "DEFAULT_MAX_COLUMNS",
    "DEFAULT_MAX_ROW_BYTES",
    "ERROR",
    "LINE",
    "OVERLONG",
    "detect_format",
    "read_batches",
    "read_header",
]

LINE = "__line"
ERROR = "__error"
REPLACEMENT = "\ufffd"
#: what stands for a line longer than ``max_row_bytes`` (NUL-delimited: no real line is this)
OVERLONG = "\x00avrec:overlong-line\x00"
_OVERLONG_B = OVERLONG.encode()
DEFAULT_MAX_ROW_BYTES = 1024 * 1024
DEFAULT_MAX_COLUMNS = 1000

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


class _Source:
    """A file's bytes, decompressed when it ends in ``.gz``, with progress in file bytes and
    every read or decompression failure turned into a :class:`DataError` naming the file."""

    def __init__(self, path: Path, tick: Callable[[int], None] | None = None) -> None:
        self.path = path
        self._tick = tick or (lambda n: None)
        try:
            self._file = open(path, "rb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise DataError(f"{path}: cannot open the file ({exc.strerror})") from None
        self._gz = path.suffix.lower() == ".gz"
        self._fh: Any = gzip.GzipFile(fileobj=self._file, mode="rb") if self._gz else self._file
        self._pos = 0

    def _guard(self, call: Callable[[], bytes]) -> bytes:
        try:
            data = call()
        except (OSError, EOFError, zlib.error) as exc:
            if self._gz:
                raise DataError(
                    f"{self.path}: the gzip data is not valid, corrupt or cut short ({exc})"
                ) from None
            raise DataError(f"{self.path}: cannot read the file ({exc})") from None
        now = self._file.tell()
        self._tick(now - self._pos)
        self._pos = now
        return data

    def read(self, n: int) -> bytes:
        return self._guard(lambda: self._fh.read(n))

    def readline(self, limit: int) -> bytes:
        return self._guard(lambda: self._fh.readline(limit))

    def close(self) -> None:
        if self._gz:
            self._fh.close()
        self._file.close()

    def __enter__(self) -> _Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_header(
    path: Path,
    fmt: str,
    max_row_bytes: int = DEFAULT_MAX_ROW_BYTES,
    max_columns: int = DEFAULT_MAX_COLUMNS,
) -> list[str]:
    """Column names of a delimited file, or of a Parquet file's schema; [] for JSONL.

    Raises:
        DataError: the header is blank, longer than ``max_row_bytes``, wider than
            ``max_columns``, has empty or duplicate names, or the file is not what it claims.
    """
    if fmt == "parquet":
        names = list(_parquet_file(path).schema_arrow.names)
        _check_width(len(names), path, max_columns)
        return names
    if fmt == "jsonl":
        return []
    with _Source(path) as src:
        return _parse_header(src, path, "," if fmt == "csv" else "\t", max_row_bytes, max_columns)


def _check_width(n: int, path: Path, max_columns: int) -> None:
    if n > max_columns:
        raise DataError(
            f"{path}: line 1: the header has {n:,} columns, more than [ingest] max_columns ="
            f" {max_columns:,}"
        )


def _parse_header(
    src: _Source, path: Path, sep: str, max_row_bytes: int, max_columns: int
) -> list[str]:
    raw = src.readline(max_row_bytes + 1)
    if len(raw) > max_row_bytes and not raw.endswith(b"\n"):
        raise DataError(
            f"{path}: line 1 (the header) is longer than [ingest] max_row_bytes = {max_row_bytes:,}"
        )
    # counting separators first keeps a very wide header from being split at all
    _check_width(raw.count(sep.encode()) + 1, path, max_columns)
    text = raw.decode("utf-8-sig", errors="replace").rstrip("\r\n")
    if not text.strip():
        raise DataError(f"{path}: the file is empty or its first line (the header) is blank")
    if "\x00" in text:
        raise DataError(f"{path}: line 1: the header holds NUL bytes (is this a text file?)")
    try:
        names = [n.strip() for n in next(csv.reader([text], delimiter=sep))]
    except csv.Error as exc:
        raise DataError(f"{path}: line 1: the header is not readable ({exc})") from None
    if any(not n for n in names):
        raise DataError(f"{path}: line 1: the header has an empty column name")
    seen: set[str] = set()
    dupes = sorted({n for n in names if n in seen or seen.add(n)})  # type: ignore[func-returns-value]
    if dupes:
        raise DataError(f"{path}: line 1: duplicate column names {dupes[:10]}")
    return names


def read_batches(
    path: str | Path,
    fmt: str | None = None,
    chunk_bytes: int = 32 * 1024 * 1024,
    progress: Callable[[int], None] | None = None,
    max_row_bytes: int = DEFAULT_MAX_ROW_BYTES,
    max_columns: int = DEFAULT_MAX_COLUMNS,
) -> Iterator[pl.DataFrame]:
    """Yield the file as batches of text columns plus ``__line`` and ``__error``.

    Args:
        progress: called with the number of (compressed) bytes read since the last call.
        max_row_bytes: a longer line (or quoted record) is rejected with its line, unread.
        max_columns: a wider header is refused; a wider JSON object is rejected.

    Raises:
        DataError: the file is missing, unreadable, not of its format, or has an unusable
            header. Raised mid-file too (a corrupt gzip block): the caller's transaction
            then keeps nothing of the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    fmt = detect_format(path, fmt)
    if fmt == "parquet":
        yield from _read_parquet(path, chunk_bytes, progress or (lambda n: None), max_columns)
        return
    # a block always ends at a line, so it may reach chunk_bytes + max_row_bytes
    with _Source(path, progress) as src:
        if fmt == "jsonl":
            yield from _read_jsonl(src, chunk_bytes, max_row_bytes, max_columns)
        else:
            sep = "," if fmt == "csv" else "\t"
            header = _parse_header(src, path, sep, max_row_bytes, max_columns)
            yield from _read_delimited(src, header, sep, chunk_bytes, max_row_bytes)


# -- blocks of whole lines ---------------------------------------------------------------------
#: cells (rows x columns) per batch: a batch's frames cost about 100 bytes a cell in all,
#: so wide files get proportionally shorter blocks and memory stays bounded by width too
CELLS_PER_BATCH = 2_000_000


def _block_bytes(chunk_bytes: int, columns: int) -> int:
    """Bytes per block for a file of ``columns`` columns: ``chunk_bytes`` for narrow files,
    less for wide ones (at 16 columns and up), never under 256 KiB."""
    return max(min(chunk_bytes, 256 * 1024), chunk_bytes * 16 // max(columns, 16))


def _batch_rows(columns: int) -> int:
    return max(1_000, CELLS_PER_BATCH // max(columns, 1))


def _line_blocks(src: _Source, chunk_bytes: int | list[int], max_row_bytes: int) -> Iterator[bytes]:
    """Blocks of whole lines (the last may lack its newline), in which every line longer than
    ``max_row_bytes`` is replaced by the :data:`OVERLONG` marker. Holds at most one block plus
    ``max_row_bytes`` of a line in progress. ``chunk_bytes`` may be a one-element list the
    caller changes between blocks (JSON lines learn their width from the first block)."""
    size = chunk_bytes if isinstance(chunk_bytes, list) else [chunk_bytes]
    carry = b""
    skipping = False  # inside an over-long line: drop bytes up to its newline
    pending = b""
    while True:
        block = src.read(size[0])
        if not block:
            if skipping:
                yield pending + _OVERLONG_B
            elif carry or pending:
                yield pending + _cap_lines(carry, max_row_bytes)
            return
        if skipping:
            nl = block.find(b"\n")
            if nl < 0:
                continue
            block = block[nl + 1 :]
            skipping = False
            pending += _OVERLONG_B + b"\n"
        data = carry + block if carry else block
        cut = data.rfind(b"\n") + 1
        head, carry = data[:cut], data[cut:]
        if len(carry) > max_row_bytes:
            skipping, carry = True, b""
        out = pending + _cap_lines(head, max_row_bytes) if head else pending
        pending = b""
        if out:
            yield out


def _cap_lines(data: bytes, max_row_bytes: int) -> bytes:
    """``data`` with every line longer than ``max_row_bytes`` replaced by the marker."""
    if len(data) <= max_row_bytes:
        return data
    buf = np.frombuffer(data, dtype=np.uint8)
    nl = np.flatnonzero(buf == 10)
    starts = np.r_[0, nl + 1]
    ends = np.r_[nl, len(buf)]
    long = np.flatnonzero(ends - starts > max_row_bytes)
    if not len(long):
        return data
    parts: list[bytes] = []
    at = 0
    for i in long:
        parts.append(data[at : starts[i]])
        parts.append(_OVERLONG_B)
        at = int(ends[i])
    parts.append(data[at:])
    return b"".join(parts)


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


def _overlong_reason(max_row_bytes: int) -> str:
    return f"the row is longer than [ingest] max_row_bytes = {max_row_bytes:,}; it was not read"


def _finish(df: pl.DataFrame, lines: Any, errors: list[str | None] | None = None) -> pl.DataFrame:
    df = df.with_columns(
        pl.Series(LINE, lines, dtype=pl.Int64),
        pl.Series(ERROR, errors if errors is not None else [None] * df.height, dtype=pl.String),
    )
    text_cols = [c for c in df.columns if c not in (LINE, ERROR)]
    if not text_cols:
        return df
    # one expression over every column (built once, expanded in polars): a list of one
    # expression per column cost more to build than to run on a 1,000-column file
    return df.with_columns(
        pl.when(pl.col(text_cols).str.strip_chars() != "").then(pl.col(text_cols))
    )


# -- delimited --------------------------------------------------------------------------------
def _read_delimited(
    src: _Source, header: list[str], sep: str, chunk_bytes: int, max_row_bytes: int
) -> Iterator[pl.DataFrame]:
    """Blocks without quote characters take the fast path (polars + numpy line numbers); from
    the first block with a quote on, the rest of the file goes through one ``csv`` reader fed
    line by line, which handles quoted newlines, stray quotes and broken rows exactly."""
    batch_rows = _batch_rows(len(header))
    line = 2
    blocks = _line_blocks(src, _block_bytes(chunk_bytes, len(header)), max_row_bytes)
    for block in blocks:
        if b'"' in block:
            yield from _exact_rows(
                _text_lines(chain([block], blocks)), line, header, sep, batch_rows, max_row_bytes
            )
            return
        batch = _parse_delimited_fast(block, line, header, sep)
        if batch is None:
            yield from _exact_rows(
                _text_lines([block]), line, header, sep, batch_rows, max_row_bytes
            )
        elif batch.height:
            yield batch
        line += block.count(b"\n")


def _text_lines(blocks: Iterable[bytes]) -> Iterator[str]:
    """Decoded lines (newline kept) of blocks of whole lines."""
    for block in blocks:
        parts = block.split(b"\n")
        last = parts.pop()
        for p in parts:
            yield p.decode("utf-8", errors="replace") + "\n"
        if last:
            yield last.decode("utf-8", errors="replace")


def _parse_delimited_fast(
    chunk: bytes, first_line: int, header: list[str], sep: str
) -> pl.DataFrame | None:
    if b'"' in chunk or _OVERLONG_B in chunk:
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
    lines_in: Iterator[str],
    first_line: int,
    header: list[str],
    sep: str,
    batch_rows: int,
    max_row_bytes: int,
) -> Iterator[pl.DataFrame]:
    """Python's csv reader over lines, in batches, with each record's first line. A field
    or record longer than ``max_row_bytes`` is a reject, as is an over-long line."""
    csv.field_size_limit(max_row_bytes)
    n = len(header)
    reader = csv.reader(lines_in, delimiter=sep)
    too_long = _overlong_reason(max_row_bytes)

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
            msg = str(exc)
            errors.append(
                too_long if "field larger than field limit" in msg else f"unreadable row: {msg}"
            )
            for c in cols:
                c.append(None)
            prev = reader.line_num
            continue
        start = first_line + prev
        prev = reader.line_num
        if not row or not any(v.strip() for v in row):
            continue
        if any(OVERLONG in v for v in row) or sum(map(len, row)) > max_row_bytes:
            for c in cols:
                c.append(None)
            errors.append(too_long)
        elif len(row) == n:
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
    src: _Source, chunk_bytes: int, max_row_bytes: int, max_columns: int
) -> Iterator[pl.DataFrame]:
    line = 1
    size = [_block_bytes(chunk_bytes, 64)]  # until the first block shows the width
    for chunk in _line_blocks(src, size, max_row_bytes):
        batch = None if _OVERLONG_B in chunk else _parse_jsonl_fast(chunk, line, max_columns)
        if batch is None:
            batch = _parse_jsonl_slow(chunk, line, max_row_bytes, max_columns)
        size[0] = _block_bytes(chunk_bytes, batch.width - 2)
        if batch.height:
            yield batch
        line += chunk.count(b"\n")


def _parse_jsonl_fast(chunk: bytes, first_line: int, max_columns: int) -> pl.DataFrame | None:
    buf = np.frombuffer(chunk, dtype=np.uint8)
    starts, ends = _line_spans(buf)
    nonempty = ends > starts
    lines = first_line + np.flatnonzero(nonempty)
    try:
        df = pl.read_ndjson(io.BytesIO(chunk), infer_schema_length=None)
    except Exception:  # noqa: BLE001 - malformed lines are reported by the exact path
        return None
    if df.height != len(lines) or df.width > max_columns:
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


def _parse_jsonl_slow(
    chunk: bytes, first_line: int, max_row_bytes: int, max_columns: int
) -> pl.DataFrame:
    records: list[dict[str, Any]] = []
    lines: list[int] = []
    errors: list[str | None] = []
    names: dict[str, None] = {}  # every field name, in order of appearance
    for offset, raw in enumerate(chunk.split(b"\n")):
        if not raw.strip():
            continue
        lines.append(first_line + offset)
        records.append({})
        if raw.rstrip(b"\r") == _OVERLONG_B:
            errors.append(_overlong_reason(max_row_bytes))
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            errors.append(f"invalid UTF-8 at byte {exc.start}")
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            errors.append(f"invalid JSON: {exc.msg} (column {exc.colno})")
            continue
        except RecursionError:
            errors.append("invalid JSON: nested too deeply")
            continue
        if not isinstance(obj, dict):
            errors.append("the line is not a JSON object")
            continue
        new = [k for k in obj if k not in names]
        if len(names) + len(new) > max_columns:
            errors.append(
                f"the rows so far have more than [ingest] max_columns = {max_columns:,} fields"
            )
            continue
        names.update(dict.fromkeys(new))
        records[-1] = obj
        errors.append(None)
    if not names:  # every line was bad: keep their count with a placeholder column
        df = pl.DataFrame([pl.Series("__dummy", [None] * len(records), dtype=pl.String)])
        return _finish(df, lines, errors).drop("__dummy")
    df = pl.DataFrame(
        {k: [_to_text(r.get(k)) for r in records] for k in names},
        schema={k: pl.String for k in names},
    )
    return _finish(df, lines, errors)


# -- Parquet ----------------------------------------------------------------------------------
def _parquet_file(path: Path) -> Any:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None


def _read_parquet(
    path: Path, chunk_bytes: int, tick: Callable[[int], None], max_columns: int
) -> Iterator[pl.DataFrame]:
    pf = _parquet_file(path)
    _check_width(len(pf.schema_arrow.names), path, max_columns)
    row = 1
    batch_rows = _batch_rows(len(pf.schema_arrow.names))
    total_rows = max(pf.metadata.num_rows, 1)
    size = path.stat().st_size
    batches = pf.iter_batches(batch_size=batch_rows)
    while True:
        try:
            rb = next(batches)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - a corrupt page or row group
            raise DataError(
                f"{path}: row {row:,} on: the Parquet data is corrupt ({exc})"
            ) from None
        batch = _parquet_text(rb)
        yield _finish(batch, np.arange(row, row + batch.height))
        row += batch.height
        tick(int(size * batch.height / total_rows))


def _parquet_text(rb: Any) -> pl.DataFrame:
    """A record batch as text columns; string columns that are not valid UTF-8 are decoded
    with U+FFFD (the rows are then rejected with the column's name)."""
    import pyarrow as pa

    out = []
    for name, column in zip(rb.schema.names, rb.columns, strict=True):
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            try:
                column.validate(full=True)
            except pa.ArrowInvalid:
                raw = column.cast(pa.large_binary()).to_pylist()
                out.append(
                    pl.Series(
                        name,
                        [None if v is None else v.decode("utf-8", "replace") for v in raw],
                        dtype=pl.String,
                    )
                )
                continue
        s = pl.from_arrow(column)
        assert isinstance(s, pl.Series)
        s = s.alias(name)
        dtype = s.dtype
        if dtype.is_nested():
            out.append(pl.Series(name, [_to_text(v) for v in s.to_list()], dtype=pl.String))
        elif isinstance(dtype, pl.Datetime):
            out.append((s.dt.epoch("us") / 1e6).cast(pl.String))
        elif isinstance(dtype, pl.Date):
            out.append((s.cast(pl.Datetime("us")).dt.epoch("us") / 1e6).cast(pl.String))
        elif dtype == pl.Boolean:
            out.append(s.cast(pl.String).str.to_lowercase())
        else:
            out.append(s.cast(pl.String))
    return pl.DataFrame(out)
