"""Does the pipeline beat its own sources? Accuracy, coverage and latency on the standard protocol.

Every source of the pipeline is also evaluated alone as a model, on the same fixed leave-one-out
split (full ranking, history excluded), so the table answers whether merging and learning to rank
adds anything; the paired tests say whether the difference is significant. The pipeline's ranker
learns from the validation items (the split file's ``valid_item``) and, with ``ranker_holdout``,
from each user's last training events, its sources from training; its settings are the defaults,
chosen on validation data by ``benchmarks.choose_defaults``. AUC is over the full catalogue: the
items the pipeline did not propose rank below its candidates, tied (``avrec.eval.metrics``).
With ``--content DB`` (a content store from ``avrec analyze`` or ``benchmarks.content_quality``)
the content sources and features join, and ILD on content vectors is reported.

Latency: one ``recommend_explained`` call (candidates from every source, features, ranker,
re-ranking, explanations) per user, in process, p50 and p99 over users; the load average just
before it is recorded (above about 1.5 on two cores, other jobs were running and the latency is
inflated).

    python -m benchmarks.pipeline --dataset movielens-100k --sasrec-budget 270
    python -m benchmarks.pipeline --dataset microlens-50k --sasrec-budget 720 --sasrec-max-len 20
    python -m benchmarks.pipeline --content benchmarks/.cache/ml100k-content.db

Writes ``benchmarks/results/pipeline-<dataset>.json`` and the table between the
``pipeline:<dataset>`` markers in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from avrec.config import Settings
from avrec.data.loaders import load_dataset
from avrec.eval import Experiment, FixedSplit
from avrec.models import create_model
from avrec.pipeline.pipeline import Pipeline, PipelineConfig, SourceConfig
from benchmarks._markdown import replace_block
from benchmarks._provenance import commit, load, machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def run(
    dataset: str, content: Path | None, sasrec_budget: float | None, sasrec_max_len: int = 50
) -> dict:
    settings = Settings()
    data = load_dataset(dataset, settings=settings)
    cfg = PipelineConfig()
    metrics = ["ndcg@10", "hr@10", "auc", "coverage@10", "novelty@10"]
    if content is not None:
        from avrec.content.store import ContentStore

        with ContentStore(content) as cs:
            cs.attach(data, ["fused"])
        cfg = cfg.with_content_sources()
        metrics.append("ild@10")
    sources = list(cfg.sources)
    if sasrec_budget:
        sources.insert(
            0,
            SourceConfig(
                kind="model",
                name="sasrec",
                params={
                    "model": "sasrec",
                    "time_budget_s": sasrec_budget,
                    "max_len": sasrec_max_len,
                },
            ),
        )
    cfg = cfg.model_copy(update={"sources": sources})
    models = {}
    for sc in cfg.sources:
        if sc.kind == "model":
            models[sc.name or sc.params["model"]] = create_model(
                sc.params["model"], **{k: v for k, v in sc.params.items() if k != "model"}
            )
    models["pipeline"] = Pipeline(**cfg.model_dump())
    split_file = Path(settings.data_dir) / "splits" / f"{dataset}.loo.tsv"  # type: ignore[arg-type]
    t = time.perf_counter()
    res = Experiment(
        FixedSplit(split_file),
        models,
        metrics,
        n_bootstrap=1000,
        progress=lambda name: print(f"  {name} done ({time.perf_counter() - t:.0f}s)", flush=True),
    ).run(data)
    rows = {(r["model"], r["metric"]): r for r in res.records()}
    comps = res.comparisons.to_dicts() if hasattr(res, "comparisons") else []
    pipe: Pipeline = models["pipeline"]  # type: ignore[assignment]
    out = {
        "dataset": dataset,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "commit": commit(),
        "protocol": "fixed leave-one-out split file, full ranking, history excluded",
        "sources": [s.name or s.kind for s in cfg.sources],
        "content": str(content) if content else None,
        "results": {
            name: {m: rows[name, m]["value"] for m in res.table["metric"].unique().to_list()}
            for name in models
        },
        "ci": {
            name: [rows[name, "ndcg@10"]["ci_low"], rows[name, "ndcg@10"]["ci_high"]]
            for name in models
        },
        "comparisons": comps,
        "ranker_importances": pipe.ranker.importances() if pipe.ranker else {},
        "ranker_recall": getattr(pipe, "ranker_recall", None),
        "ranker_groups": getattr(pipe.ranker, "groups", None),
        "ranker_trees": getattr(pipe.ranker, "best_iteration", None),
        "ranker_holdout": cfg.ranker_holdout,
        "ranker": cfg.ranker,
        "ranker_min_history": getattr(pipe, "ranker_min_history", None),
        "fit_seconds": {name: m.fit_seconds for name, m in models.items()},
    }
    for name in models:
        print(f"  {name:10s} ndcg@10 {rows[name, 'ndcg@10']['value']:.4f}")
    out["load_before_latency"] = load()
    out["latency"] = latency(pipe, data)
    print(f"  latency per call: {out['latency']}")
    return out


def latency(pipe: Pipeline, data, n_users: int = 300) -> dict:  # noqa: ANN001
    users = data.users.lookup(np.arange(min(n_users, data.n_users)))
    pipe.recommend_explained(users[:5], k=10)  # warm-up
    times = []
    for u in users:
        t = time.perf_counter()
        pipe.recommend_explained([u], k=10)
        times.append((time.perf_counter() - t) * 1000)
    return {
        "users": len(users),
        "p50_ms": float(np.percentile(times, 50)),
        "p99_ms": float(np.percentile(times, 99)),
    }


def update_markdown(res: dict) -> None:
    r = res["results"]
    cols = [
        c
        for c in ("ndcg@10", "hr@10", "auc", "coverage@10", "novelty@10", "ild@10")
        if c in r["pipeline"]
    ]
    best_single = max((n for n in r if n != "pipeline"), key=lambda n: r[n]["ndcg@10"])
    sig = next(
        (
            c
            for c in res["comparisons"]
            if c.get("metric") == "ndcg@10" and best_single in (c.get("model"), c.get("best"))
        ),
        None,
    )
    lines = [
        f"Measured {res['date']} at commit {res.get('commit', 'unknown')} on {res['machine']} "
        "with `python -m benchmarks.pipeline "
        f"--dataset {res['dataset']}{res.get('args', '')}`"
        f"{' --content ...' if res['content'] else ''}: "
        f"{res['protocol']}. Sources: {', '.join(res['sources'])}. Ranker: "
        f"{res['ranker']['num_leaves']} leaves, holdout {res['ranker_holdout']}, "
        f"{res['ranker_trees']} trees from {res['ranker_groups']} requests (the candidates "
        f"hold a target for {res['ranker_recall']:.1%} of them). AUC: over the full catalogue, "
        "items the pipeline did not propose ranked below its candidates, tied.",
        "",
        "| Model | " + " | ".join(cols) + " | NDCG@10 95% CI |",
        "|---|" + "---|" * (len(cols) + 1),
    ]
    for name in r:
        ci = res["ci"][name]
        lines.append(
            f"| {'**pipeline**' if name == 'pipeline' else name} | "
            + " | ".join(f"{r[name][c]:.4f}" for c in cols)
            + f" | [{ci[0]:.4f}, {ci[1]:.4f}] |"
        )
    if sig:
        lines += [
            "",
            f"Pipeline vs the best single source ({best_single}), NDCG@10: difference "
            f"{sig.get('diff', float('nan')):+.4f}, paired bootstrap p = "
            f"{sig.get('p_value', float('nan')):.3f} "
            f"({'significant' if sig.get('significant') else 'not significant'}).",
        ]
    lat = res["latency"]
    busy = res.get("load_before_latency", 0.0)
    lines += [
        "",
        f"One explained recommendation call in process: p50 {lat['p50_ms']:.1f} ms, "
        f"p99 {lat['p99_ms']:.1f} ms ({lat['users']} users; load average {busy:.1f} just "
        "before"
        + (
            ", other jobs were using the cores: these latencies are inflated)."
            if busy > 1.5
            else ")."
        ),
    ]
    tag = f"pipeline:{res['dataset']}"
    replace_block(tag, lines, f"### Pipeline on {res['dataset']} (issue 6)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="movielens-100k")
    ap.add_argument("--content", type=Path, default=None)
    ap.add_argument("--sasrec-budget", type=float, default=None, help="add SASRec (seconds)")
    ap.add_argument("--sasrec-max-len", type=int, default=50, help="SASRec's history length")
    args = ap.parse_args()
    if Settings().data_dir is None:
        raise SystemExit("set AVREC_DATA_DIR to ../shared/datasets")
    res = run(args.dataset, args.content, args.sasrec_budget, args.sasrec_max_len)
    if args.sasrec_budget:
        res["args"] = f" --sasrec-budget {args.sasrec_budget:g}" + (
            f" --sasrec-max-len {args.sasrec_max_len}" if args.sasrec_max_len != 50 else ""
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"pipeline-{args.dataset}.json").write_text(json.dumps(res, indent=2, default=str))
    update_markdown(res)


if __name__ == "__main__":
    main()
