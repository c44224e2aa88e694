from __future__ import annotations

import numpy as np
import polars as pl

from avrec.ingest.anomaly import detect_anomalies, user_activity_features


def _population(seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(200):  # people: a few dozen plays spread over days, varied items
        n = int(rng.integers(10, 60))
        ts = np.sort(rng.uniform(0, 30 * 86400, n)) + 1_700_000_000
        for t in ts:
            rows.append((f"u{u}", f"i{rng.integers(0, 500)}", "play", float(t)))
    for b in range(3):  # bots: thousands of events, one per 0.5 s, cycling a few items
        for k in range(3000):
            rows.append((f"bot{b}", f"i{k % 5}", "play", 1_700_000_000 + k * 0.5))
    return pl.DataFrame(rows, schema=["user_id", "item_id", "event", "ts"], orient="row")


def test_features():
    ev = pl.DataFrame(
        {
            "user_id": ["a", "a", "a"],
            "item_id": ["x", "x", "y"],
            "event": ["play", "play", "like"],
            "ts": [0.0, 1.0, 3600.0],
        }
    )
    f = user_activity_features(ev).row(0, named=True)
    assert f["events"] == 3 and f["distinct_items"] == 2
    assert abs(f["repeat_ratio"] - 1 / 3) < 1e-9
    assert abs(f["top_type_share"] - 2 / 3) < 1e-9
    assert abs(f["burst_ratio"] - 1 / 3) < 1e-9  # one gap under 2 s


def test_bots_are_flagged_people_are_not():
    report = detect_anomalies(_population(), contamination=0.015)
    flagged = set(report.flagged)
    assert {"bot0", "bot1", "bot2"} <= flagged
    assert len(flagged) <= 4
    assert report.table["user_id"][0].startswith("bot")  # the most isolated first


def test_too_few_users_flags_nobody():
    ev = _population().filter(pl.col("user_id").is_in(["u1", "bot0"]))
    assert detect_anomalies(ev).flagged == []
