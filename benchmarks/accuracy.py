"""How accurate is each model on the standard protocol, and what does it cost to train?

Standard protocol (for comparison with published work): the fixed leave-one-out split files in
``$AVREC_DATA_DIR/splits/`` (by time for MovieLens-100K, by sequence order for MicroLens-50k),
full ranking over all items, all interactions as positives, the user's training and validation
items excluded at test time, ties counted against the target, K = 10 and 20.

    python -m benchmarks.accuracy --dataset movielens-100k
    python -m benchmarks.accuracy --dataset microlens-50k --models pop,itemknn,ease

Writes ``benchmarks/results/accuracy-<dataset>.json`` and a report folder beside it, and
replaces this dataset's table in ``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import time
from pathlib import Path

import polars as pl

from avrec.config import Settings
from avrec.data.loaders import load_dataset
from avrec.errors import DatasetNotFoundError
from avrec.eval import Experiment, FixedSplit
from avrec.eval.report import write_report
from avrec.models import MODELS, create_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
METRICS = ["hr", "ndcg", "recall", "mrr", "auc", "coverage", "novelty"]
# Defaults per dataset: EASE's lambda from the reference protocol; SASRec within the training
# time the issue allows (5 minutes on MovieLens-100K, 15 on MicroLens-50k, evaluation aside).
PARAMS: dict[str, dict[str, dict]] = {
    "movielens-100k": {"ease": {"l2": 300.0}, "sasrec": {"time_budget_s": 270.0}},
    "microlens-50k": {
        "ease": {"l2": 300.0},
        "sasrec": {
            "time_budget_s": 780.0,
            "max_len": 20,
            "batch_size": 256,
            "eval_every": 1,
            "patience": 3,
        },
    },
}


def run(dataset: str, model_names: list[str], split_file: Path | None = None) -> pl.DataFrame:
    settings = Settings()
    if settings.data_dir is None:
        raise DatasetNotFoundError("set AVREC_DATA_DIR to the folder with the datasets and splits")
    split_file = split_file or Path(settings.data_dir) / "splits" / f"{dataset}.loo.tsv"
    t = time.perf_counter()
    data = load_dataset(dataset, settings=settings)
    print(f"{dataset}: {data} loaded in {time.perf_counter() - t:.1f}s")
    models = {n: create_model(n, **PARAMS.get(dataset, {}).get(n, {})) for n in model_names}
    full = Experiment(
        FixedSplit(split_file),
        models,
        METRICS,
        [10, 20],
        n_bootstrap=1000,
        progress=lambda name: print(f"  {name} done", flush=True),
    )
    full_res = full.run(data)
    for name, info in full_res.meta["models"].items():
        print(
            f"  {name:10s} ndcg@10 {full_res.value(name, 'ndcg@10'):.4f}  "
            f"hr@10 {full_res.value(name, 'hr@10'):.4f}  fit {info['fit_seconds']:.1f}s  "
            f"fit peak RSS {info['fit_peak_rss_mb']:,.0f} MB  "
            f"evaluate {info['eval_seconds']:.1f}s"
        )
    out_dir = RESULTS / f"accuracy-{dataset}"
    write_report(full_res, out_dir)
    full_res.meta["machine"] = _machine()
    full_res.to_json(RESULTS / f"accuracy-{dataset}.json")
    table = _summary(full_res)
    _update_markdown(dataset, table, full_res)
    print(f"wrote {RESULTS / f'accuracy-{dataset}.json'} and {out_dir}/report.html")
    return table


def _summary(res) -> pl.DataFrame:  # noqa: ANN001
    rows = []
    for name, info in res.meta["models"].items():

        def v(metric: str, name: str = name) -> float:
            return res.value(name, metric)

        sig = res.table.filter((pl.col("model") == name) & (pl.col("metric") == "ndcg@10"))
        rows.append(
            {
                "model": name,
                "ndcg@10": v("ndcg@10"),
                "hr@10": v("hr@10"),
                "ndcg@20": v("ndcg@20"),
                "hr@20": v("hr@20"),
                "coverage@10": v("coverage@10"),
                "novelty@10": v("novelty@10"),
                "fit_s": info["fit_seconds"],
                "eval_s": info["eval_seconds"],
                "peak_mb": info["fit_peak_rss_mb"],
                "best": bool(sig["is_best"][0]) if sig["is_best"][0] is not None else False,
                "ns": sig["significant_vs_best"][0] is False,
            }
        )
    return pl.DataFrame(rows)


def _machine() -> str:
    cpus = len(os.sched_getaffinity(0))
    return f"{platform.machine()}, {cpus} cores, Python {platform.python_version()}"


def _update_markdown(dataset: str, table: pl.DataFrame, res) -> None:  # noqa: ANN001
    lines = [
        f"<!-- accuracy:{dataset}:start -->",
        f"`python -m benchmarks.accuracy --dataset {dataset}` ({time.strftime('%Y-%m-%d')}, "
        f"{_machine()}); split `{Path(res.meta['protocol']['split']['file']).name}`, "
        f"{res.meta['dataset']['users']:,} users, {res.meta['dataset']['items']:,} items. "
        "Best NDCG@10 in bold; (ns) = not significantly below the best (paired bootstrap).",
        "",
        "| model | NDCG@10 | HR@10 | NDCG@20 | HR@20 | coverage@10 | novelty@10 | fit | "
        "evaluate | process peak RSS in fit |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table.iter_rows(named=True):
        nd = f"{r['ndcg@10']:.4f}"
        nd = f"**{nd}**" if r["best"] else nd + (" (ns)" if r["ns"] else "")
        lines.append(
            f"| {r['model']} | {nd} | {r['hr@10']:.4f} | {r['ndcg@20']:.4f} | {r['hr@20']:.4f} "
            f"| {r['coverage@10']:.3f} | {r['novelty@10']:.2f} | {r['fit_s']:.1f} s | "
            f"{r['eval_s']:.1f} s | {r['peak_mb']:,.0f} MB |"
        )
    lines.append(f"<!-- accuracy:{dataset}:end -->")
    block = "\n".join(lines)
    md_path = ROOT / "BENCHMARKS.md"
    text = md_path.read_text(encoding="utf-8")
    tag = re.escape(dataset)
    pattern = re.compile(rf"<!-- accuracy:{tag}:start -->.*?<!-- accuracy:{tag}:end -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + f"\n\n### {dataset}\n\n{block}\n"
    md_path.write_text(text, encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--dataset", default="movielens-100k", choices=["movielens-100k", "microlens-50k"]
    )
    ap.add_argument("--models", default=None, help="comma-separated (default: every model)")
    ap.add_argument(
        "--split-file",
        type=Path,
        default=None,
        help="user_id, valid_item, test_item TSV (default: the standard split)",
    )
    args = ap.parse_args()
    names = args.models.split(",") if args.models else sorted(MODELS)
    run(args.dataset, names, args.split_file)


if __name__ == "__main__":
    main()
