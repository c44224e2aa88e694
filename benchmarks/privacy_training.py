"""What user-level differential privacy costs a trained model (issue 20): EASE from a
private Gram matrix.

``EASE(dp_epsilon=...)`` (:mod:`avrec.privacy.training`) bounds each user to
``dp_items_per_user`` items and adds Gaussian noise calibrated by OpenDP to the Gram matrix,
then solves EASE as usual. Measured on the fixed leave-one-out splits, NDCG@10 and HR@10 on
the test stage, for epsilon in {0.5, 1, 2, 4, 8} at delta 1e-6, beside the same EASE without
DP. ``dp_items_per_user`` is chosen on MovieLens-100K's validation stage at epsilon 8 and
used for both datasets.

    python -m benchmarks.privacy_training [--dataset movielens-100k,microlens-50k]

Writes ``benchmarks/results/privacy-training.json`` and the table between the
``privacy-training`` markers in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from avrec.config import Settings
from avrec.data.loaders import load_dataset
from avrec.eval import Experiment, FixedSplit
from avrec.models import create_model
from benchmarks import _provenance as provenance
from benchmarks._markdown import replace_block

RESULTS = Path(__file__).resolve().parent / "results"
EPSILONS = (0.5, 1.0, 2.0, 4.0, 8.0)
BOUNDS = (5, 20, 50)
DELTA = 1e-6
L2 = 300.0  # EASE's lambda in benchmarks.accuracy
DEV = "movielens-100k"


def _run(name: str, models: dict, stage: str) -> dict:
    settings = Settings()
    data = load_dataset(name, settings=settings)
    split = FixedSplit(Path(settings.data_dir) / "splits" / f"{name}.loo.tsv")
    exp = Experiment(
        split,
        models,
        ["ndcg", "hr"],
        [10],
        n_bootstrap=200,
        stage=stage,
        progress=lambda m: print(f"  {name} {stage} {m} done", flush=True),
    )
    res = exp.run(data)
    return {
        m: {
            "ndcg@10": res.value(m, "ndcg@10"),
            "hr@10": res.value(m, "hr@10"),
            "fit_s": res.meta["models"][m]["fit_seconds"],
            "privacy": res.meta["models"][m].get("privacy"),
        }
        for m in models
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="movielens-100k,microlens-50k")
    args = ap.parse_args()
    started = time.perf_counter()
    out: dict = {"benchmark": "privacy-training", "delta": DELTA, "l2": L2}
    # the bound, on the development dataset's validation stage at epsilon 8
    valid = _run(DEV, {f"dp {b}": create_model("ease", l2=L2, dp_epsilon=8.0, dp_delta=DELTA,
                                               dp_items_per_user=b, dp_seed=0)
                       for b in BOUNDS}, "valid")  # fmt: skip
    bound = max(BOUNDS, key=lambda b: (round(valid[f"dp {b}"]["ndcg@10"], 4), -b))
    out["choice"] = {"stage": "valid", "dataset": DEV, "epsilon": 8.0, "cells": valid,
                     "items_per_user": bound}  # fmt: skip
    print(f"chosen items_per_user {bound}", flush=True)
    out["datasets"] = {}
    for name in [x.strip() for x in args.dataset.split(",") if x.strip()]:
        models = {"ease": create_model("ease", l2=L2)}
        for e in EPSILONS:
            models[f"ease ε={e:g}"] = create_model(
                "ease", l2=L2, dp_epsilon=e, dp_delta=DELTA, dp_items_per_user=bound, dp_seed=0
            )
        out["datasets"][name] = _run(name, models, "test")
        for m, r in out["datasets"][name].items():
            print(f"{name} {m}: ndcg@10 {r['ndcg@10']:.4f} hr@10 {r['hr@10']:.4f}", flush=True)
    out.update(
        date=time.strftime("%Y-%m-%d"),
        commit=provenance.commit(("src", "benchmarks/privacy_training.py")),
        machine=provenance.machine(),
        run_s=time.perf_counter() - started,
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "privacy-training.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [
        f"Measured {out['date']} at `{out['commit']}` on {out['machine']} "
        f"(`python -m benchmarks.privacy_training`): EASE (lambda {L2:g}) from a user-level "
        f"DP Gram matrix, delta {DELTA:g}, each user bounded to {bound} items (chosen on "
        f"{DEV}'s validation stage at epsilon 8 from {', '.join(map(str, BOUNDS))}); test "
        "stage of the fixed leave-one-out split. NDCG@10 / HR@10, and NDCG@10 as a share of "
        "EASE without DP.",
        "",
        "| dataset | " + " | ".join(["no DP", *(f"ε {e:g}" for e in EPSILONS)]) + " |",
        "|---|" + "---|" * (len(EPSILONS) + 1),
    ]
    for name, res in out["datasets"].items():
        base = res["ease"]["ndcg@10"]
        cells = [f"{res['ease']['ndcg@10']:.4f} / {res['ease']['hr@10']:.4f}"]
        for e in EPSILONS:
            r = res[f"ease ε={e:g}"]
            cells.append(f"{r['ndcg@10']:.4f} / {r['hr@10']:.4f} ({r['ndcg@10'] / base:.0%})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    replace_block("privacy-training", lines, "### Differentially private training (EASE)")
    print(f"done in {out['run_s']:.0f}s")


if __name__ == "__main__":
    main()
