"""How long does full-ranking evaluation take at 100k users x 20k items?

Builds a synthetic dataset (100,000 users, 20,000 items, Zipf item popularity, 10 to 30 events
per user), splits it leave-one-out, fits popularity and item kNN, and times the evaluation alone
(all metrics at K = 10 and 20, every user ranked against every item, 200 bootstrap resamples).

    python -m benchmarks.eval_speed [--users 100000 --items 20000]

Writes ``benchmarks/results/eval-speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import polars as pl

from avrec.data.dataset import Dataset
from avrec.data.weighting import EventWeighting
from avrec.eval import Experiment, LeaveOneOut
from avrec.models import create_model

RESULTS = Path(__file__).parent / "results"


def synthetic(n_users: int, n_items: int, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    per_user = rng.integers(10, 31, n_users)
    users = np.repeat(np.arange(n_users), per_user)
    items = np.minimum(rng.zipf(1.3, len(users)) - 1, n_items - 1)
    items = (items * 7919 + rng.integers(0, 3, len(users))) % n_items
    ts = rng.random(len(users)) * 1e6
    ev = pl.DataFrame({"user_id": users.astype(str), "item_id": items.astype(str), "ts": ts})
    catalogue = pl.DataFrame({"item_id": np.arange(n_items).astype(str)})
    return Dataset.from_events(ev, catalogue, weighting=EventWeighting.binary())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=20_000)
    args = ap.parse_args()
    t = time.perf_counter()
    ds = synthetic(args.users, args.items)
    print(f"{ds} built in {time.perf_counter() - t:.1f}s")
    out = {
        "benchmark": "eval_speed",
        "users": ds.n_users,
        "items": ds.n_items,
        "events": ds.n_events,
    }
    for name in ("pop", "itemknn"):
        t = time.perf_counter()
        res = Experiment(LeaveOneOut(), [create_model(name)], ks=[10, 20], n_bootstrap=200).run(ds)
        total = time.perf_counter() - t
        info = res.meta["models"][name]
        out[f"{name}_experiment_s"] = round(total, 1)
        out[f"{name}_fit_s"] = info["fit_seconds"]
        out[f"{name}_eval_s"] = info["eval_seconds"]
        print(
            f"{name}: fit {info['fit_seconds']:.1f}s, evaluate {info['eval_seconds']:.1f}s, "
            f"whole experiment with bootstrap {total:.1f}s "
            f"({ds.n_users:,} users x {ds.n_items:,} items, 14 metrics x 2 K), "
            f"ndcg@10 {res.value(name, 'ndcg@10'):.4f}"
        )
    out.update(
        date=time.strftime("%Y-%m-%d"),
        machine=f"{platform.machine()}, "
        f"{len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}",
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "eval-speed.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
