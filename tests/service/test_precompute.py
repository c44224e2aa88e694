"""``avrec precompute`` and the pages it keeps, served by the real ``avrec serve``: the same
page as one computed for the request, until the user's next event; erasure deletes it."""

from __future__ import annotations

import json

from tests.cli.test_cli import run
from tests.service.conftest import ADMIN, WRITE, start


def _page(c, user, **params):
    r = c.get(f"/v1/users/{user}/recommendations", params={"k": 5, **params})
    assert r.status_code == 200, r.text
    return r.json()


def test_precomputed_pages_are_served_until_the_users_next_event(fresh_ws):
    r = run("-w", str(fresh_ws), "precompute", "--k", "8", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["users"] == 40 and report["pages"] == 40
    srv = start(fresh_ws, {"AVREC_CACHE_S": "0"})
    try:
        with srv.client() as c:
            kept = _page(c, "u0")
            assert kept["precomputed"] is True
            # the same page computed for the request (a parameter that changes nothing but
            # skips the kept page: an exclusion of an item that is not on it)
            fresh = _page(c, "u0", exclude="no-such-item")
            assert fresh["precomputed"] is False
            assert [i["item_id"] for i in kept["items"]] == [i["item_id"] for i in fresh["items"]]
            assert [i["explanation"] for i in kept["items"]] == [
                i["explanation"] for i in fresh["items"]
            ]
            # further down the kept page, and past it
            assert _page(c, "u0", offset=3)["precomputed"] is True
            assert _page(c, "u0", offset=5)["precomputed"] is False
            assert _page(c, "u0", lang="zh")["precomputed"] is False  # kept in English
            assert _page(c, "stranger")["precomputed"] is False
            top = kept["items"][0]["item_id"]
        with srv.client(WRITE) as c:  # a play: the kept page is stale for this user only
            r = c.post("/v1/events", json={"user_id": "u0", "item_id": top, "event": "play"})
            assert r.status_code in (200, 201), r.text
            after = _page(c, "u0")
            assert after["precomputed"] is False
            assert top not in [i["item_id"] for i in after["items"]]
            assert _page(c, "u2")["precomputed"] is True
        with srv.client(ADMIN) as c:  # erasure deletes the user's kept page
            r = c.delete("/v1/users/u2")
            assert r.status_code == 200, r.text
            assert r.json()["erased"]["pages"] == 1
            assert _page(c, "u2")["precomputed"] is False
    finally:
        srv.stop()
