"""What logging impressions costs a request (issue 21): the cold path with and without.

Two servers on copies of the same trained MovieLens-100K workspace (service-load's), one with
``[online] impressions = true`` (the default), one with it off, both with the page cache off
(``AVREC_CACHE_S=0``: every page computed, the cold path), 2 workers each. wrk (paced: 50
clients offering ``--rate`` requests/s in all) asks ``GET /v1/users/{id}/recommendations``
for random users, alternating the two servers for ``--rounds`` rounds of ``--seconds`` each
(one server at a time: they share the two cores). The table gives each side's p50 and p99
(the median over rounds) and their difference.

Beside it, the call itself: ``ImpressionLog.log`` for a list of 10 items, timed in process
(one append to the journal), p50 and p99 over 20,000 calls; and what the logging side's
servers measured of it under the load (``avrec_impression_log_seconds``, the time each
request spent logging on its own thread).

    python -m benchmarks.impressions_overhead [--rounds 3] [--seconds 20] [--rate 100]

Writes ``benchmarks/results/impressions-overhead.json`` and the block between the
``impressions-overhead`` markers in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks import _provenance as provenance
from benchmarks._markdown import replace_block
from benchmarks.service_load import CACHE, _titles_words, load, ml100k_workspace, serve, warm

RESULTS = Path(__file__).resolve().parent / "results"


def _copy(ws: Path, name: str, impressions: bool) -> Path:
    dst = CACHE / name
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(ws, dst, ignore=shutil.ignore_patterns("spool", "*.log"))
    with open(dst / "avrec.toml", "a") as f:
        f.write(f"\n[online]\nimpressions = {'true' if impressions else 'false'}\n")
    return dst


def _stop(proc) -> None:  # noqa: ANN001
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(Exception):
        proc.wait(30)


def _call_times(n: int = 20_000) -> dict[str, float]:
    from avrec.online.impressions import ImpressionLog
    from avrec.storage.sqlite import SQLiteStore

    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "avrec.db")
        log = ImpressionLog(Path(tmp) / "spool", store, contextlib.nullcontext, 1.0)
        items = [str(i) for i in range(10)]
        times = []
        for j in range(n):
            t = time.perf_counter()
            log.log(f"r{j}", "recommendations", items, "196", "pipeline-v1")
            times.append(time.perf_counter() - t)
        log.close()
        stored = store.impressions().height
        store.close()
    times.sort()
    return {"calls": n, "p50_us": times[n // 2] * 1e6, "p99_us": times[int(n * 0.99)] * 1e6,
            "stored": stored}  # fmt: skip


def _logging_histogram(url: str) -> dict[str, float]:
    """The server's ``avrec_impression_log_seconds`` (every worker's): how long requests
    spent logging, on their own threads, since it started."""
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=30).text
    buckets, count, total = [], 0.0, 0.0
    for line in text.splitlines():
        if line.startswith("avrec_impression_log_seconds_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(le), float(line.rsplit(" ", 1)[1])))
        elif line.startswith("avrec_impression_log_seconds_count"):
            count = float(line.rsplit(" ", 1)[1])
        elif line.startswith("avrec_impression_log_seconds_sum"):
            total = float(line.rsplit(" ", 1)[1])
    buckets.sort()
    # the p99's upper bound: the first bucket edge holding 99% of the observations
    p99 = next((le for le, n in buckets if count and n >= 0.99 * count), float("inf"))
    return {"lists": count, "mean_us": total / count * 1e6 if count else 0.0,
            "p99_at_most_us": p99 * 1e6}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--rate", type=float, default=100.0)
    args = ap.parse_args()
    started = time.perf_counter()
    base = ml100k_workspace()
    sides = {
        "on": _copy(base, "impressions-on", True),
        "off": _copy(base, "impressions-off", False),
    }
    lists = _titles_words(base)
    runs: dict[str, list[dict]] = {"on": [], "off": []}
    for r in range(args.rounds):
        for side in ("off", "on") if r % 2 else ("on", "off"):
            proc, url = serve(sides[side], {"AVREC_CACHE_S": "0"})
            try:
                warm(url, lists[0])
                res = load(url, "recommendations", 50, args.seconds, lists, args.rate)
                if side == "on":
                    res["logging"] = _logging_histogram(url)
            finally:
                _stop(proc)
            runs[side].append(res)
            print(f"round {r + 1} impressions {side}: p50 {res['p50']:.1f} ms, "
                  f"p99 {res['p99']:.1f} ms, {res['rps']:.0f}/s, {res['errors']} errors",
                  flush=True)  # fmt: skip
    stored = None
    from avrec.storage import open_store

    s = open_store(f"sqlite:///{sides['on'] / 'avrec.db'}")
    try:
        stored = s.impressions().height
    finally:
        s.close()
    summary = {
        side: {k: statistics.median(x[k] for x in runs[side]) for k in ("p50", "p99", "rps")}
        for side in runs
    }
    out = {
        "benchmark": "impressions-overhead", "rate": args.rate, "seconds": args.seconds,
        "rounds": args.rounds, "runs": runs, "summary": summary, "stored": stored,
        "call": _call_times(), "date": time.strftime("%Y-%m-%d"),
        "commit": provenance.commit(("src", "benchmarks/impressions_overhead.py")),
        "machine": provenance.machine(), "run_s": time.perf_counter() - started,
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "impressions-overhead.json").write_text(json.dumps(out, indent=2) + "\n")
    on, off, call = summary["on"], summary["off"], out["call"]
    lines = [
        f"Measured {out['date']} at `{out['commit']}` on {out['machine']} "
        f"(`python -m benchmarks.impressions_overhead`): MovieLens-100K pipeline, page cache "
        f"off (the cold path), 2 workers, wrk paced at {args.rate:g} requests/s by 50 clients, "
        f"{args.rounds} alternating rounds of {args.seconds} s per side (medians); "
        f"{stored:,} impressions stored by the logging side.",
        "",
        "| impressions | p50 | p99 | requests/s |",
        "|---|---|---|---|",
        f"| logged (default) | {on['p50']:.1f} ms | {on['p99']:.1f} ms | {on['rps']:.0f} |",
        f"| off | {off['p50']:.1f} ms | {off['p99']:.1f} ms | {off['rps']:.0f} |",
        f"| difference | {on['p50'] - off['p50']:+.1f} ms | {on['p99'] - off['p99']:+.1f} ms | |",
        "",
        f"The call itself (`ImpressionLog.log`, 10 items, in process): p50 "
        f"{call['p50_us']:.1f} µs, p99 {call['p99_us']:.1f} µs over {call['calls']:,} calls.",
    ]
    logged = [r["logging"] for r in runs["on"] if "logging" in r]
    if logged:
        lines += [
            "",
            "On the requests' own threads under this load (the servers' "
            "`avrec_impression_log_seconds`, per round): mean "
            + ", ".join(f"{x['mean_us']:.0f}" for x in logged)
            + " µs; p99 at most "
            + ", ".join(f"{x['p99_at_most_us']:.0f}" for x in logged)
            + " µs (the histogram's bucket edge).",
        ]
    replace_block("impressions-overhead", lines, "### Impression logging on the cold path")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
