"""Acknowledged events survive a SIGKILL under write load; retries are not counted twice."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import pytest

from avrec.storage import open_store
from tests.service.conftest import ADMIN, WRITE, start


@pytest.mark.slow
def test_every_acknowledged_event_survives_a_kill(fresh_ws):
    srv = start(fresh_ws, workers=2)
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(w: int) -> None:
        with httpx.Client(base_url=srv.url, timeout=10,
                          headers={"Authorization": f"Bearer {WRITE}"}) as c:  # fmt: skip
            n = 0
            while not stop.is_set():
                keys = [f"w{w}-{n}-{j}" for j in range(5)]
                events = [
                    {"user_id": f"load{w}", "item_id": f"i{(n + j) % 24}", "event": "play",
                     "ts": 1e9 + n * 10 + j, "idempotency_key": k}
                    for j, k in enumerate(keys)
                ]  # fmt: skip
                n += 1
                try:
                    r = c.post("/v1/events", json={"events": events})
                except httpx.HTTPError:
                    return  # the server is gone: what was not acknowledged may be lost
                if r.status_code == 200:
                    with lock:
                        acked.extend(keys)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    deadline = time.time() + 60
    while len(acked) < 400 and time.time() < deadline:
        time.sleep(0.05)
    # SIGKILL the uvicorn supervisor and both workers, mid-write
    workers = _children(srv.proc.pid)
    assert len(workers) >= 2
    for pid in [srv.proc.pid, *workers]:
        os.kill(pid, signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(15)
    srv.proc.wait(10)
    with lock:
        done = list(acked)
    assert len(done) >= 400

    store = open_store(f"sqlite:///{fresh_ws / 'avrec.db'}")
    try:
        assert store.integrity_check() == "ok"
        stored = {(r[1], r[5]) for r in store.events_after(0) if r[1].startswith("load")}
    finally:
        store.close()
    expected = set()
    for k in done:
        w, n, j = (int(x) for x in k[1:].split("-"))
        expected.add((f"load{w}", 1e9 + n * 10 + j))
    assert expected <= stored  # every acknowledged event is there

    again = start(fresh_ws)
    try:
        c = again.client(WRITE)
        sent = []
        for k in done[:200]:
            w, n, j = (int(x) for x in k[1:].split("-"))
            sent.append({"user_id": f"load{w}", "item_id": f"i{(n + j) % 24}", "event": "play",
                         "ts": 1e9 + n * 10 + j + 0.5, "idempotency_key": k})  # fmt: skip
        r = c.post("/v1/events", json={"events": sent}).json()
        assert r["duplicates"] == 200 and r["accepted"] == 0  # a retry, not a new event
        n_events = again.client(ADMIN).get("/v1/users/load0/events", params={"limit": 1000})
        ts = [e["timestamp"] for e in n_events.json()["events"]]
        assert len(ts) == len(set(ts)) and not any(t % 1 == 0.5 for t in ts)
    finally:
        again.stop()


def _children(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
