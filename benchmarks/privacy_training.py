"""What user-level differential privacy costs a trained model (issue 20): EASE from a
private Gram matrix, and SASRec trained with DP-SGD.

``EASE(dp_epsilon=...)`` (:mod:`avrec.privacy.training`) bounds each user to
``dp_items_per_user`` items and adds Gaussian noise calibrated by OpenDP to the Gram matrix,
then solves EASE as usual. ``SASRec(dp_epsilon=...)`` (:mod:`avrec.privacy.dpsgd`) trains
with DP-SGD (Opacus): one row per user, per-user clipping, Poisson sampling, the RDP
accountant, a fixed number of epochs (no early stopping: the accountant does not charge for
choosing weights on validation data). Measured on the fixed leave-one-out splits, NDCG@10
and HR@10 on the test stage, for epsilon in {0.5, 1, 2, 4, 8} at delta 1e-6, beside the
same model without DP (SASRec: ``benchmarks.accuracy``'s settings for the dataset, early
stopping included; the private one keeps its architecture). The free choices (EASE's
``dp_items_per_user``; SASRec's learning rate and epochs, and the batch size, dropout and
clipping bound held fixed, :data:`DP_FIXED`) are made on MovieLens-100K's validation stage
at epsilon 8, never on test, and used for both datasets (SASRec's epochs capped on
MicroLens-50k for cost, :data:`EPOCH_CAP`).

    python -m benchmarks.privacy_training [--dataset movielens-100k,microlens-50k]
                                          [--models ease,sasrec]

DP-SGD on 2 CPU cores takes minutes per epoch on MicroLens-50k (per-user gradients of a
19,220-item embedding); glibc returns those large buffers to the system after every step,
and ``MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=17179869184`` in the
environment keeps them, about a third faster.

Writes ``benchmarks/results/privacy-training.json`` (a run of one model keeps the other's
results) and the tables between the ``privacy-training`` and ``privacy-training-sasrec``
markers in BENCHMARKS.md.
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
from benchmarks.accuracy import PARAMS

RESULTS = Path(__file__).resolve().parent / "results"
EPSILONS = (0.5, 1.0, 2.0, 4.0, 8.0)
BOUNDS = (5, 20, 50)
DELTA = 1e-6
L2 = 300.0  # EASE's lambda in benchmarks.accuracy
DEV = "movielens-100k"
# DP-SGD SASRec's cells on the development dataset's validation stage at epsilon 8. An
# earlier look at that same stage (about ten cells) settled what stays fixed: larger batches
# (less noise per user) and no dropout (the noise regularises) beat SASRec's 128 and 0.2; the
# clipping bound is left at 1: with Adam, scaling it scales signal and noise alike once every
# user is clipped, and at 0.1 and 1 every result matched.
DP_FIXED = {"batch_size": 512, "dropout": 0.0, "dp_clip": 1.0}
SASREC_GRID = (
    {"lr": 5e-3, "dp_epochs": 10},
    {"lr": 1e-2, "dp_epochs": 10},
    {"lr": 5e-3, "dp_epochs": 30},
    {"lr": 1e-2, "dp_epochs": 30},
)
# for cost alone, fixed before any MicroLens-50k result: one DP-SGD epoch of its 50,000 users
# takes 8-18 minutes on 2 shared cores, and 3 epochs there are already 5 times the steps of
# 30 on MovieLens-100K's 943 users
EPOCH_CAP = {"microlens-50k": 3}
# what only the non-private SASRec uses: early stopping and its wall-clock budget
_NOT_UNDER_DP = ("time_budget_s", "eval_every", "patience", "epochs")


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


def _cell_name(cell: dict) -> str:
    return f"lr {cell['lr']:g} epochs {cell['dp_epochs']}"


def _dp_sasrec(dataset: str, epsilon: float, cell: dict):  # noqa: ANN202
    """SASRec with DP-SGD: the dataset's architecture (``max_len``) from benchmarks.accuracy,
    :data:`DP_FIXED`, the cell, epochs within :data:`EPOCH_CAP`."""
    base = {k: v for k, v in PARAMS[dataset]["sasrec"].items() if k not in _NOT_UNDER_DP}
    params = base | DP_FIXED | cell
    params["dp_epochs"] = min(params["dp_epochs"], EPOCH_CAP.get(dataset, params["dp_epochs"]))
    return create_model("sasrec", **params, dp_epsilon=epsilon, dp_delta=DELTA)


def _ease(datasets: list[str]) -> dict:
    out: dict = {"l2": L2}
    # the bound, on the development dataset's validation stage at epsilon 8
    valid = _run(DEV, {f"dp {b}": create_model("ease", l2=L2, dp_epsilon=8.0, dp_delta=DELTA,
                                               dp_items_per_user=b, dp_seed=0)
                       for b in BOUNDS}, "valid")  # fmt: skip
    bound = max(BOUNDS, key=lambda b: (round(valid[f"dp {b}"]["ndcg@10"], 4), -b))
    out["choice"] = {"stage": "valid", "dataset": DEV, "epsilon": 8.0, "cells": valid,
                     "items_per_user": bound}  # fmt: skip
    print(f"chosen items_per_user {bound}", flush=True)
    out["datasets"] = {}
    for name in datasets:
        models = {"ease": create_model("ease", l2=L2)}
        for e in EPSILONS:
            models[f"ease ε={e:g}"] = create_model(
                "ease", l2=L2, dp_epsilon=e, dp_delta=DELTA, dp_items_per_user=bound, dp_seed=0
            )
        out["datasets"][name] = _run(name, models, "test")
        for m, r in out["datasets"][name].items():
            print(f"{name} {m}: ndcg@10 {r['ndcg@10']:.4f} hr@10 {r['hr@10']:.4f}", flush=True)
    return out


def _sasrec(datasets: list[str]) -> dict:
    out: dict = {"grid": list(SASREC_GRID), "fixed": DP_FIXED, "epoch_cap": EPOCH_CAP}
    valid = _run(DEV, {_cell_name(c): _dp_sasrec(DEV, 8.0, c) for c in SASREC_GRID}, "valid")
    # ties (to 4 places) go to the cheaper cell: fewer epochs, then the earlier cell
    best = max(
        range(len(SASREC_GRID)),
        key=lambda i: (
            round(valid[_cell_name(SASREC_GRID[i])]["ndcg@10"], 4),
            -SASREC_GRID[i]["dp_epochs"],
            -i,
        ),
    )
    cell = SASREC_GRID[best]
    out["choice"] = {"stage": "valid", "dataset": DEV, "epsilon": 8.0, "cells": valid,
                     "chosen": cell}  # fmt: skip
    print(f"chosen DP-SGD cell {_cell_name(cell)}", flush=True)
    out["datasets"] = {}
    for name in datasets:
        models = {"sasrec": create_model("sasrec", **PARAMS[name]["sasrec"])}
        for e in EPSILONS:
            models[f"sasrec ε={e:g}"] = _dp_sasrec(name, e, cell)
        out["datasets"][name] = _run(name, models, "test")
        for m, r in out["datasets"][name].items():
            print(f"{name} {m}: ndcg@10 {r['ndcg@10']:.4f} hr@10 {r['hr@10']:.4f}", flush=True)
    return out


def _table(results: dict, base_name: str) -> list[str]:
    lines = [
        "| dataset | " + " | ".join(["no DP", *(f"ε {e:g}" for e in EPSILONS)]) + " |",
        "|---|" + "---|" * (len(EPSILONS) + 1),
    ]
    for name, res in results.items():
        base = res[base_name]["ndcg@10"]
        cells = [f"{base:.4f} / {res[base_name]['hr@10']:.4f}"]
        for e in EPSILONS:
            r = res[f"{base_name} ε={e:g}"]
            share = f"{r['ndcg@10'] / base:.0%}" if base > 0 else "n/a"
            cells.append(f"{r['ndcg@10']:.4f} / {r['hr@10']:.4f} ({share})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="movielens-100k,microlens-50k")
    ap.add_argument("--models", default="ease,sasrec", help="ease, sasrec or both")
    args = ap.parse_args()
    datasets = [x.strip() for x in args.dataset.split(",") if x.strip()]
    which = {x.strip() for x in args.models.split(",") if x.strip()}
    if not which or which - {"ease", "sasrec"}:
        ap.error(f"--models: ease and/or sasrec, got {args.models!r}")
    started = time.perf_counter()
    path = RESULTS / "privacy-training.json"
    out: dict = json.loads(path.read_text()) if path.exists() else {}
    out.update(benchmark="privacy-training", delta=DELTA)
    if "ease" in which:
        ease = _ease(datasets)
        out.update(l2=ease["l2"], choice=ease["choice"], datasets=ease["datasets"])
    if "sasrec" in which:
        out["sasrec"] = _sasrec(datasets)
    out.update(
        date=time.strftime("%Y-%m-%d"),
        commit=provenance.commit(("src", "benchmarks/privacy_training.py")),
        machine=provenance.machine(),
        run_s=time.perf_counter() - started,
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    where = f"Measured {out['date']} at `{out['commit']}` on {out['machine']}"
    if "ease" in which:
        bound = out["choice"]["items_per_user"]
        lines = [
            f"{where} (`python -m benchmarks.privacy_training`): EASE (lambda {L2:g}) from a "
            f"user-level DP Gram matrix, delta {DELTA:g}, each user bounded to {bound} items "
            f"(chosen on {DEV}'s validation stage at epsilon 8 from "
            f"{', '.join(map(str, BOUNDS))}); test stage of the fixed leave-one-out split. "
            "NDCG@10 / HR@10, and NDCG@10 as a share of EASE without DP.",
            "",
            *_table(out["datasets"], "ease"),
        ]
        replace_block("privacy-training", lines, "### Differentially private training (EASE)")
    if "sasrec" in which:
        cell = out["sasrec"]["choice"]["chosen"]
        caps = ", ".join(f"{e} on {n}" for n, e in EPOCH_CAP.items())
        lines = [
            f"{where} (`python -m benchmarks.privacy_training --models sasrec`): SASRec "
            f"trained with DP-SGD (Opacus: one row of the last max_len + 1 items per user, "
            f"per-user clipping, Poisson sampling, RDP accountant), delta {DELTA:g}, "
            f"{_cell_name(cell)} (epochs at most {caps}, for cost), expected batch "
            f"{DP_FIXED['batch_size']} users, dropout {DP_FIXED['dropout']:g}, clipping "
            f"bound {DP_FIXED['dp_clip']:g}; no early stopping; the cell chosen on {DEV}'s "
            f"validation stage at epsilon 8 from {len(SASREC_GRID)}. Beside SASRec without "
            "DP at benchmarks.accuracy's settings (early stopping on validation). Test stage "
            "of the fixed leave-one-out split. NDCG@10 / HR@10, and NDCG@10 as a share of "
            "SASRec without DP.",
            "",
            *_table(out["sasrec"]["datasets"], "sasrec"),
        ]
        replace_block(
            "privacy-training-sasrec", lines, "### Differentially private training (SASRec)"
        )
    print(f"done in {out['run_s']:.0f}s")


if __name__ == "__main__":
    main()
