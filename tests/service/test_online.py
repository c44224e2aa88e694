"""Impressions through the real server: every served list is logged, an event that echoes
the list's request id is attributed to it, the online metrics are the operator's (admin
scope), and impressions a killed server had not stored yet are stored by the next start."""

from __future__ import annotations

import signal
import time

import pytest

from avrec.storage import open_store
from tests.service.conftest import ADMIN, READ, WRITE, start


def _stored(ws) -> int:
    s = open_store(f"sqlite:///{ws / 'avrec.db'}")
    try:
        return s.impressions().height
    finally:
        s.close()


@pytest.mark.slow
def test_impressions_attribution_and_online_metrics(fresh_ws):
    with open(fresh_ws / "avrec.toml", "a") as f:  # stored when asked (or at the next start)
        f.write("\n[online]\nflush_s = 300\n")
    srv = start(fresh_ws, {"AVREC_REFRESH_S": "0.5"})
    try:
        r = srv.client(READ).get("/v1/users/u0/recommendations", params={"k": 5})
        assert r.status_code == 200
        rid, first = r.headers["x-request-id"], r.json()["items"][0]["item_id"]
        srv.client(READ).get("/v1/users/u0/recommendations", params={"k": 5})  # a cached page
        assert srv.client(READ).get("/v1/items/i3/similar", params={"k": 3}).status_code == 200
        ev = {"user_id": "someone-else", "item_id": first, "event": "play", "value": 1.0,
              "request_id": rid}  # fmt: skip
        assert srv.client(WRITE).post("/v1/events", json=ev).json()["accepted"] == 1
        assert srv.client(READ).get("/v1/metrics/online").status_code == 403  # operator data
        got = srv.client(ADMIN).get("/v1/metrics/online").json()
        by = {r["surface"]: r for r in got["rows"]}
        assert by["recommendations"]["impressions"] == 10  # both pages were shown
        assert by["recommendations"]["lists"] == 2
        assert by["recommendations"]["ctr"] == pytest.approx(1 / 10)  # the echoed play
        assert by["similar"]["impressions"] == 3 and by["similar"]["ctr"] == 0
        text = srv.client().get("/metrics").text
        assert 'avrec_impressions_total{surface="recommendations"} 10.0' in text
        # a killed server: what it had not stored yet is stored by the next one
        r = srv.client(READ).post("/v1/recommendations", json={"items": ["i1"], "k": 4})
        assert r.status_code == 200
        srv.stop(signal.SIGKILL)
        assert _stored(fresh_ws) == 13  # the session's four were still in the journal
    finally:
        srv.stop()
    again = start(fresh_ws, {"AVREC_REFRESH_S": "0.5"})
    try:
        deadline = time.time() + 20
        while time.time() < deadline and _stored(fresh_ws) < 17:
            time.sleep(0.2)
        assert _stored(fresh_ws) == 17
        erased = again.client(ADMIN).delete("/v1/users/u0").json()
        assert erased["erased"]["impressions"] == 10
    finally:
        again.stop()


@pytest.mark.slow
def test_an_ab_experiment_splits_users_and_reports_its_arms(fresh_ws):
    srv = start(fresh_ws, {"AVREC_REFRESH_S": "0.5"})
    try:
        admin = srv.client(ADMIN)
        # the second arm is served registered version 1 (loaded for it; the active one here)
        body = {"variants": [{"name": "control", "share": 0.5},
                             {"name": "v1", "share": 0.5, "model_version": 1}]}  # fmt: skip
        assert srv.client(READ).put("/v1/admin/experiments/div", json=body).status_code == 403
        bad = {"variants": [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.7}]}
        assert admin.put("/v1/admin/experiments/div", json=bad).status_code == 422
        assert admin.put("/v1/admin/experiments/div", json=body).status_code == 200
        arms = {}
        for u in range(40):
            r = srv.client(READ).get(f"/v1/users/u{u}/recommendations", params={"k": 4})
            assert r.status_code == 200, r.text
            arms[f"u{u}"] = r.json()["variant"]
        assert set(arms.values()) == {"div:control", "div:v1"}
        again = srv.client(READ).get("/v1/users/u0/recommendations", params={"k": 4})
        assert again.json()["variant"] == arms["u0"]  # the same arm every time
        for u in range(0, 40, 3):  # some users play the first item they were shown
            first = srv.client(READ).get(f"/v1/users/u{u}/recommendations",
                                         params={"k": 4}).json()["items"][0]["item_id"]  # fmt: skip
            ev = {"user_id": f"u{u}", "item_id": first, "event": "play", "value": 1.0}
            assert srv.client(WRITE).post("/v1/events", json=ev).status_code == 200
        res = admin.get("/v1/admin/experiments/div").json()
        users = {a: res["arms"][a]["users"] for a in ("control", "v1")}
        assert users == {a: list(arms.values()).count(f"div:{a}") for a in ("control", "v1")}
        assert res["arms"]["control"]["mean"] > 0 and "p_always_valid" in res["arms"]["v1"]
        assert res["looks"] == 1 and admin.get("/v1/admin/experiments/div").json()["looks"] == 2
        assert admin.post("/v1/admin/experiments/div/stop").status_code == 200
        after = srv.client(READ).get("/v1/users/u1/recommendations", params={"k": 4})
        assert after.json()["variant"] is None
    finally:
        srv.stop()


@pytest.mark.slow
def test_exploration_fills_the_slot_and_logs_its_propensity(fresh_ws):
    with open(fresh_ws / "avrec.toml", "a") as f:
        f.write("\n[online]\nflush_s = 300\nexplore_rate = 1.0\nexplore_slot = 1\n")
    srv = start(fresh_ws)
    try:
        item = {"item_id": "brand-new", "title": "Brand new song", "categories": ["jazz"]}
        assert srv.client(ADMIN).post("/v1/items", json=item).status_code in (200, 201)
        r = srv.client(READ).get("/v1/users/u0/recommendations", params={"k": 4}).json()
        slot = r["items"][1]
        assert slot["sources"] == ["explore"] and slot["reasons"][0]["kind"] == "explore"
        got = srv.client(ADMIN).get("/v1/metrics/online").json()  # stores the journal
        assert got["rows"][0]["impressions"] == 4
        s = open_store(f"sqlite:///{fresh_ws / 'avrec.db'}")
        try:
            shown = s.impressions(user_id="u0").sort("position")
        finally:
            s.close()
        props = shown["propensity"].to_list()
        assert props[0] == props[2] == props[3] == 1.0
        assert 0 < props[1] < 1  # rate / the pool's size (every song is cold here)
        assert shown["item_id"].to_list()[1] == slot["item_id"]
        page2 = srv.client(READ).get("/v1/users/u0/recommendations",
                                     params={"k": 4, "offset": 4}).json()  # fmt: skip
        assert all(x["sources"] != ["explore"] for x in page2["items"])  # first pages only
    finally:
        srv.stop()
