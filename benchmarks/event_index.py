"""Which unique key makes event upserts fastest in SQLite: user-first or timestamp-first?

Inserts the same time-ordered synthetic events (random users and items) into two fresh
databases that differ only in the column order of the unique index that makes re-ingest an
upsert, and reports rows/second for each, side by side in one run.

    python -m benchmarks.event_index --events 2000000

Writes ``benchmarks/results/event-index.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"

KEYS = {"user_first": "user_idx, item_idx, type, ts", "ts_first": "ts, user_idx, item_idx, type"}


def run(path: Path, key: str, rows: list[tuple]) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA cache_size=-262144")
    conn.execute(
        "CREATE TABLE events(id INTEGER PRIMARY KEY, user_idx INT NOT NULL, item_idx INT"
        " NOT NULL, type TEXT NOT NULL, ts REAL NOT NULL, value REAL)"
    )
    conn.execute(f"CREATE UNIQUE INDEX k ON events({key})")
    t = time.perf_counter()
    conn.execute("BEGIN")
    conn.executemany(
        f"INSERT INTO events(user_idx, item_idx, type, ts, value) VALUES (?,?,?,?,?)"
        f" ON CONFLICT({key}) DO UPDATE SET value = excluded.value",
        rows,
    )
    conn.execute("COMMIT")
    dt = time.perf_counter() - t
    conn.close()
    return len(rows) / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=2_000_000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n = args.events
    rows = list(
        zip(
            rng.integers(0, 100_000, n).tolist(),
            rng.integers(0, 50_000, n).tolist(),
            np.array(["play", "like", "skip", "view"])[rng.integers(0, 4, n)].tolist(),
            (1.6e9 + np.sort(rng.integers(0, 30_000_000, n))).tolist(),
            rng.random(n).tolist(),
            strict=True,
        )
    )
    result = {"benchmark": "event_index", "events": n}
    with tempfile.TemporaryDirectory() as tmp:
        for name, key in KEYS.items():
            rate = run(Path(tmp) / f"{name}.db", key, rows)
            result[f"{name}_rows_per_s"] = round(rate)
            print(f"{name:>10} ({key}): {rate:,.0f} rows/s")
    result["ratio_ts_first_over_user_first"] = round(
        result["ts_first_rows_per_s"] / result["user_first_rows_per_s"], 2
    )
    result.update(
        date=time.strftime("%Y-%m-%d"),
        machine=f"{platform.machine()}, Python {platform.python_version()}",
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "event-index.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"ratio {result['ratio_ts_first_over_user_first']}x")


if __name__ == "__main__":
    main()
