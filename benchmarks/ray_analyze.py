"""The media stage of ``avrec analyze`` on one Ray node against two (issue #19), side by side.

``--items`` MovieLens-100K posters (real images: key picture, ImageNet labels, text on the
poster by OCR; the default ``[content]`` settings) are analysed from an empty content store on
a Ray cluster started on this machine with Ray's ``cluster_utils.Cluster``: first one node
with one CPU, then two nodes with one CPU each (so one actor per node). Media items/s are
timed from the run's start to the last media result (the text and assembly stages, the same
in both, come after). A third run on two nodes kills the second node when a quarter of the
items are done: the run must still finish every item, and its items/s is given too.

    python -m benchmarks.ray_analyze [--items 200]

Writes ``benchmarks/results/ray-analyze.json`` and the table between the ``ray-analyze``
markers in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from benchmarks import _provenance as provenance
from benchmarks._markdown import replace_block

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = Path(os.environ.get("AVREC_DATA_DIR", ROOT.parent / "shared" / "datasets"))
POSTERS = DATA / "movielens-100k" / "posters"


def _run(items: list, nodes: int, kill_at: float | None = None) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from avrec.config import ContentConfig
    from avrec.content.analyze import ContentAnalyzer
    from avrec.content.store import ContentStore

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    marks: dict[str, float] = {}
    killed = {"done": False}

    def progress(stage: str, done: int, total: int) -> None:
        if stage != "media":
            return
        if done == total:
            marks.setdefault("media_done", time.perf_counter())
        if kill_at is not None and not killed["done"] and done >= kill_at * total:
            cluster.remove_node(next(iter(cluster.worker_nodes)), allow_graceful=False)
            killed["done"] = True
            print(f"    killed the second node after {done} of {total} items", flush=True)

    try:
        with tempfile.TemporaryDirectory(prefix="avrec-ray-") as tmp:
            with ContentStore(Path(tmp) / "content.db") as store:
                analyzer = ContentAnalyzer(
                    ContentConfig(), store, engine="ray", address=cluster.address
                )
                t0 = time.perf_counter()
                rep = analyzer.run(items, progress=progress)
                media_s = marks.get("media_done", time.perf_counter()) - t0
                counts = store.status_counts()
    finally:
        ray.shutdown()
        cluster.shutdown()
    out = {
        "nodes": nodes,
        "killed": killed["done"],
        "items": len(items),
        "media_analysed": rep.media_analysed,
        "statuses": counts,
        "errors": len(rep.errors),
        "media_seconds": media_s,
        "items_per_s": len(items) / media_s,
        "run_seconds": rep.seconds,
    }
    note = " (one killed)" if killed["done"] else ""
    print(f"  {nodes} node(s){note}: {out['items_per_s']:.2f} items/s, media {media_s:.1f}s, "
          f"{counts}", flush=True)  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=200)
    args = ap.parse_args()
    from avrec.content.inputs import ItemInput

    files = sorted(POSTERS.glob("*.jpg"))[: args.items]
    if len(files) < args.items:
        raise SystemExit(f"{POSTERS} holds {len(files)} posters, {args.items} asked")
    items = [ItemInput(f.stem, title=f"Poster {f.stem}", media={"image": str(f)}) for f in files]
    runs = {
        "one node": _run(items, 1),
        "two nodes": _run(items, 2),
        "two nodes, one killed": _run(items, 2, kill_at=0.25),
    }
    res = {
        "items": args.items,
        "runs": runs,
        "speedup": runs["two nodes"]["items_per_s"] / runs["one node"]["items_per_s"],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": provenance.commit(),
        "machine": provenance.machine(),
        "load_average_1min": provenance.load(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ray-analyze.json").write_text(json.dumps(res, indent=2) + "\n")
    lines = [
        f"Measured {res['date']} at commit `{res['commit']}` on {res['machine']} "
        f"(`python -m benchmarks.ray_analyze`): {args.items} MovieLens-100K posters, default "
        "`[content]` settings, from an empty content store; Ray nodes of one CPU each on this "
        "machine; media items/s from the start of the run to its last media result.",
        "",
        "| cluster | media items/s | media seconds | items ok | errors |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {r['items_per_s']:.2f} | {r['media_seconds']:.1f} | "
            f"{r['statuses'].get('ok', 0)} of {r['items']} | {r['errors']} |"
            for name, r in runs.items()
        ),
        "",
        f"Two nodes against one: **{res['speedup']:.2f}x**.",
    ]
    replace_block("ray-analyze", lines, "## Ray for the heavy work (issue 19)")
    print(f"speedup {res['speedup']:.2f}x; wrote {RESULTS / 'ray-analyze.json'}")


if __name__ == "__main__":
    main()
