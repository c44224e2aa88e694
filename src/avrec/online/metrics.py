"""Online metrics: what people did with what they were shown.

An event is attributed to an impression when the same user acted on the same item within
``window_s`` seconds after it was shown, or when the event echoes the list's
``request_id`` (an anonymous session's way, and an exact one). The store joins them
(:meth:`~avrec.storage.base.Store.impression_outcomes`, SQL); this module aggregates, per
surface, model version and variant, and per hour or day when asked:

- ``ctr``: impressions followed by a click (``click_events``, default a play or a view);
- ``completion``: impressions followed by a completion (a ``complete`` event, or a play
  whose value, its completion, reaches ``completion_at``);
- ``watch_s``: seconds watched per impression (each attributed play's completion times the
  item's duration);
- ``likes``, ``dislikes``, ``skips``: per impression;
- ``coverage``: distinct items shown over the catalogue; ``novelty``: the mean
  self-information ``-log2(users of the item / users)`` of what was shown.
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

import polars as pl

__all__ = ["online_metrics"]

GROUPS = ("surface", "model_version", "variant")


def online_metrics(
    store: Any,
    since: float | None = None,
    until: float | None = None,
    window_s: float = 86400.0,
    click_events: tuple[str, ...] = ("play", "view"),
    completion_at: float = 0.9,
    every: Literal["hour", "day"] | None = None,
) -> list[dict[str, Any]]:
    """One row per surface, model version and variant (and hour or day, with ``every``)
    over the impressions shown in ``[since, until)`` (default: the last 7 days)."""
    until = time.time() if until is None else until
    since = until - 7 * 86400.0 if since is None else since
    shown = store.impressions(since, until)
    if not shown.height:
        return []
    outcomes = store.impression_outcomes(since, until, window_s)
    items = store.items(include_placeholders=False).select("item_id", "duration")
    n_items = max(items.height, 1)
    counts = store.item_user_counts()
    n_users = max(store.counts()["users"], 1)
    per = outcomes.join(
        shown.select("request_id", "position", "item_id"), on=["request_id", "position"]
    ).join(items, on="item_id", how="left")
    is_play = pl.col("event") == "play"
    flags = per.group_by("request_id", "position").agg(
        pl.col("event").is_in(list(click_events)).any().alias("click"),
        ((pl.col("event") == "complete") | (is_play & (pl.col("value") >= completion_at)))
        .any()
        .alias("complete"),
        (pl.when(is_play).then(pl.col("value").clip(0, 1) * pl.col("duration")).otherwise(0.0))
        .sum()
        .alias("watch_s"),
        (pl.col("event") == "like").sum().alias("likes"),
        (pl.col("event") == "dislike").sum().alias("dislikes"),
        (pl.col("event") == "skip").sum().alias("skips"),
    )
    info = counts.with_columns(
        (-(pl.col("users").cast(pl.Float64) / n_users).log(base=2)).alias("self_info")
    ).select("item_id", "self_info")
    frame = (
        shown.join(flags, on=["request_id", "position"], how="left")
        .join(info, on="item_id", how="left")
        .with_columns(
            pl.col("click", "complete").fill_null(False),
            pl.col("watch_s", "likes", "dislikes", "skips").fill_null(0),
            pl.col("self_info").fill_null(math.log2(n_users)),  # nobody yet: the rarest
            pl.col("model_version", "variant").fill_null(""),
        )
    )
    keys = list(GROUPS)
    if every is not None:
        step = 3600.0 if every == "hour" else 86400.0
        frame = frame.with_columns(((pl.col("ts") // step) * step).alias("period"))
        keys.append("period")
    out = (
        frame.group_by(keys)
        .agg(
            pl.len().alias("impressions"),
            pl.col("request_id").n_unique().alias("lists"),
            pl.col("click").mean().alias("ctr"),
            pl.col("complete").mean().alias("completion"),
            pl.col("watch_s").mean().alias("watch_s"),
            pl.col("likes").mean().alias("likes"),
            pl.col("dislikes").mean().alias("dislikes"),
            pl.col("skips").mean().alias("skips"),
            (pl.col("item_id").n_unique() / n_items).alias("coverage"),
            pl.col("self_info").mean().alias("novelty"),
        )
        .sort(keys)
    )
    return out.to_dicts()
