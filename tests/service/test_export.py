"""The right of access: everything held about a person, through the real ``avrec serve``
and ``avrec users export``; the same set erasure deletes."""

from __future__ import annotations

import json

from tests.cli.test_cli import run
from tests.service.conftest import ADMIN, WRITE, start


def test_everything_held_about_a_user_is_exported_to_an_admin_only(fresh_ws, tmp_path):
    r = run("-w", str(fresh_ws), "precompute", "--k", "5", "--json")
    assert r.returncode == 0, r.stderr
    srv = start(fresh_ws)
    try:
        with srv.client(WRITE) as c:
            said = {"user_id": "u3", "event": "search", "text": "我想看轻松的喜剧"}
            r = c.post("/v1/events", json=said)
            assert r.status_code in (200, 201), r.text
            r = c.post("/v1/ask", json={"query": "something funny", "user_id": "u3",
                                        "conversation_id": "conv-u3"})  # fmt: skip
            assert r.status_code == 200, r.text
            assert c.get("/v1/users/u3/export").status_code == 403  # not an admin key
        with srv.client(ADMIN) as c:
            r = c.get("/v1/users/u3/export")
            assert r.status_code == 200, r.text
            held = r.json()
            assert held["user_id"] == "u3" and held["user"]["user_id"] == "u3"
            texts = [e.get("text") for e in held["events"]]
            assert "我想看轻松的喜剧" in texts  # their words, as they wrote them
            assert len(held["events"]) == held["user"]["events"]
            assert all("timestamp" in e and "user_id" not in e for e in held["events"])
            assert "conv-u3" in held["conversations"]
            assert held["page"] is not None  # the precomputed page
            assert c.get("/v1/users/nobody-at-all/export").status_code == 404
        srv.stop()
        out = tmp_path / "u3.json"
        r = run("-w", str(fresh_ws), "users", "export", "u3", "--out", str(out))
        assert r.returncode == 0, r.stderr
        assert json.loads(out.read_text())["events"] == held["events"]
        srv = start(fresh_ws)
        with srv.client(ADMIN) as c:  # erased: nothing is left to export
            assert c.delete("/v1/users/u3").status_code == 200
            assert c.get("/v1/users/u3/export").status_code == 404
    finally:
        srv.stop()
    r = run("-w", str(fresh_ws), "users", "export", "u3")
    assert r.returncode != 0 and "nothing is held" in r.stderr
