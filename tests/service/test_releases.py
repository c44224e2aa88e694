"""``avrec release`` and ``GET /v1/releases/{name}``: a released list is served as often as
asked without spending budget; a release past the day's budget is refused."""

from __future__ import annotations

import json

from tests.cli.test_cli import run
from tests.service.conftest import READ, start


def test_a_release_is_spent_once_and_served_many_times(fresh_ws):
    r = run("-w", str(fresh_ws), "release", "popular", "--k", "5", "--epsilon", "0.7", "--json")
    assert r.returncode == 0, r.stderr
    rel = json.loads(r.stdout)
    assert len(rel["items"]) == 5 and rel["epsilon"] == 0.7 and rel["delta"] == 1e-6
    assert rel["mechanism"] == "top_k" and rel["counts"] is None  # [privacy]'s default
    assert abs(rel["budget_left"] - 0.3) < 1e-9  # [privacy] release_budget_per_day 1.0
    r = run("-w", str(fresh_ws), "release", "trending", "--k", "5", "--epsilon", "0.7")
    assert r.returncode != 0 and "budget" in r.stderr and "nothing was released" in r.stderr
    r = run("-w", str(fresh_ws), "release", "stats", "--epsilon", "0.3", "--json")
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)
    assert stats["privacy"]["epsilon"] == 0.3 and stats["budget_left"] < 1e-9
    srv = start(fresh_ws)
    try:
        with srv.client(READ) as c:
            for _ in range(3):  # post-processing: no budget spent
                got = c.get("/v1/releases/popular")
                assert got.status_code == 200 and got.json()["items"] == rel["items"]
            assert c.get("/v1/releases/trending").status_code == 404  # refused, not kept
            assert c.get("/v1/releases/stats").json()["events"] == stats["events"]
            assert c.get("/v1/releases/secrets").status_code == 422
    finally:
        srv.stop()
