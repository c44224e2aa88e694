"""Users whose activity looks automated, found with an IsolationForest.

Per-user activity features (volume, pace, regularity, repetition, time of day) go through
scikit-learn's IsolationForest; the most isolated users are reported with their features so an
operator can judge them and exclude them (``avrec anomalies --exclude``). Nothing is dropped
without that decision.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

__all__ = ["FEATURES", "AnomalyReport", "detect_anomalies", "user_activity_features"]

FEATURES = (
    "events",
    "distinct_items",
    "repeat_ratio",
    "events_per_active_day",
    "median_gap_s",
    "burst_ratio",
    "top_type_share",
    "hour_entropy",
)


def user_activity_features(events: pl.DataFrame) -> pl.DataFrame:
    """One row per user: the activity features in :data:`FEATURES`.

    Args:
        events: with ``user_id, item_id, event, ts`` (Unix seconds).
    """
    ev = events.select("user_id", "item_id", "event", "ts").sort(["user_id", "ts"])
    ev = ev.with_columns(
        pl.col("ts").diff().over("user_id").alias("gap"),
        ((pl.col("ts") // 3600) % 24).cast(pl.Int32).alias("hour"),
        (pl.col("ts") // 86400).cast(pl.Int64).alias("day"),
    )
    base = ev.group_by("user_id").agg(
        pl.len().alias("events"),
        pl.col("item_id").n_unique().alias("distinct_items"),
        pl.col("day").n_unique().alias("active_days"),
        pl.col("gap").median().fill_null(0.0).alias("median_gap_s"),
        (pl.col("gap") < 2).sum().alias("bursts"),
        pl.col("event").mode().first().alias("_top"),
    )
    top = (
        ev.group_by("user_id", "event")
        .len()
        .group_by("user_id")
        .agg((pl.col("len").max() / pl.col("len").sum()).alias("top_type_share"))
    )
    hours = (
        ev.group_by("user_id", "hour")
        .len()
        .with_columns((pl.col("len") / pl.col("len").sum().over("user_id")).alias("p"))
    )
    entropy = hours.group_by("user_id").agg(
        (-(pl.col("p") * pl.col("p").log(2)).sum()).alias("hour_entropy")
    )
    return (
        base.join(top, on="user_id")
        .join(entropy, on="user_id")
        .with_columns(
            (1 - pl.col("distinct_items") / pl.col("events")).alias("repeat_ratio"),
            (pl.col("events") / pl.col("active_days")).alias("events_per_active_day"),
            (pl.col("bursts") / pl.col("events")).alias("burst_ratio"),
        )
        .select("user_id", *FEATURES)
        .sort("user_id")
    )


@dataclass
class AnomalyReport:
    """Users ranked by how isolated their activity is.

    Attributes:
        table: ``user_id``, the features, ``score`` (higher = more anomalous) and ``flagged``.
    """

    table: pl.DataFrame
    contamination: float

    @property
    def flagged(self) -> list[str]:
        return self.table.filter(pl.col("flagged"))["user_id"].to_list()


def detect_anomalies(
    events: pl.DataFrame, contamination: float = 0.01, seed: int = 0, min_users: int = 20
) -> AnomalyReport:
    """Score users with an IsolationForest on their activity features.

    Args:
        contamination: the share of users expected to be automated.
        min_users: below this many users there is too little to compare, and nobody is flagged.
    """
    from sklearn.ensemble import IsolationForest

    feats = user_activity_features(events)
    if feats.height < min_users:
        return AnomalyReport(
            feats.with_columns(pl.lit(0.0).alias("score"), pl.lit(False).alias("flagged")),
            contamination,
        )
    x = feats.select(FEATURES).to_numpy().astype(np.float64)
    # Counts and durations are heavy-tailed; compare them on a log scale.
    for j, name in enumerate(FEATURES):
        if name in ("events", "distinct_items", "events_per_active_day", "median_gap_s"):
            x[:, j] = np.log1p(np.maximum(x[:, j], 0))
    forest = IsolationForest(contamination=contamination, random_state=seed, n_estimators=200)
    labels = forest.fit_predict(x)
    score = -forest.score_samples(x)
    table = feats.with_columns(pl.Series("score", score), pl.Series("flagged", labels == -1)).sort(
        "score", descending=True
    )
    return AnomalyReport(table, contamination)
