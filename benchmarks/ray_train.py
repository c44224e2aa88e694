"""SASRec trained data-parallel with Ray Train against one process (issue #19).

The fixed leave-one-out split of a dataset (MicroLens-50k by default, the standard split file
in ``$AVREC_DATA_DIR/splits``), SASRec with the accuracy benchmark's settings for it and a
fixed number of epochs (``--epochs``; early stopping on the validation items as usual), fitted
twice in one run: in this process (torch on both cores), then on a Ray cluster of two nodes
with one CPU each on this machine (``engine="ray"``: two Ray Train workers, each half of every
batch, gradients averaged by DDP), once per seed in ``--seeds``, so the gap between the two
engines can be read against the gap between two seeds of the same engine. All are evaluated on
the test items the same way (full ranking, paired bootstrap): NDCG@10 and HR@10 with 95%
intervals, and whether each is significantly below the best.

    python -m benchmarks.ray_train [--dataset microlens-50k] [--epochs 8] [--seeds 0,1]

Writes ``benchmarks/results/ray-train.json`` and the table between the ``ray-train`` markers in
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks import _provenance as provenance
from benchmarks._markdown import replace_block
from benchmarks.accuracy import PARAMS

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="microlens-50k")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seeds", default="0,1")
    args = ap.parse_args()
    seeds = [int(x) for x in args.seeds.split(",")]
    import ray
    from ray.cluster_utils import Cluster

    from avrec.config import Settings
    from avrec.data.loaders import load_dataset
    from avrec.errors import DatasetNotFoundError
    from avrec.eval import Experiment, FixedSplit
    from avrec.models import create_model

    settings = Settings()
    if settings.data_dir is None:
        raise DatasetNotFoundError("set AVREC_DATA_DIR to the folder with the datasets and splits")
    data = load_dataset(args.dataset, settings=settings)
    params = {**PARAMS[args.dataset]["sasrec"], "epochs": args.epochs, "time_budget_s": None}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
        models = {}
        for seed in seeds:
            models[f"one process, seed {seed}"] = create_model("sasrec", **params, seed=seed)
            models[f"Ray Train, two workers, seed {seed}"] = create_model(
                "sasrec", **params, seed=seed, engine="ray", workers=2
            )
        res = Experiment(
            FixedSplit(Path(settings.data_dir) / "splits" / f"{args.dataset}.loo.tsv"),
            models,
            ["ndcg", "hr"],
            [10],
            n_bootstrap=1000,
            progress=lambda name: print(f"  {name} done", flush=True),
        ).run(data)
    finally:
        ray.shutdown()
        cluster.shutdown()
    rows = {}
    for name, info in res.meta["models"].items():
        t = res.table.filter(res.table["model"] == name)
        row = {"fit_s": round(info["fit_seconds"], 1)}
        for r in t.iter_rows(named=True):
            row[r["metric"]] = {
                "value": round(r["value"], 4),
                "ci": [round(r["ci_low"], 4), round(r["ci_high"], 4)],
                "significantly_below_best": bool(r["significant_vs_best"]),
                "p_vs_best": r["p_vs_best"],
            }
        rows[name] = row
        print(f"  {name}: {row}", flush=True)
    out = {
        "dataset": args.dataset,
        "params": params,
        "seeds": seeds,
        "runs": rows,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": provenance.commit(),
        "machine": provenance.machine(),
        "load_average_1min": provenance.load(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ray-train.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    lines = [
        f"Measured {out['date']} at commit `{out['commit']}` on {out['machine']} "
        f"(`python -m benchmarks.ray_train --dataset {args.dataset} --epochs {args.epochs} "
        f"--seeds {args.seeds}`): "
        "the standard leave-one-out split, SASRec with the accuracy table's settings and at "
        f"most {args.epochs} epochs, test items ranked against the whole catalogue; 95% "
        "bootstrap intervals; the Ray cluster is two nodes of one CPU each on this machine.",
        "",
        "| training | NDCG@10 (95% CI) | HR@10 (95% CI) | significantly below the best | fit s |",
        "|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        n, h = r["ndcg@10"], r["hr@10"]
        lines.append(
            f"| {name} | **{n['value']:.4f}** ({n['ci'][0]:.4f}-{n['ci'][1]:.4f}) | "
            f"{h['value']:.4f} ({h['ci'][0]:.4f}-{h['ci'][1]:.4f}) | "
            f"{'yes' if n['significantly_below_best'] else 'no'} | {r['fit_s']:.0f} |"
        )
    replace_block("ray-train", lines, "### SASRec on Ray Train (issue 19)")


if __name__ == "__main__":
    main()
