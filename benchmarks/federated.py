"""Federated MF against centralised ALS (issue 20), on MovieLens-100K's fixed leave-one-out
split: NDCG@10 against rounds, bytes per client per round, wall time.

- **Centralised ALS**: :class:`avrec.models.ALS` with its defaults (64 factors, 15
  iterations), the reference.
- **Federated MF** (:mod:`avrec.privacy.federated`): the same objective, 943 clients, one per
  user. The server's damping (``learning_rate``) is chosen on the validation stage from
  ``LRS`` with the in-process engine (the same math, ``tests/privacy/test_federated.py``
  checks both give the same factors); the reported runs use the Flower engine (a Flower
  simulation on a local Ray cluster, one SuperNode per user). The round reported is the one
  with the best validation NDCG@10; the last round is given beside it.
- **Partial participation**: a Poisson sample of 20% of the clients per round.
- **DP-FedAvg**: the 20% sample, each update clipped, Gaussian noise on the sum calibrated
  by Opacus's RDP accountant for epsilon in ``EPSILONS`` over the run's rounds (delta 1e-6);
  the clip is chosen on the validation stage at epsilon 8. Under DP the last round is
  reported (choosing a round on validation data would be a data-dependent choice the
  accountant does not count).

    python -m benchmarks.federated [--rounds 20] [--sampled-rounds 40]

Writes ``benchmarks/results/federated.json``, ``federated.png`` and the block between the
``federated`` markers in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from avrec.config import Settings
from avrec.data.loaders import load_dataset
from avrec.eval import FixedSplit
from avrec.eval.evaluate import evaluate_model, metric_context
from avrec.eval.metrics import parse_metrics
from avrec.models import create_model
from benchmarks import _provenance as provenance
from benchmarks._markdown import replace_block

RESULTS = Path(__file__).resolve().parent / "results"
DATASET = "movielens-100k"
LRS = (0.5, 1.0)
CLIPS = (5.0, 50.0)
EPSILONS = (1.0, 8.0)
DELTA = 1e-6
SAMPLED = 0.2


class _Scorer:
    """NDCG@10 and HR@10 on both stages of the split for a model's current parameters."""

    def __init__(self, split) -> None:  # noqa: ANN001
        self.split = split
        self.ctx = metric_context(split)
        self.metrics = parse_metrics(["ndcg@10", "hr@10"], [10])

    def __call__(self, model) -> dict[str, float]:  # noqa: ANN001
        out = {}
        for stage in ("valid", "test"):
            ev = evaluate_model(model, self.split, self.metrics, stage, ctx=self.ctx)
            for m in ("ndcg@10", "hr@10"):
                v, w = ev.per_user[m], ev.weights[m]
                ok = ~np.isnan(v)
                out[f"{stage} {m}"] = float((v[ok] * w[ok]).sum() / w[ok].sum())
        return out


def _federated(split, score: _Scorer, keep: list | None = None, **params) -> dict:  # noqa: ANN001, ANN003
    """One federated run, scored after every round (``keep``: gets the last factors)."""
    model = create_model("fedmf", **params)
    curve: list[dict] = []

    def on_round(r: int, y: np.ndarray, entry: dict) -> None:
        if keep is not None:
            keep[:] = [y.copy()]
        model.item_factors = y
        model._outer = None
        curve.append({**entry, **score(model)})
        print(f"  round {r}: valid ndcg@10 {curve[-1]['valid ndcg@10']:.4f}, test "
              f"{curve[-1]['test ndcg@10']:.4f}, {entry['seconds']:.1f} s", flush=True)  # fmt: skip

    model.on_round = on_round
    started = time.perf_counter()
    model.fit(split.train)
    wall = time.perf_counter() - started
    best = max(curve, key=lambda c: c["valid ndcg@10"])
    return {
        "params": {k: v for k, v in params.items()},
        "curve": curve,
        "best_round": best["round"],
        "best": best,
        "last": curve[-1],
        "wall_s": wall,
        "privacy": getattr(model, "privacy", None),
    }


def setup() -> tuple:
    """The dataset's fixed split and its scorer (avrec's own logs quietened)."""
    logging.getLogger("avrec").setLevel(logging.WARNING)
    settings = Settings()
    data = load_dataset(DATASET, settings=settings)
    split = FixedSplit(Path(settings.data_dir) / "splits" / f"{DATASET}.loo.tsv").split(data)
    return split, _Scorer(split)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--sampled-rounds", type=int, default=40)
    args = ap.parse_args()
    started = time.perf_counter()
    split, score = setup()
    out: dict = {"benchmark": "federated", "dataset": DATASET, "delta": DELTA}

    als = create_model("als")
    t = time.perf_counter()
    als.fit(split.train)
    out["als"] = {"fit_s": time.perf_counter() - t, **score(als)}
    print(f"ALS: {out['als']}", flush=True)

    common = {"rounds": args.rounds}
    choice = {}
    for lr in LRS:
        print(f"choosing the damping: lr {lr} (in-process)", flush=True)
        choice[lr] = _federated(split, score, engine="inprocess", learning_rate=lr, **common)
    lr = max(LRS, key=lambda v: (round(choice[v]["best"]["valid ndcg@10"], 4), v))
    out["choice"] = {"stage": "valid", "learning_rate": lr, "cells": choice}
    print(f"chosen learning_rate {lr}; the Flower run", flush=True)
    runs = {"all clients": _federated(split, score, engine="flower", learning_rate=lr, **common)}

    sampled = {"rounds": args.sampled_rounds, "fraction": SAMPLED, "learning_rate": lr}
    print(f"{SAMPLED:.0%} of the clients per round (Flower)", flush=True)
    runs[f"{SAMPLED:.0%} per round"] = _federated(split, score, engine="flower", **sampled)
    clip_cells = {}
    for clip in CLIPS:
        print(f"choosing the clip: {clip} at epsilon 8 (in-process)", flush=True)
        clip_cells[clip] = _federated(split, score, engine="inprocess", dp_epsilon=8.0,
                                      dp_delta=DELTA, dp_clip=clip, **sampled)  # fmt: skip
    clip = max(CLIPS, key=lambda v: round(clip_cells[v]["last"]["valid ndcg@10"], 4))
    out["clip_choice"] = {"stage": "valid", "epsilon": 8.0, "clip": clip, "cells": clip_cells}
    for eps in EPSILONS:
        print(f"DP-FedAvg epsilon {eps:g}, clip {clip:g} (Flower)", flush=True)
        runs[f"DP ε={eps:g}"] = _federated(split, score, engine="flower", dp_epsilon=eps,
                                           dp_delta=DELTA, dp_clip=clip, **sampled)  # fmt: skip
    out["runs"] = runs
    out.update(
        date=time.strftime("%Y-%m-%d"),
        commit=provenance.commit(("src", "benchmarks/federated.py")),
        machine=provenance.machine(),
        run_s=time.perf_counter() - started,
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "federated.json").write_text(json.dumps(out, indent=2, default=float) + "\n")
    _plot(out)
    _markdown(out)
    print(f"done in {out['run_s']:.0f}s")


def _plot(out: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for name, run in out["runs"].items():
        rounds = [c["round"] for c in run["curve"]]
        ax.plot(rounds, [c["test ndcg@10"] for c in run["curve"]], label=f"federated, {name}")
    ax.axhline(out["als"]["test ndcg@10"], color="k", ls="--", lw=1, label="centralised ALS")
    ax.axhline(0.95 * out["als"]["test ndcg@10"], color="grey", ls=":", lw=1, label="95% of ALS")
    ax.set_xlabel("round")
    ax.set_ylabel(f"test NDCG@10 ({out['dataset']})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "federated.png", dpi=110)


def _markdown(out: dict) -> None:
    als = out["als"]
    base = als["test ndcg@10"]
    lines = [
        f"Measured {out['date']} at `{out['commit']}` on {out['machine']} "
        f"(`python -m benchmarks.federated`; plot `benchmarks/results/federated.png`). "
        f"{out['dataset']}, fixed leave-one-out split, test stage; one client per user "
        f"(943). The server's damping ({out['choice']['learning_rate']:g}) was chosen on the "
        "validation stage, as was each run's reported round (its best validation NDCG@10), "
        "except under DP, where the last round is reported. Bytes are one client's, each way, "
        "per round; wall time is the whole training (Flower simulation on a local Ray "
        "cluster, 2 client actors).",
        "",
        "| training | rounds (reported / run) | NDCG@10 | HR@10 | share of ALS | "
        "last round NDCG@10 | down / up per client per round | wall time |",
        "|---|---|---|---|---|---|---|---|",
        f"| centralised ALS | 15 iterations | {base:.4f} | {als['test hr@10']:.4f} | 100% | "
        f"| | {als['fit_s']:.1f} s |",
    ]
    for name, run in out["runs"].items():
        dp = run["privacy"] is not None
        rep = run["last"] if dp else run["best"]
        first = run["curve"][0]
        n = len(run["curve"])
        lines.append(
            f"| federated, {name} | {rep['round']} / {n} | {rep['test ndcg@10']:.4f} | "
            f"{rep['test hr@10']:.4f} | {rep['test ndcg@10'] / base:.0%} | "
            f"{run['last']['test ndcg@10']:.4f} | {first['bytes_down'] / 1e3:.0f} kB / "
            f"{first['bytes_up'] / 1e3:.0f} kB | {run['wall_s']:.0f} s |"
        )
    clip = out["clip_choice"]
    lines += [
        "",
        f"DP-FedAvg: delta {out['delta']:g}, a Poisson sample of {SAMPLED:.0%} of the clients "
        f"per round, each update clipped to L2 norm {clip['clip']:g} (chosen on the "
        f"validation stage at epsilon 8 from {', '.join(f'{c:g}' for c in CLIPS)}), noise "
        "multipliers "
        + ", ".join(
            f"{run['privacy']['noise_multiplier']:.2f} (ε {run['privacy']['epsilon']:.2f})"
            for run in out["runs"].values()
            if run["privacy"]
        )
        + ".",
    ]
    replace_block("federated", lines, "### Federated MF against centralised ALS")


if __name__ == "__main__":
    main()
