"""What differential privacy costs a released list (issue 20): the popular top 50.

For each dataset the exact list (items by how many users played them) is compared with the
list ``avrec release`` would publish (:mod:`avrec.privacy.release`), by overlap@50 (the
share of the exact top 50 in the released one), averaged over ``--draws`` releases per
setting, for both mechanisms:

- ``counts``: each user counted for at most ``items_per_user`` distinct items, a uniform
  sample of theirs, discrete Laplace noise from OpenDP at scale ``items_per_user /
  epsilon`` (pure DP), for each bound in ``BOUNDS``;
- ``top_k``: OpenDP's noisy top-k over every user's distinct items (no bound), zCDP
  converted to ``(epsilon, 1e-6)``.

The mechanism and ``items_per_user`` are chosen on MovieLens-100K (the development dataset
here) at epsilon 1; MicroLens-50k is then measured and reported beside it, as the test.
Epsilon is per release; with ``[privacy] release_budget_per_day`` 1 that is one release a
day at epsilon 1.

    python -m benchmarks.privacy [--draws 20]

Writes ``benchmarks/results/privacy-release.json``, a plot
``benchmarks/results/privacy-release.png`` and the table between the ``privacy-release``
markers in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from avrec.config import Settings
from avrec.data.loaders import load_dataset
from avrec.privacy.release import bounded_counts, noisy_counts, noisy_top_k
from benchmarks import _provenance as provenance
from benchmarks._markdown import replace_block

RESULTS = Path(__file__).resolve().parent / "results"
K = 50
EPSILONS = (0.5, 1.0, 2.0, 4.0, 8.0)
BOUNDS = (1, 2, 5, 10, 20, 50)
DEV, TEST = "movielens-100k", "microlens-50k"
DELTA = 1e-6  # a top_k release's (the [privacy] release_delta default)


def events_of(name: str):  # noqa: ANN201
    import polars as pl

    data = load_dataset(name, settings=Settings())
    return pl.DataFrame(
        {
            "user_id": data.user_index,
            "item_id": data.item_index,
            "ts": data.ts.astype(np.float64) + data.order * 1e-9,  # ties in file order
        }
    )


def top(items: list, counts: np.ndarray, k: int = K) -> set:
    order = np.lexsort((np.arange(len(counts)), -counts))[:k]
    return {items[i] for i in order}


def overlap(events, bound: int, eps: float, exact: set, draws: int) -> tuple[float, float]:  # noqa: ANN001
    out = []
    for d in range(draws):  # each release draws its own sample of each user's items
        items, counts = bounded_counts(events, bound, seed=d)
        noisy, _ = noisy_counts(counts, bound, eps)
        out.append(len(top(items, noisy) & exact) / K)
    return float(np.mean(out)), float(np.std(out))


def overlap_top_k(items: list, counts: np.ndarray, eps: float, exact: set, draws: int
                  ) -> tuple[float, float, float]:  # fmt: skip
    out, scale = [], 0.0
    for _ in range(draws):
        order, scale = noisy_top_k(counts, K, eps, DELTA)
        out.append(len({items[i] for i in order} & exact) / K)
    return float(np.mean(out)), float(np.std(out)), scale


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--draws", type=int, default=20)
    args = ap.parse_args()
    started = time.perf_counter()
    out: dict = {"benchmark": "privacy-release", "k": K, "draws": args.draws, "datasets": {}}
    for name in (DEV, TEST):
        ev = events_of(name)
        items, counts = bounded_counts(ev, None)
        exact = top(items, counts)
        res: dict = {"users": int(ev["user_id"].n_unique()), "events": ev.height, "cells": {}}
        for bound in BOUNDS:  # the test dataset's other bounds are shown, never chosen on
            for eps in EPSILONS:
                m, s = overlap(ev, bound, eps, exact, args.draws)
                res["cells"][f"{bound},{eps:g}"] = {"overlap": m, "std": s}
                print(f"{name} bound {bound} eps {eps:g}: overlap@50 {m:.3f} ± {s:.3f}", flush=True)
        res["top_k"] = {}
        for eps in EPSILONS:
            m, s, scale = overlap_top_k(items, counts, eps, exact, args.draws)
            res["top_k"][f"{eps:g}"] = {"overlap": m, "std": s, "scale": scale}
            print(f"{name} top_k eps {eps:g}: overlap@50 {m:.3f} ± {s:.3f} (scale {scale:.2f})",
                  flush=True)  # fmt: skip
        if name == DEV:
            at1 = {b: res["cells"][f"{b},1"]["overlap"] for b in BOUNDS}
            out["chosen_bound"] = max(BOUNDS, key=lambda b: (round(at1[b], 3), -b))
            top1 = res["top_k"]["1"]["overlap"]
            out["chosen_mechanism"] = "top_k" if top1 > at1[out["chosen_bound"]] else "counts"
            print(f"chosen: {out['chosen_mechanism']}; items_per_user {out['chosen_bound']}",
                  flush=True)  # fmt: skip
        out["datasets"][name] = res
    out.update(
        date=time.strftime("%Y-%m-%d"),
        commit=provenance.commit(("src", "benchmarks/privacy.py")),
        machine=provenance.machine(),
        run_s=time.perf_counter() - started,
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "privacy-release.json").write_text(json.dumps(out, indent=2) + "\n")
    _plot(out)
    _markdown(out)


def _plot(out: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    dev = out["datasets"][DEV]["cells"]
    for b in BOUNDS:
        ax.plot(EPSILONS, [dev[f"{b},{e:g}"]["overlap"] for e in EPSILONS], alpha=0.5,
                label=f"{DEV}, {b} items/user")  # fmt: skip
    b = out["chosen_bound"]
    test = out["datasets"][TEST]["cells"]
    ax.plot(EPSILONS, [test[f"{b},{e:g}"]["overlap"] for e in EPSILONS], "k-o",
            label=f"{TEST}, {b} items/user")  # fmt: skip
    for name, style in ((DEV, "b--s"), (TEST, "r--s")):
        top = out["datasets"][name]["top_k"]
        ax.plot(EPSILONS, [top[f"{e:g}"]["overlap"] for e in EPSILONS], style,
                label=f"{name}, noisy top-k")  # fmt: skip
    ax.axhline(0.8, color="grey", ls=":", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("epsilon per release")
    ax.set_ylabel("overlap@50 with the exact list")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(RESULTS / "privacy-release.png", dpi=110)


def _markdown(out: dict) -> None:
    b = out["chosen_bound"]
    lines = [
        f"Measured {out['date']} at `{out['commit']}` on {out['machine']} "
        f"(`python -m benchmarks.privacy`, {out['draws']} releases per cell; plot: "
        "`benchmarks/results/privacy-release.png`). Overlap@50 of the released popular list "
        "with the exact one (mean ± standard deviation). `counts`: each user bounded to "
        "N items, discrete Laplace, delta 0 (pure DP); `top_k`: OpenDP's noisy top-k over "
        f"every user's items, delta {DELTA:g}. Chosen on MovieLens-100K at epsilon 1: "
        f"**{out['chosen_mechanism']}** (the default `[privacy] release_mechanism`).",
        "",
        "| dataset | mechanism | items per user | "
        + " | ".join(f"ε {e:g}" for e in EPSILONS) + " |",
        "|---|---|---|" + "---|" * len(EPSILONS),
    ]  # fmt: skip
    for name, res in out["datasets"].items():
        cells = [res["top_k"][f"{e:g}"] for e in EPSILONS]
        lines.append(
            f"| {name} ({res['users']:,} users) | top_k | every item once | "
            + " | ".join(f"**{c['overlap']:.3f}** ± {c['std']:.3f}" for c in cells)
            + " |"
        )
        for bound in BOUNDS:
            cells = [res["cells"][f"{bound},{e:g}"] for e in EPSILONS]
            mark = " (chosen on this dataset)" if name == DEV and bound == b else ""
            lines.append(
                f"| {name} ({res['users']:,} users) | counts | {bound}{mark} | "
                + " | ".join(f"{c['overlap']:.3f} ± {c['std']:.3f}" for c in cells)
                + " |"
            )
    replace_block("privacy-release", lines, "## Privacy (issue 20)")


if __name__ == "__main__":
    main()
