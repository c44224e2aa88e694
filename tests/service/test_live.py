"""Live rooms through the real server: rooms live now lead a user's first page and
``GET /v1/live``, ranked by the engagement of the last minutes (custom event types) and by
the user's liking of the host; a room leaves every list the moment it ends, whether its
window closes by the clock or is closed through the API."""

from __future__ import annotations

import time

import pytest

from tests.service.conftest import ADMIN, READ, WRITE, start


def _room(item_id: str, host: str, until: float) -> dict:
    return {"item_id": item_id, "title": f"Room {item_id}", "categories": ["live"],
            "people": [{"name": host, "role": "host"}],
            "available_from": time.time() - 60, "available_until": until}  # fmt: skip


def _ids(resp) -> list[str]:
    assert resp.status_code == 200, resp.text
    return [x["item_id"] for x in resp.json()["items"]]


@pytest.mark.slow
def test_live_rooms_lead_and_leave_at_once(fresh_ws):
    toml = fresh_ws / "avrec.toml"
    toml.write_text(toml.read_text().replace(
        "custom_types = []", 'custom_types = ["join", "gift", "chat"]'))  # fmt: skip
    srv = start(fresh_ws, {"AVREC_REFRESH_S": "0.5"})
    try:
        admin, write, read = srv.client(ADMIN), srv.client(WRITE), srv.client(READ)
        hour = time.time() + 3600
        rooms = [_room("quiet", "ann", hour), _room("busy", "bob", hour),
                 _room("short", "cat", time.time() + 8)]  # fmt: skip
        assert admin.post("/v1/items", json=rooms).status_code in (200, 201)
        for n in range(5):  # people join the busy room and send gifts
            ev = [{"user_id": f"viewer{n}", "item_id": "busy", "event": "join"},
                  {"user_id": f"viewer{n}", "item_id": "busy", "event": "gift"}]  # fmt: skip
            assert write.post("/v1/events", json={"events": ev}).json()["accepted"] == 2
        live = _ids(read.get("/v1/live"))
        assert live[0] == "busy" and set(live) == {"quiet", "busy", "short"}
        page = read.get("/v1/users/u0/recommendations", params={"k": 5}).json()
        assert page["items"][0]["item_id"] == "busy"
        assert (
            page["items"][0]["sources"] == ["live"]
            and "Live now" in page["items"][0]["explanation"]
        )
        assert len(page["items"]) == 5
        # someone who liked four of ann's earlier shows: her room, quiet as it is, comes
        # first for them (log(1 + 30) < 4), and not for anyone else
        shows = [{"item_id": f"ann-show-{n}", "title": f"Ann's show {n}",
                  "people": [{"name": "ann", "role": "host"}]} for n in range(4)]  # fmt: skip
        assert admin.post("/v1/items", json=shows).status_code in (200, 201)
        likes = [{"user_id": "fan", "item_id": f"ann-show-{n}", "event": "like"}
                 for n in range(4)]  # fmt: skip
        assert write.post("/v1/events", json={"events": likes}).json()["accepted"] == 4
        assert _ids(read.get("/v1/live", params={"user_id": "fan"}))[0] == "quiet"
        assert _ids(read.get("/v1/live", params={"user_id": "u3"}))[0] == "busy"
        # closed through the API: gone from every list at once
        ended = {**rooms[1], "available_until": time.time() - 1}
        assert admin.post("/v1/items", json=ended).status_code in (200, 201)
        assert "busy" not in _ids(read.get("/v1/live"))
        assert "busy" not in _ids(read.get("/v1/users/u0/recommendations", params={"k": 5}))
        # closed by the clock: the cached page goes stale at the window's edge
        before = _ids(read.get("/v1/users/u1/recommendations", params={"k": 24}))
        assert "short" in before
        time.sleep(max(0.0, rooms[2]["available_until"] - time.time()) + 0.5)
        after = _ids(read.get("/v1/users/u1/recommendations", params={"k": 24}))
        assert "short" not in after and "short" not in _ids(read.get("/v1/live"))
    finally:
        srv.stop()
