"""Consent to personalisation through the real ``avrec serve`` and ``avrec train``: without
it a user gets what an anonymous visitor gets, and the next model never saw their events."""

from __future__ import annotations

from tests.cli.test_cli import run
from tests.service.conftest import READ, WRITE, start


def _ids(r):
    assert r.status_code == 200, r.text
    return [i["item_id"] for i in r.json()["items"]]


def test_a_user_without_consent_gets_anonymous_answers_and_leaves_training(fresh_ws):
    srv = start(fresh_ws, {"AVREC_CACHE_S": "0"})
    try:
        with srv.client(READ) as c:
            mine = c.get("/v1/users/u5/recommendations", params={"k": 10})
            assert mine.json()["personalised"] is True and mine.json()["fallback"] is False
            anonymous = _ids(c.post("/v1/recommendations", json={"k": 10}))
            assert _ids(mine) != anonymous
            assert c.put("/v1/users/u5/consent", json={"personalisation": False}).status_code \
                == 403  # fmt: skip
        with srv.client(WRITE) as c:
            r = c.put("/v1/users/u5/consent", json={"personalisation": False})
            assert r.status_code == 200, r.text
            assert r.json() == {"user_id": "u5", "personalisation": False, "excluded": True}
            page = c.get("/v1/users/u5/recommendations", params={"k": 10})
            assert page.json()["personalised"] is False
            assert _ids(page) == anonymous
            assert _ids(c.get("/v1/users/u6/recommendations", params={"k": 10})) != anonymous
            r = c.post("/v1/ask", json={"query": "something funny", "user_id": "u5"})
            assert r.status_code == 200, r.text
            bad = c.put("/v1/users/u5/consent", json={"personalisation": "maybe"})
            assert bad.status_code == 422
    finally:
        srv.stop()
    r = run("-w", str(fresh_ws), "train")
    assert r.returncode == 0, r.stderr
    srv = start(fresh_ws, {"AVREC_CACHE_S": "0"})
    try:
        with srv.client(WRITE) as c:
            assert c.get("/v1/users/u5").json()["in_model"] is False  # never saw their events
            assert c.get("/v1/users/u6").json()["in_model"] is True
            r = c.put("/v1/users/u5/consent", json={"personalisation": True})
            assert r.json()["personalisation"] is True and r.json()["excluded"] is False
            assert c.get("/v1/users/u5/recommendations").json()["personalised"] is True
    finally:
        srv.stop()
