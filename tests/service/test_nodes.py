"""Two ``avrec serve`` nodes, each with its own folder, on one real PostgreSQL: they behave
as one service (issue #18). Events, catalogue changes and new model versions reach the other
node through LISTEN/NOTIFY; bundles come from the database; a database restart gives 503 with
Retry-After, then both nodes carry on by themselves; a SIGKILLed node loses no acknowledged
event; rate limits hold across nodes."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from avrec.storage import open_store
from avrec.storage.pglocal import LocalPostgres, postgres_bindir
from tests.cli.test_cli import run, song_workspace
from tests.service.conftest import ADMIN, READ, WRITE, Server, start

pytestmark = pytest.mark.slow


@dataclass
class Nodes:
    pg: LocalPostgres
    url: str
    a: Server
    b: Server
    ws_a: Path
    env: dict[str, str]


def _start_pair(root: Path, env: dict[str, str]) -> tuple[Server, Server]:
    return start(root / "ws", env=env), start(root / "b", env=env)


@pytest.fixture(scope="module")
def nodes(tmp_path_factory) -> Iterator[Nodes]:
    if postgres_bindir() is None:
        pytest.skip("PostgreSQL is not installed (make test installs Debian's postgresql)")
    pg = LocalPostgres().start()
    url = pg.create_database("nodes")
    env = {"AVREC_STORE_URL": url, "AVREC_REFRESH_S": "0.5"}
    root = tmp_path_factory.mktemp("nodes")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AVREC_STORE_URL", url)
        ws = song_workspace(root)  # trained through the CLI into the database
        assert run("init", str(root / "b")).returncode == 0  # node b: a folder of its own
    # neither node may read the other's files: the bundle comes from the database
    shutil.move(ws / "artifacts" / "models", root / "not-shared")
    a, b = _start_pair(root, env)
    yield Nodes(pg, url, a, b, ws, env)
    for s in (a, b):
        s.stop()
    pg.stop()


def _top(srv: Server, user: str) -> list[str]:
    with srv.client(READ) as c:
        r = c.get(f"/v1/users/{user}/recommendations", params={"k": 5, "explain": "false"})
    assert r.status_code == 200, r.text
    return [x["item_id"] for x in r.json()["items"]]


def test_both_nodes_serve_the_bundle_from_the_database(nodes):
    ready = [httpx.get(s.url + "/health/ready").json() for s in (nodes.a, nodes.b)]
    assert ready[0]["model_version"] == ready[1]["model_version"] == "pipeline-v1"
    assert (nodes.ws_a.parent / "b" / "artifacts" / "store-bundles" / "pipeline" / "1").is_dir()
    assert _top(nodes.a, "u0") == _top(nodes.b, "u0")


def test_a_play_on_one_node_is_excluded_on_the_other_at_once(nodes):
    for user in ("u2", "u4", "u6"):
        first = _top(nodes.b, user)[0]
        t = time.perf_counter()
        with nodes.a.client(WRITE) as c:
            r = c.post("/v1/events", json={"user_id": user, "item_id": first, "event": "play"})
        assert r.status_code == 200, r.text
        while first in _top(nodes.b, user):  # node b must learn it without a restart
            assert time.perf_counter() - t < 5, "node b still recommends the played item"
            time.sleep(0.01)


def test_a_catalogue_change_and_a_deletion_reach_the_other_node(nodes):
    with nodes.a.client(ADMIN) as c:
        r = c.patch("/v1/items/i3", json={"title": "Song three, remastered",
                                        "categories": ["jazz"]})  # fmt: skip
        assert r.status_code in (200, 201), r.text
    deadline = time.time() + 5
    while True:
        with nodes.b.client(READ) as c:
            got = c.get("/v1/items/i3")
        if got.status_code == 200 and got.json()["title"] == "Song three, remastered":
            break
        assert time.time() < deadline, got.text
        time.sleep(0.05)
    victim = _top(nodes.b, "u8")[0]
    with nodes.a.client(ADMIN) as c:
        assert c.delete(f"/v1/items/{victim}").status_code == 200
    deadline = time.time() + 5
    while victim in _top(nodes.b, "u8"):
        assert time.time() < deadline
        time.sleep(0.02)


def test_a_retraining_on_one_node_swaps_every_node(nodes):
    r = run("-w", str(nodes.ws_a), "train", env=nodes.env)
    assert r.returncode == 0, r.stderr
    assert "bundle stored in postgresql://avrec:***@" in r.stdout
    deadline = time.time() + 60
    while True:
        labels = [httpx.get(s.url + "/health/ready").json()["model_version"]
                  for s in (nodes.a, nodes.b)]  # fmt: skip
        if labels == ["pipeline-v2", "pipeline-v2"]:
            break
        assert time.time() < deadline, labels
        time.sleep(0.2)


def test_a_database_restart_gives_503_then_both_nodes_recover(nodes):
    nodes.pg.stop(remove=False)
    try:
        with nodes.a.client(WRITE) as c:
            r = c.post("/v1/events", json={"user_id": "u1", "item_id": "i1", "event": "play"})
        assert r.status_code == 503 and r.headers.get("Retry-After") == "1", r.text
        assert r.json()["code"] == "store_unavailable"
        assert "avrec:" not in r.text and nodes.pg.password not in r.text
    finally:
        nodes.pg.start()
    deadline = time.time() + 30
    for srv in (nodes.a, nodes.b):
        while True:
            with srv.client(WRITE) as c:
                r = c.post("/v1/events", json={"user_id": "u1", "item_id": "i2", "event": "play"})
            if r.status_code == 200:
                break
            assert time.time() < deadline, r.text
            time.sleep(0.2)


def test_a_killed_node_loses_no_acknowledged_event(nodes):
    acked: list[tuple[str, float]] = []
    lock = threading.Lock()
    stop = threading.Event()
    victim = start(nodes.ws_a, env=nodes.env)  # a third node, to kill

    def writer(w: int) -> None:
        with httpx.Client(base_url=victim.url, timeout=10,
                          headers={"Authorization": f"Bearer {WRITE}"}) as c:  # fmt: skip
            n = 0
            while not stop.is_set():
                batch = [(f"kill{w}", 1.7e9 + n * 10 + j) for j in range(5)]
                n += 1
                try:
                    r = c.post("/v1/events", json={"events": [
                        {"user_id": u, "item_id": "i5", "event": "play", "ts": ts,
                         "idempotency_key": f"{u}-{ts}"} for u, ts in batch]})  # fmt: skip
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    with lock:
                        acked.extend(batch)
                else:
                    refused.append(f"{r.status_code} {r.text[:300]}")

    refused: list[str] = []
    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    deadline = time.time() + 60
    while len(acked) < 200 and time.time() < deadline:
        time.sleep(0.05)
    os.kill(victim.proc.pid, signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(15)
    victim.proc.wait(10)
    assert len(acked) >= 200, refused[:3]
    with open_store(nodes.url) as s:
        stored = {(r[1], r[5]) for r in s.events_after(0) if r[1].startswith("kill")}
    assert set(acked) <= stored


def test_rate_limits_hold_across_nodes(nodes):
    from avrec.service.security import RateLimiter

    a, b = open_store(nodes.url), open_store(nodes.url)
    try:
        la, lb = RateLimiter("3/minute", a), RateLimiter("3/minute", b)
        assert [la.hit("k"), lb.hit("k"), la.hit("k")] == [None, None, None]
        wait = lb.hit("k")  # the fourth, on the other node
        assert wait is not None and 0 < wait <= 60
        assert la.hit("other") is None  # per client
    finally:
        a.close()
        b.close()
