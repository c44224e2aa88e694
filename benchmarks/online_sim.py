"""The online loop measured in a simulation (issue 21): simulated people, the real server.

**The people** (RecSim-style) are MovieLens-100K's 943 users. Whether one plays an item
shown at position ``p`` is drawn from a model fitted on *all* of the dataset's ratings
(every user and item, so it knows items the served pipeline has never seen):

- a 32-factor truncated SVD of the user-item matrix gives each pair a score, standardised
  per user (``z``); a fixed noise per pair (normal, sd ``NOISE``) is added;
- ``P(play) = exam(p) * sigmoid(BASE + SLOPE * (z + noise))`` with the examination of
  position ``p`` ``1 / log2(p + 2)`` (position bias);
- a play's completion is ``sigmoid(0.5 + 0.8 (z + noise))`` with noise of its own.

**The days.** Each simulated day every person arrives with probability ``--arrive`` and asks
the real server (``avrec serve``, one worker, on a copy of a trained workspace) for their
first page (``GET /v1/users/{id}/recommendations``, k = 10); their plays go back through
``POST /v1/events`` with the page's ``request_id``; their next page follows from them. Day 0
is the pre-period (CUPED's covariate); experiments start after it, and are looked at through
``GET /v1/admin/experiments/{name}`` at the end of every day. The workspace holds
MovieLens-100K without ``--new-items`` items (seeded, uniformly among those with 5 or more
ratings), which are added through ``POST /v1/items`` at the start of day 2.

**Phases** (each on a fresh copy of the workspace, with the same arrivals):

1. ``aa``: today's pipeline, an A/A experiment (two arms, same pipeline), no exploration;
   also the baseline for the new items.
2. ``explore``: the same with ``[online] explore_rate``; the logs of this phase are the
   off-policy data. A second server (the fusion-only pipeline, no exploration, no logging)
   is asked for the same person's page at the same moment and gets the same plays, so each
   logged request knows the item the second pipeline would have shown at the slot.
3. ``ab-popular``: today's pipeline against popularity (two registered versions).
4. ``ab-close``: today's pipeline against the same sources fused without the learned
   ranker (two close pipelines).
5. ``second``: the fusion-only pipeline served to everyone: its online click rate at the
   slot, which the off-policy estimates of phase 2 are compared with.

**The A/A error rate over 200 runs.** Running 200 whole simulations through the server
would take hours on two cores; since both arms of an A/A test serve the same pipeline, the
lists served do not depend on the assignment. So phase 1's served lists are replayed: each
of ``--runs`` runs draws a new salt (the server's own assignment function) and new plays
for every impression from the people's model, and looks every day with the server's own
``analyze`` (mSPRT and alpha spending). Run 0 is checked against the server's own answer
on the same data. What a replay cannot have: a page that would have changed after a play
the replay drew differently.

    python -m benchmarks.online_sim [--days 7] [--arrive 0.5] [--runs 200]

Writes ``benchmarks/results/online-sim.json`` and the block between the ``online-sim``
markers in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import numpy as np

from benchmarks import _provenance as provenance
from benchmarks.online_report import (
    SLOT,
    K,
    aa_replays,
    ctr,
    detection,
    gain,
    new_item_stats,
    ope,
    update_markdown,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CACHE = Path(os.environ.get("AVREC_CACHE_DIR", Path.home() / ".cache" / "avrec")) / "bench"
AVREC = shutil.which("avrec") or str(Path(sys.executable).parent / "avrec")
KEY = "sim-admin-key-0123456789abcdefghij"
BASE, SLOPE, NOISE = -4.0, 1.2, 0.5  # the people's model (see the module's docstring)
#: the new items are drawn among those with at least this many ratings (the people's model
#: knows a little of each), uniformly: most are niche, as new items are
MIN_RATINGS = 5
#: the exploration settings the development seed's sweep tries
RATES, SHARES = (0.05, 0.1, 0.2, 0.3), (0.5, 0.9)


# -- the people ---------------------------------------------------------------------------------
@dataclass
class People:
    users: list[str]
    items: list[str]
    logit: np.ndarray  # users x items
    uidx: dict[str, int] = field(default_factory=dict)
    iidx: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.uidx = {u: n for n, u in enumerate(self.users)}
        self.iidx = {i: n for n, i in enumerate(self.items)}

    def p_play(self, user: str, items: list[str]) -> np.ndarray:
        row = self.logit[self.uidx[user]]
        lg = np.array([row[self.iidx[i]] if i in self.iidx else -10.0 for i in items])
        exam = 1.0 / np.log2(np.arange(len(items)) + 2.0)
        return exam / (1.0 + np.exp(-lg))

    def completion(self, user: str, item: str, rng: np.random.Generator) -> float:
        z = (self.logit[self.uidx[user], self.iidx[item]] - BASE) / SLOPE
        return float(1.0 / (1.0 + math.exp(-(0.5 + 0.8 * z + rng.normal(0, 0.5)))))


def fit_people(events, seed: int) -> People:  # noqa: ANN001
    from scipy.sparse import csr_matrix
    from scipy.sparse.linalg import svds

    users = sorted(set(events["user_id"].to_list()), key=int)
    items = sorted(set(events["item_id"].to_list()), key=int)
    ui = {u: n for n, u in enumerate(users)}
    ii = {i: n for n, i in enumerate(items)}
    rows = [ui[u] for u in events["user_id"].to_list()]
    cols = [ii[i] for i in events["item_id"].to_list()]
    x = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(users), len(items)))
    u, s, vt = svds(x.astype(np.float64), k=32, random_state=seed)
    score = (u * s) @ vt
    z = (score - score.mean(axis=1, keepdims=True)) / score.std(axis=1, keepdims=True)
    noise = np.random.default_rng(seed).normal(0.0, NOISE, z.shape)
    return People(users, items, BASE + SLOPE * (z + noise))


# -- the workspace ------------------------------------------------------------------------------
def _run(*args: str) -> None:
    subprocess.run([AVREC, *args], check=True, stdout=subprocess.DEVNULL)


def build_workspace(new: list[str]) -> Path:
    """MovieLens-100K without the ``new`` items, and three pipelines registered: today's
    (v1, active), the fusion-only one (v2), popularity (v3)."""
    from avrec.cli.datasets import get_loader
    from avrec.config import Settings
    from avrec.ingest.pipeline import ingest_public
    from avrec.workspace import Workspace

    ws = CACHE / f"online-sim-{len(new)}-{MIN_RATINGS}"
    if (ws / "artifacts" / "models" / "pipeline" / "3").is_dir():
        return ws
    shutil.rmtree(ws, ignore_errors=True)
    print("  building the workspace (MovieLens-100K less the new items; 3 pipelines) ...",
          flush=True)  # fmt: skip
    s = Settings()
    data = get_loader("movielens-100k").load(s.data_dir, s.cache_dir, True)
    import polars as pl

    keep = ~pl.col("item_id").is_in(new)
    data = replace(data, items=data.items.filter(keep), events=data.events.filter(keep))
    _run("init", str(ws))
    w = Workspace(ws)
    try:
        ingest_public(w.store, data, w.config)
    finally:
        w.close()
    default = (ROOT / "configs" / "default.toml").read_text()
    fusion = ws / "fusion.toml"
    fusion.write_text("ranker_min_history = 1000000\n" + default)
    popular = ws / "popular.toml"
    popular.write_text('search = false\nranker_min_history = 1000000\n\n[[sources]]\n'
                       'kind = "popular"\nn = 100\n')  # fmt: skip
    _run("-w", str(ws), "train")
    _run("-w", str(ws), "train", "--pipeline", str(fusion))
    _run("-w", str(ws), "train", "--pipeline", str(popular))
    w = Workspace(ws)
    try:
        w.store.activate_model("pipeline", 1)
    finally:
        w.close()
    return ws


def _copy(ws: Path, name: str, online: dict, active: int = 1) -> Path:
    from avrec.workspace import Workspace

    dst = CACHE / f"online-sim-run-{name}"
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(ws, dst, ignore=shutil.ignore_patterns("spool", "*.log"))
    with open(dst / "avrec.toml", "a") as f:
        f.write("\n[online]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in online.items()))
    if active != 1:
        w = Workspace(dst)
        try:
            w.store.activate_model("pipeline", active)
        finally:
            w.close()
    return dst


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(ws: Path):  # noqa: ANN201
    port = _port()
    env = {**os.environ, "AVREC_API_KEYS": f"{KEY}:admin", "AVREC_LOG_JSON": "1",
           "AVREC_RATE_LIMIT": "1000000/second"}  # fmt: skip
    log = open(ws / "sim-server.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [AVREC, "-w", str(ws), "serve", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    try:
        deadline = time.time() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError((ws / "sim-server.log").read_text()[-3000:])
            with contextlib.suppress(httpx.HTTPError):
                if client.get("/health/ready").status_code == 200:
                    break
            if time.time() > deadline:
                raise RuntimeError("the server did not get ready")
            time.sleep(0.5)
        yield client
    finally:
        client.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(Exception):
            proc.wait(30)
        log.close()


# -- one phase ----------------------------------------------------------------------------------
@dataclass
class Shown:
    day: int
    user: str
    request_id: str
    items: list[str]
    variant: str | None
    clicks: list[int]
    shadow_slot: str | None = None  # the second pipeline's item at the slot


def _page(c: httpx.Client, user: str) -> tuple[list[str], str | None, str, list[str]]:
    r = c.get(f"/v1/users/{user}/recommendations", params={"k": K, "explain": "false"})
    r.raise_for_status()
    body = r.json()
    ids = [x["item_id"] for x in body["items"]]
    sources = [",".join(x.get("sources") or []) for x in body["items"]]
    return ids, body.get("variant"), r.headers["X-Request-ID"], sources


def _send(c: httpx.Client, events: list[dict]) -> None:
    if events:
        c.post("/v1/events", json={"events": events}).raise_for_status()


def run_phase(
    name: str, ws: Path, people: People, new_rows: list[dict], args: argparse.Namespace,
    online: dict, experiment: dict | None = None, active: int = 1, shadow: int | None = None,
) -> dict:  # fmt: skip
    """One simulation through the server: every request, its plays, the daily looks."""
    rng_arrive = np.random.default_rng(args.seed)  # the same arrivals in every phase
    # a simulated day lasts seconds: the same user's play of an item is attributed to the
    # impressions of the last 2 seconds (the page just shown), as a day's window would be
    main = _copy(ws, name, {"impressions": True, "attribution_window_s": 2.0, **online}, active)
    shown: list[Shown] = []
    looks: list[dict] = []
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        c = stack.enter_context(server(main))
        sh = None
        if shadow is not None:
            sh_ws = _copy(ws, name + "-shadow", {"impressions": False, "explore_rate": 0.0},
                          shadow)  # fmt: skip
            sh = stack.enter_context(server(sh_ws))
        for day in range(args.days + 1):
            if day == 1 and experiment is not None:  # after the pre-period
                c.put(f"/v1/admin/experiments/{experiment['name']}",
                      json=experiment).raise_for_status()  # fmt: skip
            if day == 2:  # the new items arrive
                for cl in [c, sh] if sh is not None else [c]:
                    now = time.time()
                    cl.post("/v1/items", json=[{**r, "created_at": now} for r in new_rows]
                            ).raise_for_status()  # fmt: skip
                time.sleep(3.0)  # their text vectors are encoded in the background
            arrivals = [u for u in people.users if rng_arrive.random() < args.arrive]
            for user in arrivals:
                ids, variant, rid, _ = _page(c, user)
                slot_item = None
                if sh is not None:
                    other, *_ = _page(sh, user)
                    slot_item = other[SLOT] if len(other) > SLOT else None
                # common random numbers: the same person on the same day draws the same
                # numbers in every phase, so a page that did not change gets the same plays
                rng_play = np.random.default_rng([args.seed, day, people.uidx[user]])
                p = people.p_play(user, ids)
                clicks = (rng_play.random(len(ids)) < p).astype(int).tolist()
                events = [{"user_id": user, "item_id": i, "event": "play", "request_id": rid,
                           "value": round(people.completion(user, i, rng_play), 3)}
                          for i, hit in zip(ids, clicks, strict=True) if hit]  # fmt: skip
                _send(c, events)
                if sh is not None:
                    _send(sh, [{k: v for k, v in e.items() if k != "request_id"} for e in events])
                shown.append(Shown(day, user, rid, ids, variant, clicks, slot_item))
            if experiment is not None and day >= 1:
                time.sleep(1.2)  # one flush interval: every impression is in the store
                r = c.get(f"/v1/admin/experiments/{experiment['name']}")
                r.raise_for_status()
                looks.append({"day": day, **r.json()})
            print(f"    {name}: day {day}, {len(arrivals)} people, "
                  f"{time.perf_counter() - started:.0f}s", flush=True)  # fmt: skip
        impressions = None
        if name == "explore" or name == "aa":
            time.sleep(1.2)
            from avrec.workspace import Workspace

            w = Workspace(main)
            try:
                impressions = w.store.impressions()
            finally:
                w.close()
    return {"shown": shown, "looks": looks, "impressions": impressions,
            "seconds": time.perf_counter() - started}  # fmt: skip


def sweep(ws: Path, people: People, new_rows: list[dict], args: argparse.Namespace,
          new: list[str]) -> None:  # fmt: skip
    """The slot alone (no content mix) at each rate and fresh share against no
    exploration at all; chosen: the most new-item impressions at a relative CTR loss of
    at most 3% (the issue's bound), the lower rate on a tie."""
    base = run_phase("none", ws, people, new_rows, args, {"explore_rate": 0.0, "mix_new": False})
    b = {"ctr": ctr(base["shown"]), "new_items": new_item_stats(base["shown"], set(new))}
    cells = []
    for rate in RATES:
        for share in SHARES:
            name = f"slot-{rate}-{share}"
            print(f"  phase {name} ...", flush=True)
            r = run_phase(
                name,
                ws,
                people,
                new_rows,
                args,
                {"explore_rate": rate, "explore_fresh_share": share, "mix_new": False},
            )
            a = {"ctr": ctr(r["shown"]), "new_items": new_item_stats(r["shown"], set(new))}
            cells.append({"explore_rate": rate, "fresh_share": share, **gain(b, a)})
    ok = [c for c in cells if c["ctr_relative_loss"] <= 0.03]
    chosen = max(ok, key=lambda c: (c["new_impressions"][1], -c["explore_rate"])) if ok else None
    out = {"args": vars(args), "baseline": b, "cells": cells, "chosen": chosen,
           "provenance": {"date": time.strftime("%Y-%m-%d"), "machine": provenance.machine(),
                          "commit": provenance.commit(("src", "benchmarks/online_sim.py"))},
           }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "online-sim-sweep.json").write_text(json.dumps(out, indent=2, default=float))
    print(json.dumps({"cells": cells, "chosen": chosen}, indent=1, default=float))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--arrive", type=float, default=0.5)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--explore-rate", type=float, default=0.3)  # chosen by --sweep
    ap.add_argument("--new-items", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fresh-share", type=float, default=0.9)  # chosen by --sweep
    ap.add_argument("--phases", default="aa,none,slot,explore,ab-popular,ab-close,second")
    ap.add_argument("--sweep", action="store_true", help="choose the exploration settings")
    ap.add_argument("--no-markdown", action="store_true")
    ap.add_argument("--markdown-only", action="store_true", help="BENCHMARKS.md from the JSON")
    args = ap.parse_args()
    if args.markdown_only:
        update_markdown(json.loads((RESULTS / "online-sim.json").read_text()))
        return
    phases = args.phases.split(",")

    from avrec.cli.datasets import get_loader
    from avrec.config import Settings

    s = Settings()
    data = get_loader("movielens-100k").load(s.data_dir, s.cache_dir, True)
    people = fit_people(data.events, args.seed)
    counts = data.events.group_by("item_id").len().filter(pl_col_len_ge(MIN_RATINGS))
    rng = np.random.default_rng(0)  # the same new items (and workspace) for every seed
    pool = sorted(counts["item_id"].to_list(), key=int)
    new = sorted(rng.choice(pool, args.new_items, replace=False).tolist(), key=int)
    new_rows = [
        {k: (json.loads(v) if k in ("categories", "people") and isinstance(v, str) else v)
         for k, v in row.items()
         if k in ("item_id", "title", "categories", "description", "people", "duration")}
        for row in data.items.filter(_in(new)).to_dicts()
    ]  # fmt: skip
    ws = build_workspace(new)
    plan = {"planned_looks": args.days, "sequential": "alpha_spending"}
    ab = lambda name, v: {"name": name, **plan, "variants": [  # noqa: E731
        {"name": "a", "share": 0.5, "model_version": 1},
        {"name": "b", "share": 0.5, "model_version": v}]}  # fmt: skip
    aa = {"name": "aa", **plan, "variants": [{"name": "a", "share": 0.5},
                                              {"name": "b", "share": 0.5}]}  # fmt: skip
    explore = {"explore_rate": args.explore_rate, "explore_fresh_share": args.fresh_share}
    specs = {
        "aa": ({"explore_rate": 0.0, "mix_new": True}, aa, 1, None),
        "none": ({"explore_rate": 0.0, "mix_new": False}, None, 1, None),
        "slot": ({**explore, "mix_new": False}, None, 1, None),
        "explore": ({**explore, "mix_new": True}, None, 1, 2),
        "ab-popular": ({"explore_rate": 0.0}, ab("ab-popular", 3), 1, None),
        "ab-close": ({"explore_rate": 0.0}, ab("ab-close", 2), 1, None),
        "second": ({"explore_rate": 0.0}, None, 2, None),
    }
    if args.sweep:  # choose the exploration settings (on a development seed)
        sweep(ws, people, new_rows, args, new)
        return
    ran: dict[str, dict] = {}
    for name in phases:
        print(f"  phase {name} ...", flush=True)
        online, exp, active, shadow = specs[name]
        ran[name] = run_phase(name, ws, people, new_rows, args, online, exp, active, shadow)
    res: dict = {"args": vars(args), "people": {"base": BASE, "slope": SLOPE, "noise": NOISE,
                 "users": len(people.users), "items": len(people.items)},
                 "new_items": new, "phases": {}}  # fmt: skip
    for name, r in ran.items():
        res["phases"][name] = {"seconds": r["seconds"], "requests": len(r["shown"]),
                               "ctr": ctr(r["shown"]), "slot_ctr": ctr(r["shown"], 1, SLOT),
                               "new_items": new_item_stats(r["shown"], set(new))}  # fmt: skip
    if "aa" in ran:
        res["aa"] = aa_replays(ran["aa"]["shown"], people, aa, args.runs, args.seed,
                               ran["aa"]["looks"])  # fmt: skip
        res["aa"]["server_looks"] = [{"day": lk["day"], **{k: lk["arms"]["b"].get(k) for k in
                                     ("users", "p_always_valid", "z", "boundary")}}
                                     for lk in ran["aa"]["looks"]]  # fmt: skip
    for name in ("ab-popular", "ab-close"):
        if name in ran:
            res[name] = detection(ran[name]["looks"], "b")
    res["exploration"] = {}
    for base, arm in (("none", "slot"), ("aa", "explore"), ("none", "aa"), ("none", "explore")):
        if base in ran and arm in ran:
            res["exploration"][f"{arm}/{base}"] = gain(res["phases"][base], res["phases"][arm])
    if "explore" in ran and "second" in ran:
        res["ope"] = ope(ran["explore"], ran["second"], args.explore_rate)
    res["provenance"] = {
        "date": time.strftime("%Y-%m-%d"), "machine": provenance.machine(),
        "commit": provenance.commit(("src", "benchmarks/online_sim.py", "configs")),
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "online-sim.json"
    out.write_text(json.dumps(res, indent=2, default=float))
    print(json.dumps({k: v for k, v in res.items() if k not in ("provenance", "new_items")},
                     indent=1, default=float)[:6000])  # fmt: skip
    if not args.no_markdown:
        update_markdown(res)


def pl_col_len_ge(n: int):  # noqa: ANN201
    import polars as pl

    return pl.col("len") >= n


def _in(ids: list[str]):  # noqa: ANN202
    import polars as pl

    return pl.col("item_id").is_in(ids)


if __name__ == "__main__":
    main()
