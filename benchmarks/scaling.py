"""How the heavy commands grow with the data (issue #19): ingest, train, precompute at 1x,
10x and 100x, as a user runs them, for ``docs/SCALING.md``.

One synthetic platform per scale (``benchmarks.pipeline_latency``'s generator: items in 500
taste clusters with Zipf popularity, users with one to three tastes, 20 plays each): at 1x
2,000 items, 10,000 users and 200,000 events; 10x and 100x multiply all three. Each scale
runs the real commands in a fresh workspace, each in its own process, timed with its peak
resident memory (GNU ``time``):

1. ``avrec ingest items`` then ``avrec ingest events`` (CSV files, SQLite store);
2. ``avrec train`` (the default pipeline, as ``configs/default.toml`` sets it; over 30,000
   items EASE gives way to the ALS factors source);
3. ``avrec precompute --limit N``: N users' kept pages (20 items with explanations), the
   rate giving every user's time.

The catalogue has no titles: encoding text is content analysis, measured per item in the
content-speed and Ray tables and scaled linearly in ``docs/SCALING.md``.

    python -m benchmarks.scaling [--scales 1,10,100] [--precompute-users 5000]

Writes ``benchmarks/results/scaling.json`` after every scale (a long run keeps what it
measured) and the table between the ``scaling`` markers in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks import _provenance as provenance
from benchmarks._markdown import replace_block
from benchmarks.pipeline_latency import synthetic_frames
from benchmarks.service_load import AVREC

RESULTS = Path(__file__).resolve().parent / "results"
BASE = {"items": 2_000, "users": 10_000}
EPOCH = 1_700_000_000.0


def _timed(*args: str) -> dict:
    """One ``avrec`` command in its own process: seconds and peak resident MB."""
    t = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-f", "%M", AVREC, *args], capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if r.returncode:
        raise RuntimeError(f"avrec {' '.join(args)}: {r.stderr[-3000:]}")
    peak_kb = int(r.stderr.strip().splitlines()[-1])
    return {"seconds": round(seconds, 1), "peak_mb": round(peak_kb / 1024), "out": r.stdout}


def run_scale(scale: int, tmp: Path, precompute_users: int) -> dict:
    items, users = BASE["items"] * scale, BASE["users"] * scale
    print(f"{scale}x: {items:,} items, {users:,} users, {20 * users:,} events", flush=True)
    ev, cat, _ = synthetic_frames(items, users, seed=scale)
    ev = ev.with_columns(timestamp=ev["ts"] + EPOCH).drop("ts")
    cat = cat.with_columns(created_at=cat["created_at"] + EPOCH)
    ws = tmp / f"ws-{scale}"
    ev.write_csv(tmp / "events.csv")
    cat.write_csv(tmp / "items.csv")
    subprocess.run([AVREC, "init", str(ws)], check=True, capture_output=True)
    out: dict = {"scale": scale, "items": items, "users": users, "events": len(ev)}
    a = _timed("-w", str(ws), "ingest", "items", str(tmp / "items.csv"))
    b = _timed("-w", str(ws), "ingest", "events", str(tmp / "events.csv"))
    out["ingest"] = {
        "seconds": a["seconds"] + b["seconds"],
        "events_per_s": round(len(ev) / b["seconds"]),
        "peak_mb": max(a["peak_mb"], b["peak_mb"]),
    }
    print(f"  ingest {out['ingest']}", flush=True)
    tr = _timed("-w", str(ws), "train")
    bundle = ws / "artifacts" / "models" / "pipeline" / "1"
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    out["train"] = {"seconds": tr["seconds"], "peak_mb": tr["peak_mb"],
                    "bundle_mb": round(size / 2**20, 1)}  # fmt: skip
    print(f"  train {out['train']}", flush=True)
    n = min(precompute_users, users)
    pc = _timed("-w", str(ws), "precompute", "--limit", str(n), "--json")
    report = json.loads(pc["out"][pc["out"].index("{") :])
    rate = report["pages"] / report["seconds"] if report["seconds"] else 0.0
    out["precompute"] = {
        "users": report["pages"],
        "seconds": round(report["seconds"], 1),
        "command_seconds": pc["seconds"],
        "users_per_s": round(rate, 1),
        "every_user_s": round(users / rate) if rate else None,
        "peak_mb": pc["peak_mb"],
    }
    print(f"  precompute {out['precompute']}", flush=True)
    store = ws / "avrec.db"
    out["store_mb"] = round(store.stat().st_size / 2**20, 1) if store.exists() else None
    shutil.rmtree(ws, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", default="1,10,100")
    ap.add_argument("--precompute-users", type=int, default=5000)
    args = ap.parse_args()
    res: dict = {
        "base": BASE,
        "events_per_user": 20,
        "runs": [],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": provenance.commit(),
        "machine": provenance.machine(),
    }
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="avrec-scaling-") as tmp:
        for scale in (int(s) for s in args.scales.split(",")):
            res["runs"].append(run_scale(scale, Path(tmp), args.precompute_users))
            res["load_average_1min"] = provenance.load()
            (RESULTS / "scaling.json").write_text(json.dumps(res, indent=2) + "\n")
    lines = [
        f"Measured {res['date']} at commit `{res['commit']}` on {res['machine']} "
        "(`python -m benchmarks.scaling`): each command in its own process on a fresh "
        "SQLite workspace, peak resident memory from GNU time; the default pipeline; "
        "precompute over the first users, its rate giving every user's time.",
        "",
        "| scale | items | users | events | ingest s (events/s) | train s | train peak MB | "
        "bundle MB | precompute users/s | every user's page | store MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["runs"]:
        pc = r["precompute"]
        lines.append(
            f"| {r['scale']}x | {r['items']:,} | {r['users']:,} | {r['events']:,} | "
            f"{r['ingest']['seconds']:.0f} ({r['ingest']['events_per_s']:,}) | "
            f"**{r['train']['seconds']:.0f}** | {r['train']['peak_mb']:,} | "
            f"{r['train']['bundle_mb']:,.0f} | {pc['users_per_s']:.0f} | "
            f"{(pc['every_user_s'] or 0) / 60:,.1f} min | {r['store_mb'] or 0:,.0f} |"
        )
    replace_block("scaling", lines, "### How the heavy commands grow (issue 19)")


if __name__ == "__main__":
    main()
