"""Serving nodes on one PostgreSQL against one SQLite node (issue #18), side by side in one run.

The MovieLens-100K workspace of ``benchmarks.service_load`` (the default pipeline, trained
once and cached) is served three ways on this machine, each loaded by wrk with 50 connections
back to back for ``--seconds``:

- **SQLite, one node**: ``avrec serve --workers 2`` on the workspace's own store;
- **PostgreSQL, one node**: the same store copied into a throwaway PostgreSQL 15
  (``avrec store copy``), ``avrec serve --workers 2`` from a folder of its own;
- **PostgreSQL, two nodes behind nginx**: two ``avrec serve --workers 1`` from two folders,
  nginx (Debian's) in front, round robin.

Routes: ``POST /v1/events`` (one play, committed before the answer) and the cold path of
``GET /v1/users/{id}/recommendations?k=10`` (``AVREC_CACHE_S=0``: every page computed,
explanations included). Everything shares the two cores (wrk, nginx, PostgreSQL, the nodes),
so each cell also gives the CPU seconds all of them spent per 1,000 requests.

**Cross-node freshness**: with the two nodes, ``--fresh`` times a user's top item on node B
is played on node A; the time from A's 200 to the first answer of B without that item
(B asked back to back) is recorded, p50 and p99.

    python -m benchmarks.nodes [--seconds 15] [--fresh 200]

Writes ``benchmarks/results/nodes.json`` and the table between the ``nodes`` markers in
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

from benchmarks import _provenance as provenance
from benchmarks import service_load
from benchmarks._markdown import replace_block
from benchmarks.service_load import AVREC, KEY, _port, _titles_words, load, ml100k_workspace

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

NGINX = """
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {root}/body;
  proxy_temp_path {root}/proxy;
  fastcgi_temp_path {root}/fastcgi;
  uwsgi_temp_path {root}/uwsgi;
  scgi_temp_path {root}/scgi;
  upstream avrec {{ {servers} keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://avrec;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $remote_addr;
    }}
  }}
}}
"""


def serve(ws: Path, workers: int, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """``benchmarks.service_load``'s server, every page computed (the cold path)."""
    return service_load.serve(ws, {"AVREC_CACHE_S": "0", **env}, workers=workers)


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def cpu_seconds() -> float:
    """CPU seconds (user + system) of every process on the machine (the load generator,
    nginx, PostgreSQL and the nodes all share the two cores)."""
    t = psutil.cpu_times()
    return t.user + t.system + getattr(t, "nice", 0.0)


def cell(url: str, route: str, seconds: int, lists: tuple) -> dict:
    c0 = cpu_seconds()
    res = load(url, route, 50, seconds, lists)
    cpu = cpu_seconds() - c0
    res["cpu_s_per_1000"] = 1000 * cpu / max(res["requests"], 1)
    print(
        f"    {route}: {res['rps']:.0f}/s p50 {res['p50']:.1f} ms p99 {res['p99']:.1f} ms, "
        f"{res['cpu_s_per_1000']:.1f} CPU s per 1,000, errors {res['errors']}",
        flush=True,
    )
    return res


def freshness(a: str, b: str, users: list[str], n: int) -> dict:
    """Seconds from a play's 200 on node ``a`` to node ``b``'s first answer without it."""
    h = {"Authorization": f"Bearer {KEY}"}
    out: list[float] = []
    with httpx.Client(base_url=a, headers=h) as ca, httpx.Client(base_url=b, headers=h) as cb:
        for u in users[:n]:
            page = cb.get(f"/v1/users/{u}/recommendations", params={"k": 5, "explain": "false"})
            top = page.json()["items"][0]["item_id"]
            r = ca.post("/v1/events", json={"user_id": u, "item_id": top, "event": "play"})
            r.raise_for_status()
            t = time.perf_counter()
            while True:
                got = cb.get(f"/v1/users/{u}/recommendations",
                             params={"k": 5, "explain": "false"}).json()  # fmt: skip
                if top not in [x["item_id"] for x in got["items"]]:
                    break
                if time.perf_counter() - t > 10:
                    raise RuntimeError(f"node b still shows {top} to {u} after 10 s")
            out.append(time.perf_counter() - t)
    ms = np.asarray(out) * 1000
    return {"n": len(ms), "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max())}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--fresh", type=int, default=200)
    args = ap.parse_args()
    if not shutil.which("wrk") or not shutil.which("nginx"):
        raise SystemExit("needs wrk and nginx (apt-get install wrk nginx-light)")
    from avrec.storage import open_store
    from avrec.storage.copy import copy_store
    from avrec.storage.pglocal import LocalPostgres

    ws = ml100k_workspace()
    lists = _titles_words(ws)
    users = lists[0]
    out: dict = {"cells": {}}
    tmp = Path(tempfile.mkdtemp(prefix="avrec-nodes-"))
    pg = LocalPostgres().start()
    procs: list[subprocess.Popen] = []
    try:
        url = pg.create_database("nodes")
        with open_store(f"sqlite:///{ws / 'avrec.db'}") as src, open_store(url) as dst:
            copy_store(src, dst)
            rec = dst.active_model("pipeline")
            dst.put_bundle(rec.name, rec.version, rec.path)
        env = {"AVREC_STORE_URL": url}
        for name in ("b1", "b2", "one"):
            subprocess.run([AVREC, "init", str(tmp / name)], check=True, capture_output=True,
                           env={**os.environ, **env})  # fmt: skip

        print("SQLite, one node (2 workers)", flush=True)
        p, u = serve(ws, 2, {"AVREC_STORE_URL": ""})
        out["cells"]["sqlite, 1 node"] = {r: cell(u, r, args.seconds, lists)
                                         for r in ("events", "recommendations")}  # fmt: skip
        stop(p)

        print("PostgreSQL, one node (2 workers)", flush=True)
        p, u = serve(tmp / "one", 2, env)
        out["cells"]["postgresql, 1 node"] = {r: cell(u, r, args.seconds, lists)
                                             for r in ("events", "recommendations")}  # fmt: skip
        stop(p)

        print("PostgreSQL, two nodes (1 worker each) behind nginx", flush=True)
        (pa, ua), (pb, ub) = serve(tmp / "b1", 1, env), serve(tmp / "b2", 1, env)
        procs = [pa, pb]
        port = _port()
        servers = " ".join(f"server {x.removeprefix('http://')};" for x in (ua, ub))
        (tmp / "nginx.conf").write_text(NGINX.format(root=tmp, servers=servers, port=port))
        ng = subprocess.Popen(["nginx", "-c", str(tmp / "nginx.conf"), "-g", "daemon off;"],
                              start_new_session=True)  # fmt: skip
        procs.append(ng)
        time.sleep(1)
        front = f"http://127.0.0.1:{port}"
        out["cells"]["postgresql, 2 nodes + nginx"] = {
            r: cell(front, r, args.seconds, lists) for r in ("events", "recommendations")
        }
        print("cross-node freshness", flush=True)
        out["freshness"] = freshness(ua, ub, users[::-1], args.fresh)
        print(f"    {out['freshness']}", flush=True)
    finally:
        for p in procs:
            stop(p)
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    out.update(
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        commit=provenance.commit(("src", "benchmarks/nodes.py")),
        machine=provenance.machine(),
        seconds=args.seconds,
        load_average_1min=provenance.load(),
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "nodes.json").write_text(json.dumps(out, indent=2) + "\n")
    update_markdown(out)


def update_markdown(res: dict) -> None:
    lines = [
        f"Measured {res['date']} at commit `{res['commit']}` on {res['machine']} "
        f"(`python -m benchmarks.nodes`; wrk, 50 connections back to back, "
        f"{res['seconds']} s per cell; everything on the same two cores). Events: one play "
        "per request, committed before the answer. Recommendations: the cold path "
        "(`AVREC_CACHE_S=0`, every page computed, explanations included).",
        "",
        "| setup | route | req/s | p50 ms | p99 ms | CPU s per 1,000 requests | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for setup, routes in res["cells"].items():
        for route, r in routes.items():
            lines.append(
                f"| {setup} | {route} | {r['rps']:.0f} | {r['p50']:.1f} | {r['p99']:.1f} | "
                f"{r['cpu_s_per_1000']:.1f} | {r['errors']} |"
            )
    f = res.get("freshness")
    if f:
        lines += [
            "",
            f"Cross-node freshness ({f['n']} plays): from node A's 200 to node B's first "
            f"answer without the played item, p50 **{f['p50_ms']:.1f} ms**, p99 "
            f"**{f['p99_ms']:.1f} ms** (max {f['max_ms']:.1f} ms).",
        ]
    replace_block("nodes", lines, "## Serving nodes on PostgreSQL (issue 18)")


if __name__ == "__main__":
    main()
