"""Vector indexes at ten million items (issue #19): recall, latency, memory and open time.

Synthetic item vectors (64-d, unit length) drawn around 4,096 topic centres, in the way item
embeddings cluster by topic, at two spreads: ``clustered`` (noise 0.08 per coordinate: an item's
cosine to its topic about 0.84) and ``diffuse`` (0.15: about 0.64, neighbours inside a topic
as hard to find as in random data). ``VectorIndex("auto")`` chooses the kind for the
catalogue size and memory budget, calibrates ``nprobe`` on the catalogue's own vectors (its
development queries), and is saved to one file. Then, side by side on held-out queries drawn
from the same topics (never seen by the build or the calibration):

- recall@10 against exact search over all the items;
- the file's pages dropped from the page cache (``posix_fadvise``), the index opened
  memory-mapped: open seconds, the first query (cold), then p50/p99 of one query at a time
  through ``VectorIndex.search`` (the way a request searches);
- the index's size (what it takes in memory once every page was read) and the process's
  resident memory after the queries.

    python -m benchmarks.index_scale [--sizes 1000000,10000000] [--queries 1000]
        [--budgets 2048,512]

Clustered vectors at every size with the first budget; at the largest size also the second
budget (what product codes cost) and diffuse vectors (what harder data costs).
Writes ``benchmarks/results/index-scale.json`` and the table
between the ``index-scale`` markers in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import _provenance as provenance
from benchmarks._markdown import replace_block

RESULTS = Path(__file__).resolve().parent / "results"
DIM = 64
TOPICS = 4096
SPREADS = {"clustered": 0.08, "diffuse": 0.15}  # noise per coordinate (against a unit centre)


def _centres(seed: int = 0) -> np.ndarray:
    c = np.random.default_rng(seed).standard_normal((TOPICS, DIM)).astype(np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def vectors(n: int, seed: int, centres: np.ndarray, noise: float) -> np.ndarray:
    """``n`` unit vectors around the topic centres, made in slices (10M x 64 is 2.6 GB)."""
    out = np.empty((n, DIM), np.float32)
    rng = np.random.default_rng(seed)
    for s in range(0, n, 1_000_000):
        m = min(n, s + 1_000_000) - s
        x = centres[rng.integers(0, TOPICS, m)] + noise * rng.standard_normal(
            (m, DIM), dtype=np.float32
        )
        out[s : s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def _evict(path: Path) -> None:
    """Drop the file's pages from the page cache: the next open reads from disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def run(x: np.ndarray, q: np.ndarray, truth: np.ndarray, budget: float, folder: Path) -> dict:
    import psutil

    from avrec.retrieval import VectorIndex

    n = len(x)
    shown = {"at": 0.0}

    def progress(done: int, total: int) -> None:
        if time.perf_counter() - shown["at"] > 20 or done == total:
            print(f"    added {done:,} of {total:,}", flush=True)
            shown["at"] = time.perf_counter()

    t = time.perf_counter()
    idx = VectorIndex("auto", memory_mb=budget, progress=progress).build(x)
    build_s = time.perf_counter() - t
    kind, calib = idx.built_kind, dict(idx.calibration)
    path = folder / f"{n}-{kind}.faiss"
    idx.save(path)
    del idx
    gc.collect()
    _evict(path)
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    t = time.perf_counter()
    idx = VectorIndex.open(path, kind)
    open_s = time.perf_counter() - t
    t = time.perf_counter()
    first = idx.search(q[:1], 10)
    first_ms = (time.perf_counter() - t) * 1000
    times, found = [], []
    for row in q:
        t = time.perf_counter()
        res = idx.search(row[None], 10)
        times.append((time.perf_counter() - t) * 1000)
        found.append(res.indices[0])
    hits = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(truth, found, strict=True))
    out = {
        "items": n,
        "memory_budget_mb": budget,
        "kind": kind,
        "nlist": int(idx.index.nlist) if hasattr(idx.index, "nlist") else None,
        "nprobe": int(idx.index.nprobe) if hasattr(idx.index, "nprobe") else None,
        "calibration": calib,
        "build_s": round(build_s, 1),
        "index_mb": round(path.stat().st_size / 2**20, 1),
        "open_s": round(open_s, 4),
        "first_query_ms": round(first_ms, 2),
        "recall_at_10": round(hits / (10 * len(q)), 4),
        "p50_ms": round(float(np.percentile(times, 50)), 3),
        "p99_ms": round(float(np.percentile(times, 99)), 3),
        "resident_mb_after_queries": round((proc.memory_info().rss - rss0) / 2**20, 1),
        "first_result_ok": bool((first.indices >= 0).all()),
    }
    print(
        f"  {n:,} items, {budget:g} MB: {kind} nlist {out['nlist']} nprobe {out['nprobe']}: "
        f"built {out['build_s']} s, {out['index_mb']} MB, open {out['open_s']} s, "
        f"recall@10 {out['recall_at_10']}, p50 {out['p50_ms']} ms, p99 {out['p99_ms']} ms",
        flush=True,
    )
    del idx
    path.unlink()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--budgets", default="2048,512", help="MB; the second at the largest size")
    args = ap.parse_args()
    from avrec.retrieval.index import _exact_top

    sizes = [int(s) for s in args.sizes.split(",")]
    budgets = [float(b) for b in args.budgets.split(",")]
    centres = _centres()
    plan = [(n, "clustered", budgets if n == max(sizes) else budgets[:1]) for n in sizes]
    plan.append((max(sizes), "diffuse", budgets[:1]))
    rows = []
    with tempfile.TemporaryDirectory(prefix="avrec-index-") as tmp:
        for n, spread, these in plan:
            noise = SPREADS[spread]
            # held out: never in the catalogue, never seen by the calibration
            q = vectors(args.queries, seed=99, centres=centres, noise=noise)
            print(f"{n:,} {spread} items: generating, exact top 10 of {len(q)} queries ...",
                  flush=True)  # fmt: skip
            x = vectors(n, seed=n, centres=centres, noise=noise)
            t = time.perf_counter()
            _, truth = _exact_top(x, q, 10)
            exact_s = time.perf_counter() - t
            for budget in these:
                row = {"vectors": spread, **run(x, q, truth, budget, Path(tmp))}
                row["exact_ms_per_query"] = round(exact_s * 1000 / len(q), 2)
                rows.append(row)
            del x
            gc.collect()
    res = {
        "dim": DIM,
        "topics": TOPICS,
        "noise": SPREADS,
        "queries": args.queries,
        "runs": rows,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": provenance.commit(),
        "machine": provenance.machine(),
        "load_average_1min": provenance.load(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "index-scale.json").write_text(json.dumps(res, indent=2) + "\n")
    lines = [
        f"Measured {res['date']} at commit `{res['commit']}` on {res['machine']} "
        "(`python -m benchmarks.index_scale`): synthetic unit vectors, 64-d, around "
        f"{TOPICS:,} topics (clustered: cosine to the topic about 0.84; diffuse: 0.64); "
        f"{args.queries:,} held-out queries, one at a time; recall against exact "
        "search over every item; the file's pages dropped from the page cache before it is "
        "opened (memory-mapped).",
        "",
        "| items | vectors | budget | kind | nprobe (calibrated) | build s | index MB | open s | "
        "first query ms (cold) | recall@10 | p50 ms | p99 ms | exact ms/query |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        probes = f"{r['nprobe']} of {r['nlist']}" if r["nlist"] else "-"
        lines.append(
            f"| {r['items']:,} | {r['vectors']} | {r['memory_budget_mb']:g} MB | {r['kind']} | "
            f"{probes} | {r['build_s']:.0f} | {r['index_mb']:,.0f} | "
            f"{r['open_s']:.3f} | "
            f"{r['first_query_ms']:.1f} | **{r['recall_at_10']:.3f}** | {r['p50_ms']:.2f} | "
            f"**{r['p99_ms']:.2f}** | {r['exact_ms_per_query']:.1f} |"
        )
    replace_block("index-scale", lines, "### Vector indexes at ten million items (issue 19)")


if __name__ == "__main__":
    main()
