"""``avrec stats``: what is in the workspace."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import polars as pl
import typer
from rich.table import Table

from avrec.cli._common import console, state
from avrec.storage import Store


def _iso(ts: float | None) -> str:
    if ts is None:
        return "-"
    try:
        return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):  # a value stored before ingest checked times
        return f"{ts!r} (not a date)"


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float as ``None``: JSON has no NaN or Infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def workspace_stats(store: Store) -> dict[str, Any]:
    """Counts, sparsity, time span, activity distribution and catalogue completeness."""
    counts = store.counts()
    events = store.events()
    lo, hi = store.time_span()
    out: dict[str, Any] = {
        **counts,
        "events_by_type": store.event_type_counts(),
        "first_event": lo,
        "last_event": hi,
    }
    with_item = events.filter(pl.col("item_id").is_not_null())
    pairs = with_item.select("user_id", "item_id").unique().height
    active_users = with_item["user_id"].n_unique()
    active_items = with_item["item_id"].n_unique()
    out["pairs"] = pairs
    out["active_users"] = active_users
    out["active_items"] = active_items
    denom = max(counts["users"] * counts["items"], 1)
    out["density"] = pairs / denom
    out["sparsity"] = 1 - pairs / denom
    if events.height:
        per_user = events.group_by("user_id").len()["len"]
        out["events_per_user"] = {
            "min": int(per_user.min()),
            "median": float(per_user.median()),  # type: ignore[arg-type]
            "mean": float(per_user.mean()),
            "max": int(per_user.max()),  # type: ignore[arg-type]
        }
    items = store.items()
    real = items.filter(~pl.col("placeholder"))
    out["catalogue_missing"] = {
        c: int(real[c].is_null().sum())
        for c in ("title", "description", "video", "audio", "image", "duration")
    }
    out["ingests"] = len(store.ingests())
    return out


def stats(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of tables"),
) -> None:
    """Users, items, events by type, sparsity, time span and catalogue completeness."""
    ws = state(ctx).open_workspace()
    try:
        s = workspace_stats(ws.store)
    finally:
        ws.close()
    if as_json:
        console.print_json(json.dumps(_finite(s), allow_nan=False))
        return
    t = Table("what", "value", title=f"workspace {ws.root}")
    t.add_row(
        "users",
        f"{s['users']:,} ({s['active_users']:,} with item events, "
        f"{s['excluded_users']:,} excluded)",
    )
    t.add_row(
        "items",
        f"{s['items']:,} ({s['placeholder_items']:,} known only from events, "
        f"{s['active_items']:,} with events)",
    )
    t.add_row("events", f"{s['events']:,}")
    t.add_row("user-item pairs", f"{s['pairs']:,}")
    t.add_row("sparsity", f"{s['sparsity']:.4%} (density {s['density']:.4%})")
    t.add_row("time span", f"{_iso(s['first_event'])} .. {_iso(s['last_event'])}")
    if "events_per_user" in s:
        e = s["events_per_user"]
        t.add_row(
            "events per user",
            f"min {e['min']}, median {e['median']:.0f}, mean {e['mean']:.1f}, max {e['max']}",
        )
    t.add_row("ingests", str(s["ingests"]))
    console.print(t)
    bt = Table("event type", "events", "share")
    for k, v in s["events_by_type"].items():
        bt.add_row(k, f"{v:,}", f"{v / max(s['events'], 1):.1%}")
    console.print(bt)
    real = s["items"] - s["placeholder_items"]
    mt = Table("catalogue field", "missing", title="catalogue completeness (flagged, not filled)")
    for k, v in s["catalogue_missing"].items():
        mt.add_row(k, f"{v:,} of {real:,}")
    console.print(mt)
