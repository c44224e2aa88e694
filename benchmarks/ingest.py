"""How fast does a large behaviour log ingest, and in how much memory?

Generates a synthetic event log (Zipf-like item popularity, time-ordered like a real export),
ingests it into a fresh SQLite workspace store in a child process, and reports events/second and
the child's peak resident memory. Optionally ingests the same file again (the idempotent path:
every row is a duplicate).

    python -m benchmarks.ingest                       # 10,000,000 events, CSV
    python -m benchmarks.ingest --events 2000000 --format parquet --reingest
    python -m benchmarks.ingest --store postgresql    # a throwaway PostgreSQL on loopback
    python -m benchmarks.ingest --store both --reingest   # SQLite, then PostgreSQL, one file

With ``--store postgresql`` the store is a fresh database on a PostgreSQL server started for
the run (Debian's, default settings, on the same cores: the server's work is inside the
time); the peak is the ingesting process' own (the server's memory is not included).

Writes ``benchmarks/results/ingest-<format>.json`` (``ingest-<format>-postgresql.json``).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from benchmarks import _provenance as provenance

RESULTS = Path(__file__).parent / "results"

_CHILD = """
import json, sys, time
from avrec.ingest.pipeline import ingest_file
from avrec.storage import open_store

def peak_mb():
    # VmHWM belongs to this process image; ru_maxrss would carry the parent's high-water mark
    # across fork+exec and overstate the child's peak.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

store = open_store(sys.argv[1])
t = time.perf_counter()
rep = ingest_file(store, sys.argv[2], "events")
dt = time.perf_counter() - t
print(json.dumps({"rows": rep.rows, "accepted": rep.accepted, "inserted": rep.inserted,
                  "duplicates": rep.duplicates, "rejected": rep.rejected, "seconds": dt,
                  "peak_rss_mb": peak_mb()}))
"""


def generate(path: Path, n: int, fmt: str, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    n_users, n_items = max(n // 100, 10), max(n // 500, 10)
    users = rng.integers(0, n_users, n)
    items = np.minimum(rng.zipf(1.2, n) - 1, n_items - 1)
    items = (items * 2654435761) % n_items  # spread popular ids over the id space
    kinds = np.array(["play", "play", "play", "view", "like", "skip", "complete"])
    ev = kinds[rng.integers(0, len(kinds), n)]
    ts = 1_700_000_000 + np.sort(rng.integers(0, 90 * 86400, n))
    value = np.round(rng.random(n), 3)
    df = pl.DataFrame(
        {
            "user_id": pl.Series(users).cast(pl.String).str.pad_start(7, "0"),
            "item_id": pl.Series(items).cast(pl.String),
            "event": ev,
            "value": value,
            "timestamp": ts,
        }
    )
    if fmt == "csv":
        df.write_csv(path)
    elif fmt == "parquet":
        df.write_parquet(path)
    else:
        df.write_ndjson(path)


def run_child(db: str, data: Path) -> tuple[dict, float]:
    """Ingest in a fresh process; its own peak RSS (VmHWM, read at its end) comes back."""
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(db), str(data)],
        check=True,
        capture_output=True,
        text=True,
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return res, res["peak_rss_mb"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--format", choices=["csv", "parquet", "jsonl"], default="csv")
    ap.add_argument("--reingest", action="store_true", help="ingest the same file twice")
    ap.add_argument(
        "--store",
        choices=["sqlite", "postgresql", "both"],
        default="sqlite",
        help="both: SQLite, then PostgreSQL, on the same file in one run",
    )
    args = ap.parse_args()
    stores = ["sqlite", "postgresql"] if args.store == "both" else [args.store]
    pg = None
    if "postgresql" in stores:
        from avrec.storage.pglocal import LocalPostgres

        pg = LocalPostgres().start()
    results = {}
    with tempfile.TemporaryDirectory(prefix="avrec-bench-") as tmp:
        data = Path(tmp) / f"events.{args.format}"
        t = time.perf_counter()
        generate(data, args.events, args.format)
        print(
            f"generated {args.events:,} events ({data.stat().st_size / 1e6:.0f} MB) "
            f"in {time.perf_counter() - t:.1f}s"
        )
        for store in stores:
            results[store] = _measure(store, pg, data, tmp, args)
    if pg is not None:
        pg.stop()
    RESULTS.mkdir(exist_ok=True)
    for store, result in results.items():
        result.update(
            date=time.strftime("%Y-%m-%d"),
            commit=provenance.commit(),
            machine=f"{platform.machine()}, {_cpus()} cores, Python {platform.python_version()}",
        )
        suffix = "" if store == "sqlite" else f"-{store}"
        out = RESULTS / f"ingest-{args.format}{suffix}.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")


def _measure(store: str, pg, data: Path, tmp: str, args: argparse.Namespace) -> dict:  # noqa: ANN001
    db = (
        pg.create_database("bench")
        if store == "postgresql"
        else f"sqlite:///{Path(tmp) / 'avrec.db'}"
    )
    first, peak = run_child(db, data)
    rate = first["rows"] / first["seconds"]
    print(
        f"{store} ingest: {first['rows']:,} rows in {first['seconds']:.1f}s = {rate:,.0f} events/s,"
        f" peak RSS {peak:,.0f} MB, inserted {first['inserted']:,},"
        f" duplicates {first['duplicates']:,}"
    )
    result = {
        "benchmark": "ingest",
        "store": store,
        "format": args.format,
        "events": args.events,
        "file_mb": round(data.stat().st_size / 1e6, 1),
        "seconds": round(first["seconds"], 2),
        "events_per_s": round(rate),
        "peak_rss_mb": round(peak),
        "inserted": first["inserted"],
        "duplicates": first["duplicates"],
    }
    if args.reingest:
        again, peak2 = run_child(db, data)
        rate2 = again["rows"] / again["seconds"]
        print(
            f"{store} re-ingest: {rate2:,.0f} events/s, duplicates {again['duplicates']:,}, "
            f"inserted {again['inserted']:,}, peak RSS {peak2:,.0f} MB"
        )
        result.update(
            reingest_seconds=round(again["seconds"], 2),
            reingest_events_per_s=round(rate2),
            reingest_peak_rss_mb=round(peak2),
            reingest_duplicates=again["duplicates"],
        )
    return result


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
