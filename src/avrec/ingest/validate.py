"""Row validation: turn raw text batches into canonical rows, and bad rows into rejects.

Event validation is vectorised (polars expressions), because event files are large; item and user
validation goes through the pydantic models in :mod:`avrec.data.schema`, row by row, because
catalogues are small and their fields need richer checks. Either way a bad row becomes a reject
with its line and the first reason it failed, and every good row is kept.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import polars as pl
from pydantic import ValidationError

from avrec.data.schema import (
    EVENT_COLUMNS,
    ITEM_COLUMNS,
    ITEM_STORE_SCHEMA,
    MAX_ID_CHARS,
    TIMESTAMP_RANGE,
    Item,
    User,
    parse_timestamp,
)
from avrec.errors import DataError
from avrec.ingest.readers import ERROR, LINE, REPLACEMENT

__all__ = [
    "REJECT_SCHEMA",
    "apply_mapping",
    "id_problem",
    "parse_mapping",
    "parse_timestamps",
    "validate_events",
    "validate_items",
    "validate_users",
]

REJECT_SCHEMA = {"line": pl.Int64, "reason": pl.String, "row": pl.String}


def parse_mapping(spec: str | None) -> dict[str, str]:
    """Parse ``"item_id=video_id,title=name"`` into ``{"item_id": "video_id", ...}``.

    Raises:
        DataError: an entry is not ``canonical=source``.
    """
    if not spec:
        return {}
    out: dict[str, str] = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise DataError(f"--map entry {part!r} must look like canonical=source_column")
        canonical, source = (x.strip() for x in part.split("=", 1))
        if not canonical or not source:
            raise DataError(f"--map entry {part!r} must look like canonical=source_column")
        out[canonical] = source
    return out


def apply_mapping(df: pl.DataFrame, mapping: dict[str, str]) -> pl.DataFrame:
    """Rename source columns to canonical names.

    Raises:
        DataError: a mapped source column is not in the file.
    """
    if not mapping:
        return df
    missing = [src for src in mapping.values() if src not in df.columns]
    if missing:
        shown = [c for c in df.columns if c not in (LINE, ERROR)]
        raise DataError(f"mapped column(s) {missing} not in the file (columns: {shown})")
    renames = {src: canon for canon, src in mapping.items() if src != canon}
    clash = [c for c in renames.values() if c in df.columns and c not in renames]
    if clash:
        df = df.drop(clash)  # the mapped column wins over a same-named one
    return df.rename(renames)


def _row_json(df: pl.DataFrame) -> pl.Expr:
    cols = [c for c in df.columns if c not in (LINE, ERROR)]
    if not cols:
        return pl.lit("{}")
    return pl.struct(cols).struct.json_encode()


def _rejects(df: pl.DataFrame, reason: pl.Expr | pl.Series) -> pl.DataFrame:
    return df.select(
        pl.col(LINE).alias("line"),
        (reason if isinstance(reason, pl.Expr) else pl.lit(reason)).alias("reason"),
        _row_json(df).alias("row"),
    )


_UNIT_SCALE = {"s": 1.0, "ms": 1e3, "us": 1e6}


def parse_timestamps(raw: pl.Series, unit: str = "s") -> pl.Series:
    """Unix seconds from text that holds a Unix time in ``unit`` (``s``, ``ms``, ``us``) or
    ISO 8601; null where unparsable or not finite. Numbers are kept whatever their size, so
    that the window check can say what they look like."""
    text = raw.str.strip_chars()
    num = text.cast(pl.Float64, strict=False) / _UNIT_SCALE[unit]
    num = pl.Series(num.name, num).set(~num.is_finite().fill_null(True), None)  # type: ignore[arg-type]
    lo, hi = TIMESTAMP_RANGE
    need = num.is_null() & text.is_not_null() & text.cast(pl.Float64, strict=False).is_null()
    if not need.any():
        return num
    sub = text.filter(need)
    try:
        parsed = (
            sub.str.to_datetime(strict=False, time_unit="us", time_zone="UTC").dt.epoch("us") / 1e6
        )
    except Exception:  # noqa: BLE001 - mixed formats: the exact path below decides
        parsed = pl.Series([None] * len(sub), dtype=pl.Float64)
    values = parsed.to_list()
    for i, (v, s) in enumerate(zip(values, sub.to_list(), strict=True)):
        if v is None or not lo <= v <= hi:
            try:
                values[i] = parse_timestamp(s)
            except ValueError:
                values[i] = None
    out = num.to_list()
    j = 0
    for i, flag in enumerate(need.to_list()):
        if flag:
            out[i] = values[j]
            j += 1
    return pl.Series(raw.name, out, dtype=pl.Float64)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _time_reasons(reason: Any, window: tuple[float, float], unit: str) -> Any:
    """Reasons for timestamps outside ``window``, with a hint when the number would fit as
    milliseconds or microseconds."""
    lo, hi = window
    ts = pl.col("__ts")
    outside = (ts < lo) | (ts > hi)
    numeric = pl.col("timestamp").str.strip_chars().cast(pl.Float64, strict=False).is_not_null()
    span = (
        f"timestamp outside {_iso(lo)} to {_iso(hi)}"
        " ([ingest] earliest_event, latest_event_ahead_s)"
    )
    for name, scale in (("milliseconds", 1e3), ("microseconds", 1e6)):
        if _UNIT_SCALE[unit] >= scale:
            continue
        fits = (ts / (scale / _UNIT_SCALE[unit])).is_between(lo, hi)
        short = "ms" if scale == 1e3 else "us"
        reason = reason.when(outside & numeric & fits).then(
            pl.format(
                f"timestamp outside {_iso(lo)} to {_iso(hi)}; it looks like {name}, set"
                f" [ingest] timestamp_unit = \"{short}\": '{{}}'",
                pl.col("timestamp"),
            )
        )
    return reason.when(outside).then(pl.format(span + ": '{}'", pl.col("timestamp")))


def id_problem(col: str) -> pl.Expr:
    """Why an id column's value cannot be stored (``None`` when it can), as in
    :func:`avrec.data.schema.check_id`."""
    c = pl.col(col).str.strip_chars()
    return (
        pl.when(c.str.len_chars() > MAX_ID_CHARS)
        .then(pl.lit(f"{col} is longer than {MAX_ID_CHARS} characters"))
        .when(c.str.contains(r"[\x00-\x1f\x7f]"))
        .then(pl.lit(f"{col} holds a control character"))
    )


def validate_events(
    df: pl.DataFrame,
    known_types: set[str],
    default_type: str = "play",
    fallback_ts: bool = False,
    window: tuple[float, float] | None = None,
    unit: str = "s",
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split a raw event batch into canonical events and rejects.

    Args:
        df: a reader batch whose columns already carry canonical names.
        known_types: accepted event types.
        default_type: type used when the file has no ``event`` column.
        fallback_ts: the file has no ``timestamp`` column; the line number orders the events.
        window: the times an event may carry (Unix seconds); others are rejected.
        unit: unit of numeric timestamps: ``s``, ``ms`` or ``us``.

    Returns:
        ``(events, rejects)``: events with ``user_id, item_id, event, value, ts, session_id, text,
        context``; rejects with ``line, reason, row``.
    """
    original = df.columns
    missing = [c for c in ("user_id", "item_id") if c not in df.columns]
    if missing:  # a batch of unreadable lines may lack the file's columns
        df = df.with_columns(pl.lit(None, pl.String).alias(c) for c in missing)
    cols = set(df.columns)
    text_cols = [c for c in df.columns if c not in (LINE, ERROR)]
    ev = (
        pl.col("event").str.strip_chars().str.to_lowercase()
        if "event" in cols
        else pl.lit(default_type)
    )
    ts = (
        parse_timestamps(df["timestamp"], unit)
        if "timestamp" in cols
        else df[LINE].cast(pl.Float64)
        if fallback_ts
        else pl.Series([None] * df.height, dtype=pl.Float64)
    )
    value_raw = df["value"] if "value" in cols else pl.Series([None] * df.height, dtype=pl.String)
    value = value_raw.str.strip_chars().cast(pl.Float64, strict=False)
    work = df.with_columns(
        ev.alias("__event"), ts.alias("__ts"), value.alias("__value"), value_raw.alias("__vraw")
    )
    reason = pl.when(pl.col(ERROR).is_not_null()).then(pl.col(ERROR))
    if text_cols:  # one expression over every column; the column is named in Python only
        # for the rare rows that have one (a when-chain per column grew quadratically)
        work = work.with_columns(_broken_column(work, text_cols))
        reason = reason.when(pl.col("__broken").is_not_null()).then(
            pl.format("invalid UTF-8 in column '{}'", pl.col("__broken"))
        )
    user = pl.col("user_id") if "user_id" in cols else pl.lit(None, pl.String)
    item = pl.col("item_id") if "item_id" in cols else pl.lit(None, pl.String)
    reason = reason.when(user.is_null()).then(pl.lit("missing user_id"))
    for c in ("user_id", "item_id"):
        if c in cols:
            problem = id_problem(c)
            reason = reason.when(problem.is_not_null()).then(problem)
    reason = (
        reason.when(pl.col("__event").is_null())
        .then(pl.lit("missing event type"))
        .when(~pl.col("__event").is_in(sorted(known_types)))
        .then(pl.format("unknown event type '{}'", pl.col("__event")))
        .when(item.is_null() & (pl.col("__event") != "search"))
        .then(pl.lit("missing item_id"))
    )
    if "timestamp" in cols:
        reason = (
            reason.when(pl.col("timestamp").is_null())
            .then(pl.lit("missing timestamp"))
            .when(pl.col("__ts").is_null())
            .then(pl.format("unparsable timestamp '{}'", pl.col("timestamp")))
        )
        reason = _time_reasons(reason, window or TIMESTAMP_RANGE, unit)
    elif not fallback_ts:
        reason = reason.when(pl.lit(True)).then(pl.lit("missing timestamp"))
    reason = reason.when(
        pl.col("__vraw").is_not_null()
        & (pl.col("__value").is_null() | ~pl.col("__value").is_finite())
    ).then(pl.format("value '{}' is not a finite number", pl.col("__vraw")))
    work = work.with_columns(reason.otherwise(None).alias("__reason"))
    if "context" in cols:
        work = _check_context(work)
    bad = work.filter(pl.col("__reason").is_not_null())
    good = work.filter(pl.col("__reason").is_null())
    extra = [c for c in text_cols if c not in EVENT_COLUMNS]
    context = _merge_context(good, extra)
    events = good.select(
        pl.col("user_id").str.strip_chars(),
        (item.str.strip_chars() if "item_id" in cols else item).alias("item_id"),
        pl.col("__event").alias("event"),
        pl.col("__value").alias("value"),
        pl.col("__ts").alias("ts"),
        (pl.col("session_id") if "session_id" in cols else pl.lit(None, pl.String)).alias(
            "session_id"
        ),
        (pl.col("text") if "text" in cols else pl.lit(None, pl.String)).alias("text"),
        context.alias("context"),
    )
    rejects = _rejects(bad.select(original), bad["__reason"])
    return events, rejects


def _broken_column(df: pl.DataFrame, cols: list[str]) -> pl.Series:
    """Per row, the first of ``cols`` holding U+FFFD (invalid UTF-8 decoded), else null."""
    hit = df.select(
        pl.any_horizontal(pl.col(cols).str.contains(REPLACEMENT, literal=True)).fill_null(False)
    ).to_series()
    names: list[str | None] = [None] * df.height
    rows = hit.arg_true().to_list()
    if rows:
        for j, values in zip(rows, df[rows].select(cols).iter_rows(), strict=True):
            names[j] = next(c for c, v in zip(cols, values, strict=True) if v and REPLACEMENT in v)
    return pl.Series("__broken", names, dtype=pl.String)


def _check_context(work: pl.DataFrame) -> pl.DataFrame:
    reasons = work["__reason"].to_list()
    for i, raw in enumerate(work["context"].to_list()):
        if raw is None or reasons[i] is not None:
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError:
            reasons[i] = "context is not valid JSON"
            continue
        if not isinstance(obj, dict):
            reasons[i] = "context must be a JSON object"
    return work.with_columns(pl.Series("__reason", reasons, dtype=pl.String))


def _merge_context(good: pl.DataFrame, extra: list[str]) -> pl.Expr:
    """Free columns of an event row go into its ``context`` JSON object."""
    has_ctx = "context" in good.columns
    if not extra:
        return pl.col("context") if has_ctx else pl.lit(None, pl.String)
    if not has_ctx:
        return (
            pl.when(pl.any_horizontal(pl.col(extra).is_not_null()))
            .then(pl.struct(extra).struct.json_encode())
            .otherwise(None)
        )
    merged = []
    for ctx, *vals in zip(
        good["context"].to_list(), *(good[c].to_list() for c in extra), strict=True
    ):
        obj = json.loads(ctx) if ctx else {}
        obj.update({k: v for k, v in zip(extra, vals, strict=True) if v is not None})
        merged.append(json.dumps(obj, ensure_ascii=False) if obj else None)
    return pl.lit(pl.Series(merged, dtype=pl.String))


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "row"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{where}: {msg}"


def validate_items(df: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split a raw item batch into canonical items (store columns) and rejects.

    List and object fields of the result are JSON text, ready for the store. Only the canonical
    columns present in the file are returned (so an upsert leaves absent fields untouched), plus
    ``attributes`` when the file has extra columns.

    Raises:
        DataError: the batch has no ``item_id`` column.
    """
    if "item_id" not in df.columns and df.width <= 2:  # a block of unreadable lines only
        df = df.with_columns(pl.lit(None, pl.String).alias("item_id"))
    if "item_id" not in df.columns:
        raise DataError("items need an item_id column (map yours with --map item_id=<column>)")
    present = [c for c in ITEM_COLUMNS if c in df.columns]
    extra = [c for c in df.columns if c not in ITEM_COLUMNS and c not in (LINE, ERROR)]
    good: list[dict[str, Any]] = []
    bad_idx: list[int] = []
    bad_reason: list[str] = []
    for i, row in enumerate(df.iter_rows(named=True)):
        reason = _pre_check(row)
        if reason is None:
            fields = {k: row[k] for k in present if row[k] is not None}
            attrs = {k: row[k] for k in extra if row[k] is not None}
            try:
                item = Item(**fields, attributes=attrs)
            except ValidationError as exc:
                reason = _first_error(exc)
            else:
                good.append(_item_record(item, present, bool(extra)))
                continue
        bad_idx.append(i)
        bad_reason.append(reason)
    out_cols = ["item_id", *[c for c in present if c != "item_id"]]
    if extra:
        out_cols.append("attributes")
    items = pl.DataFrame(good, schema={c: ITEM_STORE_SCHEMA[c] for c in out_cols}, orient="row")
    bad = df[bad_idx] if bad_idx else df.clear()
    return items, _rejects(bad, pl.Series(bad_reason, dtype=pl.String))


def _pre_check(row: dict[str, Any]) -> str | None:
    if row.get(ERROR):
        return str(row[ERROR])
    for k, v in row.items():
        if isinstance(v, str) and REPLACEMENT in v:
            return f"invalid UTF-8 in column {k!r}"
    if row.get("item_id") is None:
        return "missing item_id"
    return None


def _item_record(item: Item, present: list[str], has_extra: bool) -> dict[str, Any]:
    rec: dict[str, Any] = {"item_id": item.item_id}
    for c in present:
        if c == "item_id":
            continue
        v = getattr(item, c)
        if c in ("tags", "categories"):
            v = json.dumps(v, ensure_ascii=False)
        elif c == "people":
            v = json.dumps([p.model_dump(mode="json") for p in v], ensure_ascii=False)
        elif c in ("video", "audio", "image", "subtitles"):
            v = v.uri if v is not None else None
        elif isinstance(v, float) and not math.isfinite(v):
            v = None
        rec[c] = v
    if has_extra:
        rec["attributes"] = json.dumps(item.attributes, ensure_ascii=False)
    return rec


def validate_users(df: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split a raw user batch into users (``user_id, attributes``) and rejects.

    Raises:
        DataError: the batch has no ``user_id`` column.
    """
    if "user_id" not in df.columns and df.width <= 2:  # a block of unreadable lines only
        df = df.with_columns(pl.lit(None, pl.String).alias("user_id"))
    if "user_id" not in df.columns:
        raise DataError("users need a user_id column (map yours with --map user_id=<column>)")
    extra = [c for c in df.columns if c not in ("user_id", LINE, ERROR)]
    good: list[dict[str, Any]] = []
    bad_idx: list[int] = []
    bad_reason: list[str] = []
    for i, row in enumerate(df.iter_rows(named=True)):
        reason = _pre_check({**row, "item_id": row.get("user_id")})
        if reason == "missing item_id":
            reason = "missing user_id"
        if reason is None:
            try:
                user = User(
                    user_id=row["user_id"],
                    attributes={k: row[k] for k in extra if row[k] is not None},
                )
            except ValidationError as exc:
                reason = _first_error(exc)
            else:
                good.append(
                    {
                        "user_id": user.user_id,
                        "attributes": json.dumps(user.attributes, ensure_ascii=False),
                    }
                )
                continue
        bad_idx.append(i)
        bad_reason.append(reason)
    users = pl.DataFrame(good, schema={"user_id": pl.String, "attributes": pl.String}, orient="row")
    bad = df[bad_idx] if bad_idx else df.clear()
    return users, _rejects(bad, pl.Series(bad_reason, dtype=pl.String))
