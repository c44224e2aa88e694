"""The per-user bound of ``avrec release stats`` (issue 20): error of the released counts.

Each user's events are bounded to ``events_per_user`` before the counts are noised, so a
small bound loses the heavy users' events (bias) and a large one needs more noise (the
sensitivity of ``events``, ``pairs``, ``active_items`` and ``events_by_type`` is the bound).
For each bound, the relative root-mean-square error of the released ``events`` and
``pairs`` at epsilon 1 (one sixth each, as released): bias from the bounding, measured over
draws of the bounding, plus the discrete Laplace noise's variance. The bound is chosen on
MovieLens-100K (development) and reported on MicroLens-50k.

    python -m benchmarks.privacy_stats

Writes ``benchmarks/results/privacy-stats.json`` and the block between the
``privacy-stats`` markers in BENCHMARKS.md.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import polars as pl

from avrec.config import Settings
from avrec.data.loaders import load_dataset
from avrec.privacy.release import STATS, bounded_events
from benchmarks import _provenance as provenance
from benchmarks._markdown import replace_block

RESULTS = Path(__file__).resolve().parent / "results"
BOUNDS = (10, 20, 50, 100, 200, 500, 1000)
EPSILON = 1.0
DRAWS = 5
DEV, TEST = "movielens-100k", "microlens-50k"


def _errors(events: pl.DataFrame) -> dict[str, dict[str, float]]:
    exact = {"events": events.height, "pairs": events.select("user_id", "item_id").unique().height}
    share = EPSILON / len(STATS)
    out = {}
    for b in BOUNDS:
        q = math.exp(-share / b)  # discrete Laplace at scale b / share
        noise_var = 2 * q / (1 - q) ** 2
        cell = {}
        for name, true in exact.items():
            sq = 0.0
            for seed in range(DRAWS):
                kept = bounded_events(events, b, seed)
                got = (
                    kept.height
                    if name == "events"
                    else kept.select("user_id", "item_id").unique().height
                )
                sq += (got - true) ** 2
            cell[name] = math.sqrt(sq / DRAWS + noise_var) / true
        out[str(b)] = cell
    return out


def _events(name: str) -> pl.DataFrame:
    d = load_dataset(name, settings=Settings())
    users = [d.users.ids[i] for i in d.user_index]
    items = [d.items.ids[i] for i in d.item_index]
    return pl.DataFrame({"user_id": users, "item_id": items})


def main() -> None:
    started = time.perf_counter()
    dev = _errors(_events(DEV))
    bound = min(BOUNDS, key=lambda b: dev[str(b)]["events"] + dev[str(b)]["pairs"])
    test = _errors(_events(TEST))
    out = {"benchmark": "privacy-stats", "epsilon": EPSILON, "draws": DRAWS, "chosen": bound,
           "datasets": {DEV: dev, TEST: test}, "date": time.strftime("%Y-%m-%d"),
           "commit": provenance.commit(("src", "benchmarks/privacy_stats.py")),
           "machine": provenance.machine(), "run_s": time.perf_counter() - started}  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "privacy-stats.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [
        f"Measured {out['date']} at `{out['commit']}` on {out['machine']} "
        f"(`python -m benchmarks.privacy_stats`): relative RMSE of the released `events` and "
        f"`pairs` at epsilon {EPSILON:g} (one sixth each), bias of the bounding over {DRAWS} "
        f"draws plus the noise. Bound chosen on {DEV}: **{bound}** events per user.",
        "",
        "| events per user | " + " | ".join(f"{n} events / pairs" for n in (DEV, TEST)) + " |",
        "|---|---|---|",
    ]
    for b in BOUNDS:
        cells = [f"{r[str(b)]['events']:.2%} / {r[str(b)]['pairs']:.2%}" for r in (dev, test)]
        mark = " (chosen)" if b == bound else ""
        lines.append(f"| {b}{mark} | " + " | ".join(cells) + " |")
    replace_block("privacy-stats", lines, "### Differentially private workspace statistics")
    for b in BOUNDS:
        print(b, dev[str(b)], test[str(b)])
    print(f"chosen {bound}; done in {out['run_s']:.0f}s")


if __name__ == "__main__":
    main()
