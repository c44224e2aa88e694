"""How long does one recommendation take? The whole pipeline, in process, per call.

One ``recommend_explained`` call per user (k = 10: candidates from every source, ranking
features, the LambdaMART ranker, re-ranking, explanations), p50 and p99 over users, and where
the time goes (retrieval, ranking, re-ranking, explaining), for:

- **real, ~20k items**: MicroLens-50k (19,220 micro-videos, 50,000 users), the default pipeline
  (EASE, Markov, ItemKNN, people, popular) plus trending and the ALS factors source;
- **synthetic, 1M items**: a million items with 64-d content vectors in 500 clusters, 100,000
  users with Zipf popularity inside their tastes; sources: ALS factors searched with HNSW,
  content neighbours and interests (one shared HNSW index), popular, trending, fresh.

It also times saving and loading each bundle, and runs a 100k-item synthetic catalogue too
(the bundle of a 100k catalogue should load in well under a second).

    python -m benchmarks.pipeline_latency [--items 100000,1000000] [--users 100000] [--no-real]

Writes ``benchmarks/results/pipeline-latency.json`` and the table between the
``pipeline-latency`` markers in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from avrec.config import Settings
from avrec.data.dataset import Dataset
from avrec.data.weighting import EventWeighting
from avrec.pipeline.pipeline import Pipeline, PipelineConfig, SourceConfig
from benchmarks._markdown import replace_block

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
STAGES = ("retrieval", "ranking", "reranking", "explaining")
DAY = 86400.0


def _machine() -> str:
    cores = len(os.sched_getaffinity(0))
    return f"{platform.machine()}, {cores} cores, Python {platform.python_version()}"


def synthetic(n_items: int, n_users: int, per_user: int = 20, dim: int = 64, seed: int = 0):
    """Items in clusters with content vectors that follow them; users with one to three
    tastes playing popular items of their clusters (and a tenth from anywhere)."""
    ev, cat, x = synthetic_frames(n_items, n_users, per_user, dim, seed)
    ds = Dataset.from_events(ev, cat, weighting=EventWeighting.binary())
    vec = np.zeros((ds.n_items, dim), np.float32)
    vec[:] = x[np.asarray(ds.items.ids, dtype=np.int64)]
    ds.set_item_features("fused", vec)
    return ds


def synthetic_frames(
    n_items: int, n_users: int, per_user: int = 20, dim: int = 64, seed: int = 0
) -> tuple[pl.DataFrame, pl.DataFrame, np.ndarray]:
    """:func:`synthetic`'s events, catalogue and item vectors (row = item id)."""
    rng = np.random.default_rng(seed)
    clusters = 500
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    cluster = rng.integers(0, clusters, n_items)
    x = centres[cluster] + rng.normal(0, 0.6 / np.sqrt(dim), (n_items, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    weight = 1.0 / np.power(rng.permutation(n_items) + 1.0, 0.8)  # Zipf popularity
    order = np.lexsort((-weight, cluster))
    starts = np.searchsorted(cluster[order], np.arange(clusters + 1))
    cum = np.zeros(n_items)
    for c in range(clusters):  # cumulative weights within each cluster
        lo, hi = starts[c], starts[c + 1]
        w = weight[order[lo:hi]]
        cum[lo:hi] = np.cumsum(w) / w.sum() if hi > lo else 0
    n_ev = n_users * per_user
    users = np.repeat(np.arange(n_users), per_user)
    tastes = rng.integers(0, clusters, (n_users, 3))
    k = rng.integers(1, 4, n_users)
    pick = tastes[users, rng.integers(0, 1 << 30, n_ev) % k[users]]
    u = rng.random(n_ev)
    pos = np.empty(n_ev, np.int64)
    for c in np.unique(pick):
        m = pick == c
        lo, hi = starts[c], starts[c + 1]
        pos[m] = lo + np.minimum(np.searchsorted(cum[lo:hi], u[m]), hi - lo - 1)
    items = order[pos]
    anywhere = rng.random(n_ev) < 0.1
    items[anywhere] = rng.choice(n_items, int(anywhere.sum()), p=weight / weight.sum())
    start = rng.uniform(0, 60 * DAY, n_users)
    ts = start[users] + np.tile(np.arange(per_user), n_users) * 600.0
    ev = pl.DataFrame(
        {
            "user_id": pl.Series(users).cast(pl.Utf8),
            "item_id": pl.Series(items).cast(pl.Utf8),
            "event": ["play"] * n_ev,
            "ts": ts,
        }
    )
    cat = pl.DataFrame(
        {
            "item_id": pl.Series(np.arange(n_items)).cast(pl.Utf8),
            "created_at": rng.uniform(-30 * DAY, 62 * DAY, n_items),
            "duration": rng.uniform(10, 600, n_items).round(),
        }
    )
    return ev, cat, x


def synthetic_config() -> PipelineConfig:
    return PipelineConfig(
        sources=[
            SourceConfig(kind="factors", n=100, params={"model": {"factors": 64, "iterations": 8}}),
            SourceConfig(kind="neighbours", n=50),
            SourceConfig(kind="interests", n=50),
            SourceConfig(kind="popular", n=30),
            SourceConfig(kind="trending", n=30),
            SourceConfig(kind="fresh", n=30),
        ]
    )


def real_config() -> PipelineConfig:
    cfg = PipelineConfig()
    extra = [
        SourceConfig(kind="trending", n=50),
        SourceConfig(kind="factors", n=100, params={"model": {"factors": 64}}),
    ]
    return cfg.model_copy(update={"sources": [*cfg.sources, *extra]})


def measure(pipe: Pipeline, ds: Dataset, n_users: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    users = ds.users.lookup(rng.choice(ds.n_users, min(n_users, ds.n_users), replace=False))
    users += [f"stranger-{i}" for i in range(max(1, n_users // 20))]  # the fallback path too
    pipe.recommend_explained(users[:10], k=10)  # warm-up
    total, stages = [], {s: [] for s in STAGES}
    for u in users:
        t: dict[str, float] = {}
        start = time.perf_counter()
        pipe.recommend_explained([u], k=10, timings=t)
        total.append((time.perf_counter() - start) * 1000)
        for s in STAGES:
            stages[s].append(t.get(s, 0.0) * 1000)
    out = {
        "calls": len(users),
        "p50_ms": float(np.percentile(total, 50)),
        "p99_ms": float(np.percentile(total, 99)),
        "mean_ms": float(np.mean(total)),
    }
    for s in STAGES:
        out[f"{s}_p50_ms"] = float(np.percentile(stages[s], 50))
        out[f"{s}_p99_ms"] = float(np.percentile(stages[s], 99))
        out[f"{s}_mean_ms"] = float(np.mean(stages[s]))
    return out


def recall(pipe: Pipeline, ds: Dataset, queries: int = 200) -> dict:
    """recall@10 of each approximate (HNSW/IVF) index against exact search, on the queries
    its source asks: item vectors for the content sources (the item itself left out), users'
    folded-in factors for the factors source."""
    from avrec.pipeline.sources import Request
    from avrec.retrieval import VectorIndex

    out = {}
    rng = np.random.default_rng(1)
    for src, _ in pipe.sources:
        index = getattr(src, "index", None)
        if index is None or index.built_kind == "exact" or src.name in out:
            continue
        x = index._x
        if src.kind == "factors":
            users = rng.choice(ds.n_users, queries, replace=False)
            ptr = ds.sequence_indptr
            reqs = [Request(int(u), ds.item_index[ptr[u] : ptr[u + 1]]) for u in users]
            q = src.user_vectors(reqs)
            truth = VectorIndex("exact").build(x).search(q, 10).indices
            got = index.search(q, 10).indices
        else:
            rows = rng.choice(len(x), queries, replace=False)
            q = x[rows]
            truth = VectorIndex("exact").build(x).search(q, 11).indices
            got = index.search(q, 11).indices
            truth = [t[t != r][:10] for t, r in zip(truth, rows, strict=True)]
            got = [g[g != r][:10] for g, r in zip(got, rows, strict=True)]
        hits = sum(len(set(a) & set(b)) for a, b in zip(truth, got, strict=True))
        out[src.name] = hits / (10 * queries)
    return out


def bundle_times(pipe: Pipeline) -> dict:
    from avrec.models import load_model

    tmp = Path(tempfile.mkdtemp(prefix="avrec-bundle-"))
    try:
        t = time.perf_counter()
        path = pipe.save(tmp / "v1")
        saved = time.perf_counter() - t
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        t = time.perf_counter()
        load_model(path)
        loaded = time.perf_counter() - t
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"save_s": saved, "load_s": loaded, "bytes": size}


def run_case(label: str, ds: Dataset, cfg: PipelineConfig, n_users: int) -> dict:
    print(
        f"{label}: {ds.n_items:,} items, {ds.n_users:,} users, {ds.n_events:,} events", flush=True
    )
    t = time.perf_counter()
    pipe = Pipeline(**cfg.model_dump()).fit(ds)
    fit = time.perf_counter() - t
    print(f"  fitted in {fit:.0f}s", flush=True)
    res = {
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "items": ds.n_items,
        "users": ds.n_users,
        "events": ds.n_events,
        "sources": [s.name for s, _ in pipe.sources],
        "fit_s": fit,
        "index_kinds": {
            s.name: s.index.built_kind for s, _ in pipe.sources if getattr(s, "index", None)
        },
        "latency": measure(pipe, ds, n_users),
        "recall@10": recall(pipe, ds),
    }
    lat = res["latency"]
    print(
        f"  p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms; "
        + ", ".join(f"{s} p50 {lat[f'{s}_p50_ms']:.2f}" for s in STAGES),
        flush=True,
    )
    res["bundle"] = bundle_times(pipe)
    del pipe
    print(f"  bundle: {res['bundle']}; recall@10 {res['recall@10']}", flush=True)
    return res


def update_markdown(res: dict) -> None:
    lines = [
        f"Measured on {res['machine']} with `python -m benchmarks.pipeline_latency`: "
        "one explained `recommend_explained(k=10)` call per user, in process, one thread of "
        f"work per call; {res['cases'][0]['latency']['calls']} calls per catalogue (5% of them "
        "unknown users).",
        "",
        "| Catalogue | Sources | p50 | p99 | retrieval p50 / p99 | ranking p50 / p99 | "
        "re-ranking p50 / p99 | explaining p50 / p99 | fit | bundle save / load | measured |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in res["cases"]:
        lat, b = case["latency"], case["bundle"]
        stages = " | ".join(
            f"{lat[f'{s}_p50_ms']:.2f} / {lat[f'{s}_p99_ms']:.2f} ms" for s in STAGES
        )
        lines.append(
            f"| {case['label']} ({case['items']:,} items) | {', '.join(case['sources'])} | "
            f"{lat['p50_ms']:.1f} ms | **{lat['p99_ms']:.1f} ms** | {stages} | "
            f"{case['fit_s']:.0f} s | {b['save_s']:.1f} s / {b['load_s']:.2f} s "
            f"({b['bytes'] / 1e6:.0f} MB) | {case.get('measured', res['date'])} |"
        )
    for case in res["cases"]:
        if case.get("recall@10"):
            lines.append("")
            lines.append(
                f"{case['label']} ({case['items']:,} items): approximate indexes "
                + ", ".join(f"{k} {case['index_kinds'][k]}" for k in case["recall@10"])
                + "; recall@10 against exact search (200 queries: item vectors, the item "
                "itself left out, for content; folded-in user factors for factors): "
                + ", ".join(f"{k} {v:.3f}" for k, v in case["recall@10"].items())
                + "."
            )
    replace_block("pipeline-latency", lines, "### Pipeline latency (issue 6)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--items", default="100000,1000000", help="synthetic catalogue sizes, comma-separated"
    )
    ap.add_argument("--users", type=int, default=100_000, help="users at the largest size")
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--no-real", action="store_true", help="skip the MicroLens-50k case")
    ap.add_argument(
        "--keep",
        action="store_true",
        help="keep the cases of the last results file that this run does not measure again",
    )
    args = ap.parse_args()
    out_path = RESULTS / "pipeline-latency.json"
    res = {"machine": _machine(), "date": time.strftime("%Y-%m-%d"), "cases": []}
    kept = []
    if args.keep and out_path.exists():
        kept = json.loads(out_path.read_text()).get("cases", [])
    if not args.no_real:
        if Settings().data_dir is None:
            raise SystemExit("set AVREC_DATA_DIR to ../shared/datasets (or pass --no-real)")
        from avrec.data.loaders import load_dataset

        ds = load_dataset("microlens-50k")
        res["cases"].append(
            {"label": "MicroLens-50k", **run_case("real", ds, real_config(), args.calls)}
        )
        del ds
        _write(out_path, res)
    sizes = [int(x) for x in str(args.items).split(",") if x.strip()]
    for n_items in sizes:
        t = time.perf_counter()
        users = max(1000, args.users * n_items // max(sizes))  # 20 events a user
        ds = synthetic(n_items, users)
        print(f"synthetic data in {time.perf_counter() - t:.0f}s", flush=True)
        res["cases"].append(
            {"label": "synthetic", **run_case("synthetic", ds, synthetic_config(), args.calls)}
        )
        del ds
        _write(out_path, res)
    done = {(c["label"], c["items"]) for c in res["cases"]}
    res["cases"] = [c for c in kept if (c["label"], c["items"]) not in done] + res["cases"]
    res["cases"].sort(key=lambda c: (c["label"] != "MicroLens-50k", c["items"]))
    _write(out_path, res)
    update_markdown(res)


def _write(path: Path, res: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
