"""How much does the HTTP service carry? wrk on loopback against ``avrec serve``.

For each bundle, the real server (``avrec serve --workers 2``, keys on, durable writes) is
loaded by wrk (Debian's, C, bounded in time) with 50 and 200 connections, one route at a
time:

- **recommendations**: ``GET /v1/users/{id}/recommendations?k=10`` for random known users
  (explanations included);
- **events**: ``POST /v1/events``, one play of a random user and item, each committed and
  fsynced before the answer;
- **search**: ``GET /v1/search?q=`` with one or two words of the catalogue's titles.

Each route runs back to back (every connection sends its next request as soon as the last
is answered: the most the server carries, at a latency of clients / throughput), and the
recommendations also paced, as people with a think time: 50 clients offering a rate in all,
where the latency is the server's own.

Recommendations are measured first on the **cold path**, the page cache off
(``AVREC_CACHE_S=0``: every page computed, as for a new user's first page and every page
after an event), back to back and paced at ``--cold-rate``; then with the cache, paced at
``--rate``. Every recommendation run reads the server's ``avrec_pages_total`` counters
before and after, so the table gives the share of pages the cache answered in that run.
Users are drawn uniformly at random (wrk's ``math.random``) from the first 2,000 users of
the store (MovieLens: all 943) or 5,000 sampled of the 1M bundle's 100,000, so they repeat
as a platform's returning users do, far more than real traffic's long tail would.

Bundles: **MovieLens-100K** (the default pipeline trained by ``avrec train`` on the
workspace) and a **synthetic 1M-item** catalogue (the pipeline-latency benchmark's, saved once
into the cache and registered in a workspace of its own). The load generator shares the two
cores with the server, as it would on one machine.

    python -m benchmarks.service_load [--seconds 20] [--cases ml100k,1m] [--clients 50,200]
        [--rate 600] [--cold-rate 150]

Writes ``benchmarks/results/service-load.json`` and the table between the ``service-load``
markers in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks import _provenance as provenance
from benchmarks._markdown import replace_block

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CACHE = Path(os.environ.get("AVREC_CACHE_DIR", Path.home() / ".cache" / "avrec")) / "bench"
AVREC = shutil.which("avrec") or str(Path(sys.executable).parent / "avrec")
KEY = "bench-key-0123456789abcdefghij"
ROUTES = ("recommendations", "events", "search")

LUA = r"""
local users = {%(users)s}
local items = {%(items)s}
local words = {%(words)s}
local route = "%(route)s"
local n = 0
math.randomseed(%(seed)d)
request = function()
  n = n + 1
  local h = {["Authorization"] = "Bearer %(key)s"}
  if route == "recommendations" then
    local u = users[math.random(#users)]
    return wrk.format("GET", "/v1/users/" .. u .. "/recommendations?k=10", h)
  elseif route == "events" then
    h["Content-Type"] = "application/json"
    local u = users[math.random(#users)]
    local i = items[math.random(#items)]
    local body = '{"user_id":"' .. u .. '","item_id":"' .. i .. '","event":"play","value":0.9}'
    return wrk.format("POST", "/v1/events", h, body)
  else
    local w = words[math.random(#words)]
    return wrk.format("GET", "/v1/search?k=10&q=" .. w, h)
  end
end
%(delay)s
done = function(summary, latency, requests)
  local out = {
    requests = summary.requests, seconds = summary.duration / 1e6,
    non2xx = summary.errors.status, connect = summary.errors.connect,
    read = summary.errors.read, write = summary.errors.write, timeout = summary.errors.timeout,
    p50 = latency:percentile(50) / 1000, p95 = latency:percentile(95) / 1000,
    p99 = latency:percentile(99) / 1000, mean = latency.mean / 1000,
  }
  local parts = {}
  for k, v in pairs(out) do parts[#parts + 1] = '"' .. k .. '":' .. tostring(v) end
  io.write("RESULT {" .. table.concat(parts, ",") .. "}\n")
end
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(*args: str, env: dict | None = None) -> None:
    r = subprocess.run([AVREC, *args], capture_output=True, text=True,
                       env={**os.environ, **(env or {})})  # fmt: skip
    if r.returncode:
        raise RuntimeError(f"avrec {' '.join(args)}: {r.stderr[-2000:]}")


def ml100k_workspace() -> Path:
    ws = CACHE / "service-ml100k"
    if (ws / "artifacts" / "models" / "pipeline" / "1").is_dir():
        return ws
    shutil.rmtree(ws, ignore_errors=True)
    print("  building the MovieLens-100K workspace (load, train) ...", flush=True)
    _run("init", str(ws))
    _run("-w", str(ws), "datasets", "load", "movielens-100k")
    _run("-w", str(ws), "train")
    return ws


def million_workspace() -> Path:
    """The pipeline-latency benchmark's synthetic 1M-item pipeline, fitted once, saved and
    registered in a workspace whose store holds the catalogue's ids."""
    ws = CACHE / "service-1m"
    bundle = ws / "artifacts" / "models" / "pipeline" / "1"
    if bundle.is_dir():
        return ws
    import polars as pl

    from avrec.pipeline.pipeline import Pipeline
    from avrec.workspace import Workspace
    from benchmarks.pipeline_latency import synthetic, synthetic_config

    shutil.rmtree(ws, ignore_errors=True)
    print("  fitting the synthetic 1M-item pipeline (about 4 minutes) ...", flush=True)
    ds = synthetic(1_000_000, 100_000)
    pipe = Pipeline(**synthetic_config().model_dump()).fit(ds)
    w = Workspace.init(ws)
    pipe.save(bundle)
    ids = list(ds.items.ids)
    w.store.upsert_items(pl.DataFrame({"item_id": ids, "title": [f"Item {i}" for i in ids]}))
    w.store.register_model("pipeline", pipe.name, str(bundle), {}, {"last_event_id": 0})
    w.close()
    return ws


def _titles_words(ws: Path, limit: int = 200) -> tuple[list[str], list[str], list[str]]:
    from avrec.workspace import Workspace

    w = Workspace(ws)
    try:
        items = w.store.items(include_placeholders=False).head(20000)
        users = w.store.users().head(2000)["user_id"].to_list()
    finally:
        w.close()
    ids = items["item_id"].to_list()
    words = []
    for t in items["title"].to_list()[:limit]:
        toks = [x for x in re.findall(r"[A-Za-z]{4,}", t or "")][:2]
        if toks:
            words.append("+".join(toks))
    if not users:  # the synthetic bundle's users are 0 .. 99,999 (the store holds none)
        import numpy as np

        users = [str(u) for u in np.random.default_rng(0).choice(100_000, 5000, replace=False)]
    return users, ids, words or ["item"]


def serve(ws: Path, extra: dict | None = None, workers: int = 2) -> tuple[subprocess.Popen, str]:
    port = _port()
    env = {**os.environ, "AVREC_API_KEYS": f"{KEY}:write", "AVREC_LOG_JSON": "1",
           "AVREC_RATE_LIMIT": "1000000/second", **(extra or {})}  # fmt: skip
    log = open(ws / "bench-server.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [AVREC, "-w", str(ws), "serve", "--port", str(port), "--workers", str(workers)],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError((ws / "bench-server.log").read_text()[-3000:])
        try:
            if httpx.get(url + "/health/ready", timeout=2).status_code == 200:
                time.sleep(2)  # the other worker's load, which answered first is not known
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the server did not get ready")


def warm(url: str, users: list[str]) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}) as c:
        for u in users[:200]:
            c.get(f"/v1/users/{u}/recommendations", params={"k": 10})
        c.get("/v1/search", params={"q": "love"})


def load(url: str, route: str, clients: int, seconds: int, lists: tuple, rate: float = 0.0) -> dict:
    """One wrk run: ``clients`` connections, back to back, or with ``rate`` (requests/s in
    all), each client waiting ``clients / rate`` seconds on average between requests
    (people with a think time, not a saturating loop)."""
    users, items, words = lists
    q = lambda xs: ",".join(json.dumps(x) for x in xs[:5000])  # noqa: E731
    # think times drawn uniformly around the mean, so that the clients do not fire in step
    think = 1000.0 * clients / rate if rate else 0.0
    delay = f"delay = function() return math.random() * {2 * think:.1f} end" if rate else ""
    script = LUA % {"users": q(users), "items": q(items), "words": q(words), "route": route,
                    "seed": 1, "key": KEY, "delay": delay}  # fmt: skip
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        r = subprocess.run(
            ["wrk", "-t", "2", "-c", str(clients), "-d", f"{seconds}s", "--timeout", "10s",
             "-s", f.name, url],
            capture_output=True, text=True, timeout=seconds + 60,
        )  # fmt: skip
    finally:
        os.unlink(f.name)
    m = re.search(r"RESULT (\{.*\})", r.stdout)
    if not m:
        raise RuntimeError(f"wrk: {r.stdout[-2000:]} {r.stderr[-2000:]}")
    res = json.loads(m.group(1))
    res["rps"] = res["requests"] / res["seconds"]
    res["errors"] = sum(int(res[k]) for k in ("non2xx", "connect", "read", "write", "timeout"))
    return res


def pages(url: str) -> dict[str, float]:
    """The server's page counters (every worker's, summed): cache hits and misses."""
    text = httpx.get(url + "/metrics", timeout=10).text
    out = {"hit": 0.0, "miss": 0.0}
    for m in re.finditer(r'^avrec_pages_total\{cache="(hit|miss)"\} ([0-9.e+]+)$', text, re.M):
        out[m.group(1)] += float(m.group(2))
    return out


def _measured(url: str, route: str, run: callable) -> dict:  # type: ignore[valid-type]
    """``run()`` with the share of recommendation pages the cache answered meanwhile."""
    before = pages(url) if route == "recommendations" else None
    res = run()
    if before is not None:
        after = pages(url)
        hits, misses = after["hit"] - before["hit"], after["miss"] - before["miss"]
        res["cache_hit_ratio"] = hits / (hits + misses) if hits + misses else None
        res["pages_computed"] = misses
    return res


def _show(out: dict, route: str, mode: str, res: dict) -> None:
    out["runs"].append({"route": route, "mode": mode, **res})
    hit = res.get("cache_hit_ratio")
    print(
        f"  {route:15} {mode:36}: {res['rps']:7.0f} req/s  p50 {res['p50']:6.1f}"
        f"  p95 {res['p95']:6.1f}  p99 {res['p99']:6.1f} ms  errors {res['errors']}"
        + (f"  cache hits {hit:.1%}" if hit is not None else ""),
        flush=True,
    )


def run_case(
    label: str, ws: Path, clients: list[int], seconds: int, rate: float, cold_rate: float
) -> dict:
    lists = _titles_words(ws)
    out: dict = {"runs": [], "users_drawn_from": len(lists[0])}
    rec = "recommendations"
    # the cold path first: every page computed (AVREC_CACHE_S=0)
    proc, url = serve(ws, {"AVREC_CACHE_S": "0"})
    try:
        res = _measured(url, rec, lambda: load(url, rec, clients[0], seconds, lists))
        _show(out, rec, f"cold: {clients[0]} clients back to back", res)
        res = _measured(url, rec, lambda: load(url, rec, clients[0], seconds, lists, cold_rate))
        _show(out, rec, f"cold: {clients[0]} clients, {cold_rate:.0f}/s offered", res)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    t = time.perf_counter()
    proc, url = serve(ws)
    out["ready_s"] = time.perf_counter() - t
    print(f"{label}: ready in {out['ready_s']:.1f}s", flush=True)
    try:
        # with the page cache: paced first, from an empty cache (no warm-up), so its hit
        # ratio is what this traffic earns in one run
        res = _measured(url, rec, lambda: load(url, rec, clients[0], seconds, lists, rate))
        _show(out, rec, f"cached: {clients[0]} clients, {rate:.0f}/s offered", res)
        for route in ROUTES:
            for c in clients:
                res = _measured(url, route, lambda r=route, n=c: load(url, r, n, seconds, lists))
                mode = f"cached: {c} clients back to back" if route == rec else f"{c} clients"
                _show(out, route, mode, res)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    return out


def update_markdown(res: dict) -> None:
    drawn = ", ".join(f"{k}: {v['users_drawn_from']:,}" for k, v in res["cases"].items())
    lines = [
        f"Measured {res['date']} at commit {res.get('commit', '?')} on {res['machine']} "
        f"(load average {res.get('load_before', '?')} before, {res.get('load_after', '?')} "
        "after): "
        f"`python -m benchmarks.service_load` (wrk, {res['seconds']} s per cell, `avrec serve "
        "--workers 2` on loopback, keys on, durable writes; the load generator on the same two "
        f"cores). Users drawn uniformly at random from {drawn}. Cold: every page computed "
        "(`AVREC_CACHE_S=0`). Cached: the default page cache, from empty, cells in the order "
        'shown; "cache hits" is the share of pages it answered in that cell, read from the '
        "server's `avrec_pages_total`.",
        "",
        "| bundle | route | load | req/s | p50 ms | p95 ms | p99 ms | cache hits | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, case in res["cases"].items():
        for r in case["runs"]:
            hit = r.get("cache_hit_ratio")
            lines.append(
                f"| {label} | {r['route']} | {r['mode']} | {r['rps']:.0f} | {r['p50']:.1f} | "
                f"{r['p95']:.1f} | {r['p99']:.1f} | "
                f"{'-' if hit is None else f'{hit:.0%}'} | {r['errors']} |"
            )
    replace_block("service-load", lines, "## The HTTP service under load")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--cases", default="ml100k,1m")
    ap.add_argument("--clients", default="50,200")
    ap.add_argument("--rate", type=float, default=600.0, help="offered rate, cached and paced")
    ap.add_argument("--cold-rate", type=float, default=150.0,
                    help="offered rate of the paced cold run")  # fmt: skip
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk (Debian)")
    CACHE.mkdir(parents=True, exist_ok=True)
    clients = [int(c) for c in args.clients.split(",")]
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    res = {"machine": provenance.machine(), "date": date,
           "commit": provenance.commit(), "load_before": provenance.load(),
           "seconds": args.seconds, "rate": args.rate, "cold_rate": args.cold_rate,
           "cases": {}}  # fmt: skip
    builders = {"MovieLens-100K": ("ml100k", ml100k_workspace),
                "synthetic 1M": ("1m", million_workspace)}  # fmt: skip
    for label, (key, build) in builders.items():
        if key in args.cases.split(","):
            res["cases"][label] = run_case(
                label, build(), clients, args.seconds, args.rate, args.cold_rate
            )
    RESULTS.mkdir(parents=True, exist_ok=True)
    res["load_after"] = provenance.load()
    (RESULTS / "service-load.json").write_text(json.dumps(res, indent=2))
    update_markdown(res)


if __name__ == "__main__":
    main()
