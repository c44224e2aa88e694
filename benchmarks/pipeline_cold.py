"""Cold start through the whole pipeline, on MovieLens-100K with its posters, plots and people.

1. **New items**: a seeded 20% of the movies held out of training entirely (``ColdItemSplit``,
   seed 0, as in ``benchmarks.content_quality``). The pipeline (the default sources plus the
   content sources ``neighbours`` and ``interests`` and the content-to-ALS projection as a
   model source) against popularity and the content models alone; NDCG@10 ranked among the
   held-out movies (the usual cold-start protocol) and among all movies.
2. **New users**: a seeded 20% of the users held out of training (``ColdUserSplit``). Each is
   served as a stranger whose session has had 0, 1, 3 or 5 events (their first, in time
   order); the target is the next one. NDCG@10 of the pipeline against popularity and EASE
   folded in from the same events, over the held-out users with at least 6 events.

The content vectors come from the content-quality cache (``benchmarks/.cache``), analysed on
the first run (about 4.5 minutes).

    python -m benchmarks.pipeline_cold

Writes ``benchmarks/results/pipeline-cold.json`` and the tables between the ``pipeline-cold``
markers in BENCHMARKS.md.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from avrec.config import Settings
from avrec.data.loaders import load_dataset
from avrec.eval import ColdItemSplit, ColdUserSplit
from avrec.eval.stats import bootstrap_ci, paired_test
from avrec.models import create_model
from avrec.models.base import UserBatch, mask_rows
from avrec.pipeline.pipeline import Pipeline, PipelineConfig, SourceConfig
from benchmarks._markdown import replace_block
from benchmarks._provenance import commit, machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
EVENTS = (0, 1, 3, 5)


def pipeline_config() -> PipelineConfig:
    cfg = PipelineConfig().with_content_sources()
    extra = SourceConfig(
        kind="model",
        name="projection",
        n=100,
        params={"model": "content", "feature": "fused", "mode": "projection"},
    )
    return cfg.model_copy(update={"sources": [*cfg.sources, extra]})


def cold_items(data) -> dict:  # noqa: ANN001
    split = ColdItemSplit(fraction=0.2, seed=0).split(data)
    cold = np.diff(split.train.binary().tocsc().indptr) == 0
    models = {
        "pop": create_model("pop"),
        "content (fused, profile)": create_model("content", feature="fused"),
        "content (projection to ALS)": create_model("content", feature="fused", mode="projection"),
        "pipeline": Pipeline(**pipeline_config().model_dump()),
    }
    from benchmarks.content_quality import cold_item_results

    return cold_item_results(split, models, cold)


def _ndcg_at_10(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    t = scores[np.arange(len(targets)), targets]
    rank = (scores >= t[:, None]).sum(axis=1)  # ties count against the target
    return np.where(np.isfinite(t) & (rank <= 10), 1.0 / np.log2(rank + 1), 0.0)


def prefix_ndcg(model, data, users: np.ndarray, ptr: np.ndarray, e: int) -> np.ndarray:  # noqa: ANN001
    """NDCG@10 per user of ``model`` serving each of ``users`` as a stranger after their first
    ``e`` events (``ptr``: where each user's events start, in time order); the target is the
    next event, the request comes just before it (time-aware parts see nothing after it)."""
    seqs = [data.item_index[ptr[u] : ptr[u] + e] for u in users]
    times = [data.ts[ptr[u] : ptr[u] + e] for u in users]
    targets = np.asarray([data.item_index[ptr[u] + e] for u in users])
    rows = np.repeat(np.arange(len(users)), e)
    hist = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, np.concatenate(seqs) if e else rows)),
        shape=(len(users), data.n_items),
    )
    hist.data[:] = 1.0
    at = np.asarray([data.ts[ptr[u] + e] - 1.0 for u in users])
    batch = UserBatch(np.full(len(users), -1), hist, seqs, times, at)
    scores = np.array(model._score_batch(batch), np.float32, copy=True)
    mask_rows(scores, hist)
    return _ndcg_at_10(scores, targets)


def cold_users(data) -> dict:  # noqa: ANN001
    split = ColdUserSplit(fraction=0.2, seed=0).split(data)
    held = split.masks["valid"] | split.masks["test"]
    users = np.unique(data.user_index[held])
    ptr = data.sequence_indptr
    users = users[np.diff(ptr)[users] > max(EVENTS)]
    models = {
        "pop": create_model("pop"),
        "ease": create_model("ease", l2=300.0),
        "pipeline": Pipeline(**PipelineConfig().model_dump()),
    }
    for m in models.values():
        m.fit(split.train)
    pipe = models["pipeline"]
    out: dict = {
        "users": int(len(users)),
        "events": list(EVENTS),
        "ndcg@10": {},
        "ci": {},
        # requests shorter than this are fused, not ranked by the ranker
        "ranker_min_history": getattr(pipe, "ranker_min_history", None),
        "ranker": pipe.ranker is not None,  # type: ignore[attr-defined]
    }
    per: dict[str, dict[int, np.ndarray]] = {name: {} for name in models}
    for e in EVENTS:
        for name, m in models.items():
            per[name][e] = prefix_ndcg(m, data, users, ptr, e)
    for name in models:
        out["ndcg@10"][name] = {e: float(per[name][e].mean()) for e in EVENTS}
        out["ci"][name] = {e: list(bootstrap_ci(per[name][e], n_boot=1000)[1:]) for e in EVENTS}
        print(
            f"  cold users {name:10s} "
            + "  ".join(f"{e} events {per[name][e].mean():.4f}" for e in EVENTS),
            flush=True,
        )
    out["pipeline_vs_pop"] = {
        e: paired_test(per["pipeline"][e], per["pop"][e], n_boot=2000) for e in EVENTS
    }
    return out


def update_markdown(res: dict) -> None:
    ci = res["cold_items"]
    a, b = ci["among cold items"], ci["among all items"]
    lines = [
        f"Measured {res['date']} at commit {res.get('commit', 'unknown')} on {res['machine']} "
        "with `python -m benchmarks.pipeline_cold` "
        "(MovieLens-100K; posters, titles, IMDb plots and people analysed; genres visible to the "
        "people source).",
        "",
        f"New items: {ci['cold_items']} movies held out of training (seed 0). NDCG@10 / HR@10:",
        "",
        "| Model | among the cold movies | among all movies |",
        "|---|---|---|",
    ]
    for name in [k for k in a if k != "protocol"]:
        lines.append(
            f"| {name} | {a[name]['ndcg@10']['value']:.4f} / {a[name]['hr@10']['value']:.4f} | "
            f"{b[name]['ndcg@10']['value']:.4f} / {b[name]['hr@10']['value']:.4f} |"
        )
    cu = res["cold_users"]
    lines += [
        "",
        f"New users: {cu['users']} users held out of training (seed 0, at least "
        f"{max(EVENTS) + 1} events), served as strangers after their first events of the "
        "session; the target is the next event. The pipeline's ranker ranks requests of at "
        f"least {cu.get('ranker_min_history')} events, shorter ones are fused. NDCG@10:",
        "",
        "| Model | " + " | ".join(f"after {e} events" for e in cu["events"]) + " |",
        "|---|" + "---|" * len(cu["events"]),
    ]
    for name, vals in cu["ndcg@10"].items():
        lines.append(f"| {name} | " + " | ".join(f"{vals[e]:.4f}" for e in cu["events"]) + " |")
    pv = cu["pipeline_vs_pop"]
    lines += [
        "",
        "Pipeline vs popularity (paired bootstrap p): "
        + ", ".join(f"{e} events p = {pv[e]['p_value']:.3f}" for e in cu["events"])
        + ".",
    ]
    replace_block("pipeline-cold", lines, "### Cold start through the pipeline (issue 6)")


def main() -> None:
    if Settings().data_dir is None:
        raise SystemExit("set AVREC_DATA_DIR to ../shared/datasets")
    from benchmarks.content_quality import analyse

    store, _, _, analysis = analyse(ocr=False)
    data = load_dataset("movielens-100k")
    store.attach(data, ["fused"])
    store.close()
    t = time.perf_counter()
    res = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "commit": commit(),
        "analysis_seconds": analysis.get("seconds"),
        "cold_items": cold_items(data),
        "cold_users": cold_users(data),
    }
    res["seconds"] = time.perf_counter() - t
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pipeline-cold.json").write_text(json.dumps(res, indent=2, default=str))
    update_markdown(res)


if __name__ == "__main__":
    main()
