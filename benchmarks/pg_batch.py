"""Where the time of one bulk event batch goes in the PostgreSQL store (issue #18).

A 500,000-event batch (10,000 users, 2,000 items, 90 days, sorted by time) is written with
``PostgresStore.add_events`` into a fresh database on a throwaway PostgreSQL 15 on loopback,
three times: into the empty store (the append path: a batch newer than every stored event),
then the same batch again with other values (the upsert path: every row conflicts), then a
batch of new rows newer than all (append again, on a table that holds rows). Every statement
that takes over 20 ms is timed, and the COPY. The same is run with the secondary indexes on
``events`` dropped (the item B-tree; the user and item B-trees), to price each one.

Then the served path: 1,000 batches of one event each, each with an idempotency key, in
the transaction the service opens for a request (``add_events_once``): wall milliseconds per
event, and the CPU milliseconds of this process and of the server's processes.

    python -m benchmarks.pg_batch [--rows 500000]

Writes ``benchmarks/results/pg-batch.json`` and the table between the ``pg-batch`` markers
in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import re
import time

import numpy as np
import polars as pl

from benchmarks import _provenance as provenance
from benchmarks._markdown import replace_block
from benchmarks.ingest import RESULTS

VARIANTS = {
    "every index": (),
    "without the item B-tree": ("events_item",),
    "without the user and item B-trees": ("events_item", "events_user"),
}
STEPS = ("COPY", "new users", "new items", "max(ts)", "insert")


def batch(n: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame({
        "user_id": pl.Series(rng.integers(0, 10_000, n)).cast(pl.String),
        "item_id": pl.Series(rng.integers(0, 2_000, n)).cast(pl.String),
        "event": ["play"] * n,
        "value": rng.random(n),
        "ts": (1.7e9 + np.sort(rng.integers(0, 90 * 86400, n))).astype(float),
    })  # fmt: skip


def _step(sql: str) -> str:
    s = re.sub(r"\s+", " ", sql).strip()
    if s.startswith("INSERT INTO users"):
        return "new users"
    if s.startswith("INSERT INTO items"):
        return "new items"
    if s.startswith("SELECT max(ts)"):
        return "max(ts)"
    if "INSERT INTO events" in s:
        return "insert"
    return s[:40]


def run(url: str, rows: int, drop: tuple[str, ...]) -> dict:
    import psycopg

    import avrec.storage.postgres as pgmod
    from avrec.storage import open_store

    timings: dict[str, float] = {}
    real_execute, real_copy = psycopg.Connection.execute, pgmod.PostgresStore._copy

    def execute(self, query, *a, **k):  # noqa: ANN001, ANN202
        t = time.perf_counter()
        out = real_execute(self, query, *a, **k)
        dt = time.perf_counter() - t
        if dt > 0.02:
            name = _step(str(query))
            timings[name] = timings.get(name, 0.0) + dt
        return out

    def copy(conn, table, df):  # noqa: ANN001, ANN202
        t = time.perf_counter()
        real_copy(conn, table, df)
        timings["COPY"] = timings.get("COPY", 0.0) + time.perf_counter() - t

    store = open_store(url)
    for ix in drop:
        store._exec(f"DROP INDEX {ix}")  # type: ignore[attr-defined]
    df = batch(rows)
    passes = {
        "append, empty table": df,
        "upsert, every row conflicts": df.with_columns(value=pl.col("value") + 1),
        "append, after the rows": df.with_columns(ts=pl.col("ts") + 1e7),
    }
    out: dict = {}
    psycopg.Connection.execute = execute  # type: ignore[method-assign]
    pgmod.PostgresStore._copy = staticmethod(copy)  # type: ignore[method-assign]
    try:
        for name, frame in passes.items():
            timings.clear()
            t = time.perf_counter()
            res = store.add_events(frame)
            total = time.perf_counter() - t
            out[name] = {"seconds": total, "inserted": res.inserted,
                         "steps": {k: round(v, 3) for k, v in timings.items()}}  # fmt: skip
            print(f"  {name}: {total:.2f}s {out[name]['steps']}", flush=True)
    finally:
        psycopg.Connection.execute = real_execute  # type: ignore[method-assign]
        pgmod.PostgresStore._copy = real_copy  # type: ignore[method-assign]
        store.close()
    return out


def served(url: str, n: int = 1000) -> dict:
    """One event per batch, as the service writes them: ms per event, wall and CPU."""
    import psutil

    from avrec.storage import open_store

    store = open_store(url)
    server = [p for p in psutil.process_iter(["username"]) if p.info["username"] == "postgres"]

    def server_cpu() -> float:
        total = 0.0
        for p in server:
            try:
                total += sum(p.cpu_times()[:2])
            except psutil.NoSuchProcess:
                pass
        return total

    def one(i: int) -> None:
        ev = pl.DataFrame({"user_id": [f"u{i % 500}"], "item_id": [f"i{i % 900}"],
                           "event": ["play"], "ts": [1.7e9 + i], "value": [0.9]})  # fmt: skip
        with store.transaction():
            store.add_events_once(ev, [f"k{i}"])

    for i in range(100):  # connections, prepared statements, the month's partition
        one(i)
    me = psutil.Process()
    c0, s0, t0 = sum(me.cpu_times()[:2]), server_cpu(), time.perf_counter()
    for i in range(100, 100 + n):
        one(i)
    out = {
        "events": n,
        "wall_ms": (time.perf_counter() - t0) / n * 1000,
        "client_cpu_ms": (sum(me.cpu_times()[:2]) - c0) / n * 1000,
        "server_cpu_ms": (server_cpu() - s0) / n * 1000,
    }
    store.close()
    print(f"served: {out}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=500_000)
    args = ap.parse_args()
    from avrec.storage.pglocal import LocalPostgres

    res: dict = {"rows": args.rows, "variants": {}}
    with LocalPostgres() as pg:
        for i, (name, drop) in enumerate(VARIANTS.items()):
            print(name, flush=True)
            res["variants"][name] = run(pg.create_database(f"b{i}"), args.rows, drop)
        res["served"] = served(pg.create_database("served"))
    res.update(
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        commit=provenance.commit(("src/avrec/storage", "benchmarks/pg_batch.py")),
        machine=provenance.machine(),
        load_average_1min=provenance.load(),
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pg-batch.json").write_text(json.dumps(res, indent=2) + "\n")
    lines = [
        f"Measured {res['date']} at commit `{res['commit']}` on {res['machine']} "
        f"(`python -m benchmarks.pg_batch`): one batch of {args.rows:,} events through "
        "`PostgresStore.add_events`, seconds per step (statements over 20 ms).",
        "",
        "| indexes on events | pass | total s | " + " | ".join(STEPS) + " |",
        "|---|---|---|" + "---|" * len(STEPS),
    ]
    for variant, passes in res["variants"].items():
        for name, r in passes.items():
            cells = [f"{r['steps'].get(s, 0.0):.2f}" for s in STEPS]
            lines.append(f"| {variant} | {name} | {r['seconds']:.2f} | " + " | ".join(cells) + " |")
    sv = res["served"]
    lines += [
        "",
        f"Served batches ({sv['events']:,} of one event each, with an idempotency key, one "
        "transaction each, on an idle machine), milliseconds per event:",
        "",
        "| wall | CPU, this process | CPU, the server |",
        "|---|---|---|",
        f"| {sv['wall_ms']:.2f} | {sv['client_cpu_ms']:.2f} | {sv['server_cpu_ms']:.2f} |",
    ]
    replace_block("pg-batch", lines, "### One bulk batch into PostgreSQL (issue 18)")


if __name__ == "__main__":
    main()
