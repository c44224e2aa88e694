"""``avrec precompute`` on MicroLens-50k (issue #19): every user's page kept ahead, here and on
a two-node Ray cluster, and a kept page served in process.

A MicroLens-50k workspace (``avrec datasets load microlens-50k`` and ``avrec train``: the
default pipeline; built once and cached) has every user its bundle knows precomputed
(``--k`` items with explanations) twice, side by side: in this process (``engine="local"``),
then on a Ray cluster of two nodes with one CPU each on this machine (Ray Data actors, each
loading the bundle). Then ``--serve`` users drawn at random are answered from their kept
pages the way ``GET /v1/users/{id}/recommendations`` does it in process (the store read, the
page cut to 10 items, the catalogue rows for the answer), without HTTP: p50 and p99.

    python -m benchmarks.precompute [--k 20] [--serve 2000] [--users N]

Writes ``benchmarks/results/precompute.json`` and the table between the ``precompute``
markers in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np

from benchmarks import _provenance as provenance
from benchmarks._markdown import replace_block
from benchmarks.service_load import CACHE, KEY, _run

RESULTS = Path(__file__).resolve().parent / "results"


def workspace() -> Path:
    ws = CACHE / "precompute-microlens"
    if (ws / "artifacts" / "models" / "pipeline" / "1").is_dir():
        return ws
    shutil.rmtree(ws, ignore_errors=True)
    print("  building the MicroLens-50k workspace (load, train) ...", flush=True)
    t = time.perf_counter()
    _run("init", str(ws))
    _run("-w", str(ws), "datasets", "load", "microlens-50k")
    _run("-w", str(ws), "train")
    print(f"  built in {time.perf_counter() - t:.0f} s", flush=True)
    return ws


def _precompute(ws: Path, k: int, users: int | None, engine: str, address: str | None) -> dict:
    from avrec.models import load_model
    from avrec.pipeline.precompute import precompute
    from avrec.workspace import Workspace

    w = Workspace.find(ws)
    rec = w.store.active_model("pipeline")
    t = time.perf_counter()
    model = load_model(rec.path)
    load_s = time.perf_counter() - t
    who = list(model.users.ids)[:users] if users else None
    last = {"t": time.perf_counter()}

    def progress(done: int, total: int) -> None:
        if time.perf_counter() - last["t"] > 30 or done == total:
            last["t"] = time.perf_counter()
            print(f"    {engine}: {done:,} of {total:,} users", flush=True)

    rep = precompute(model, w.store, f"{rec.name}-v{rec.version}", k=k, users=who,
                     progress=progress, engine=engine, bundle_path=str(rec.path),
                     address=address)  # fmt: skip
    w.close()
    out = {"engine": engine, "users": rep.users, "pages": rep.pages, "seconds": rep.seconds,
           "users_per_s": rep.pages / rep.seconds, "bundle_load_s": load_s}  # fmt: skip
    print(f"  {engine}: {rep.pages:,} pages in {rep.seconds:.0f} s "
          f"({out['users_per_s']:.0f} users/s)", flush=True)  # fmt: skip
    return out


def _on_ray(ws: Path, k: int, users: int | None) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        return _precompute(ws, k, users, "ray", cluster.address)
    finally:
        ray.shutdown()
        cluster.shutdown()


def _serve(ws: Path, n: int) -> dict:
    """Kept pages answered in process as the route does, p50/p99 ms."""
    os.environ.update(AVREC_CACHE_S="0", AVREC_API_KEYS=f"{KEY}:write",
                      AVREC_WORKSPACE=str(ws), AVREC_RATE_LIMIT="1000000/second")  # fmt: skip
    from fastapi.testclient import TestClient

    from avrec.service.app import create_app
    from avrec.service.routes.recommend import present
    from avrec.service.schemas import RecommendationResponse

    app = create_app()
    with TestClient(app):
        st = app.state.service
        b = st.bundle
        users = list(b.model.users.ids)
        rng = random.Random(0)
        picks = [rng.choice(users) for _ in range(n)]
        times, served = [], 0
        for u in picks:
            t = time.perf_counter()
            lst = st.precomputed(b, u, 10, 0, "en")
            if lst is not None:
                RecommendationResponse(user_id=u, items=present(st, b, lst, True),
                                       model_version=b.label, precomputed=True)  # fmt: skip
                served += 1
            times.append(time.perf_counter() - t)
    ms = np.asarray(times) * 1000
    out = {
        "requests": n,
        "served_from_kept_pages": served,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }
    print(f"  served: {served} of {n} from kept pages, p50 {out['p50_ms']:.2f} ms, "
          f"p99 {out['p99_ms']:.2f} ms", flush=True)  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--serve", type=int, default=2000)
    ap.add_argument("--users", type=int, default=None, help="only the first N users")
    args = ap.parse_args()
    ws = workspace()
    res: dict = {"k": args.k, "runs": {}}
    res["runs"]["this process"] = _precompute(ws, args.k, args.users, "local", None)
    res["runs"]["two Ray nodes"] = _on_ray(ws, args.k, args.users)
    res["serve"] = _serve(ws, args.serve)
    db = ws / "avrec.db"
    res["store_mb"] = round(db.stat().st_size / 1e6, 1) if db.exists() else None
    res.update(
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        commit=provenance.commit(),
        machine=provenance.machine(),
        load_average_1min=provenance.load(),
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "precompute.json").write_text(json.dumps(res, indent=2) + "\n")
    sv = res["serve"]
    lines = [
        f"Measured {res['date']} at commit `{res['commit']}` on {res['machine']} "
        "(`python -m benchmarks.precompute`): every user of a MicroLens-50k workspace's "
        f"default pipeline, {args.k} items each with explanations, written to the SQLite store.",
        "",
        "| where | users | seconds | users/s |",
        "|---|---|---|---|",
        *(
            f"| {name} | {r['pages']:,} | {r['seconds']:.0f} | {r['users_per_s']:.0f} |"
            for name, r in res["runs"].items()
        ),
        "",
        f"A kept page served in process ({sv['requests']:,} random users, the route's work "
        f"without HTTP): p50 **{sv['p50_ms']:.2f} ms**, p99 **{sv['p99_ms']:.2f} ms** "
        f"({sv['served_from_kept_pages']:,} answered from kept pages). The store file: "
        f"{res['store_mb']} MB.",
    ]
    replace_block("precompute", lines, "### Precomputed pages (issue 19)")


if __name__ == "__main__":
    main()
