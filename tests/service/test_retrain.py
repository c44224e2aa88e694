"""A retraining on demand swaps the bundle in every worker without failing a request, and
the two workers agree on what a user just did."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.service.conftest import ADMIN, READ, WRITE, start


@pytest.mark.slow
def test_retrain_swaps_without_dropping_requests(fresh_ws):
    srv = start(fresh_ws, {"AVREC_REFRESH_S": "0.5"}, workers=2)
    statuses: list[int] = []
    versions: set[str] = set()
    stop = threading.Event()

    def reader() -> None:
        with httpx.Client(base_url=srv.url, timeout=30,
                          headers={"Authorization": f"Bearer {READ}"}) as c:  # fmt: skip
            while not stop.is_set():
                r = c.get("/v1/users/u0/recommendations", params={"k": 5})
                statuses.append(r.status_code)
                versions.add(r.headers.get("x-model-version", ""))

    try:
        # two workers, fresh connections each time: both must see the event at once
        for n in range(6):
            item = f"i{12 + n}"
            ev = {"user_id": "switcher", "item_id": item, "event": "like"}
            assert srv.client(WRITE).post("/v1/events", json=ev).status_code == 200
            with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {READ}"}) as c:
                got = c.get("/v1/users/switcher/recommendations", params={"k": 10}).json()
            assert got["fallback"] is False and item not in [x["item_id"] for x in got["items"]]

        threads = [threading.Thread(target=reader) for _ in range(3)]
        for t in threads:
            t.start()
        admin = srv.client(ADMIN)
        started = admin.post("/v1/admin/retrain")
        assert started.status_code == 202 and started.json()["started"] is True
        assert admin.post("/v1/admin/retrain").json()["started"] is False  # one at a time
        deadline = time.time() + 300
        while time.time() < deadline and "pipeline-v2" not in versions:
            time.sleep(0.5)
        state = admin.get("/v1/admin/retrain").json()
        time.sleep(2)  # both workers swapped by now
        stop.set()
        for t in threads:
            t.join(30)
        assert state.get("ok") is not False, state
        assert "pipeline-v2" in versions, (versions, state)
        assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
        after = srv.client().get("/v1/users/switcher/recommendations", params={"k": 10})
        assert after.headers["x-model-version"] == "pipeline-v2"
        assert srv.client().get("/v1/users/switcher").json()["in_model"] is True  # learnt
    finally:
        stop.set()
        srv.stop()
