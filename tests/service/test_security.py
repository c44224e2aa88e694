"""The holes of issue #15, each reproduced against the real server: files of the server read
through the cover route, server paths in answers, another user's events read with a read key
or a user token, failed keys tried without limit across workers, an erasure dropped while a
retraining ran, dev mode opened on every interface; and the field names of events."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.cli.test_cli import AVREC
from tests.service.conftest import ADMIN, READ, WRITE, start

MEDIA = Path(__file__).resolve().parents[3] / "shared" / "media"
COFFEE = MEDIA / "images" / "coffee.png"


def _no_server_path(body: str, ws: Path) -> None:
    assert str(ws) not in body and "/etc/" not in body and "/tmp/" not in body, body


def test_the_cover_route_never_serves_a_file_outside_the_media_roots(server):
    """Bug: with no media_roots configured, any path was allowed, and a write key could make
    the cover route return /etc/passwd, avrec.toml or the keys file."""
    w, r = server.client(WRITE), server.client(READ)
    for bad in ("/etc/passwd", "avrec.toml", "api-keys.txt", "avrec.db", "../../etc/passwd",
                f"file://{server.ws / 'avrec.toml'}", "media/../avrec.toml"):  # fmt: skip
        got = w.post("/v1/items", json={"item_id": "x", "image": bad})
        assert got.status_code == 422, (bad, got.text)
        assert got.json()["code"] == "invalid_media" and "image" in got.json()["message"]
        _no_server_path(got.text, server.ws)
    # a path stored by other means (a catalogue file ingested) is still never served
    from avrec.workspace import Workspace

    ws = Workspace(server.ws)
    import polars as pl

    with ws.store.transaction():
        ws.store.upsert_items(pl.DataFrame({"item_id": ["planted"], "image": ["/etc/passwd"]}))
        ws.store.record_change("item", "planted")
    ws.close()
    got = r.get("/v1/items/planted/image")
    assert got.status_code == 404 and "root:" not in got.text
    _no_server_path(got.text, server.ws)


def test_a_symlink_that_leaves_the_media_folder_is_refused(fresh_ws):
    media = fresh_ws / "media"
    media.mkdir(exist_ok=True)
    (media / "escape.png").symlink_to("/etc/passwd")
    (media / "loop-a.png").symlink_to(media / "loop-b.png")  # bug #16: a loop was a 500
    (media / "loop-b.png").symlink_to(media / "loop-a.png")
    if COFFEE.is_file():
        shutil.copy(COFFEE, media / "coffee.png")
    else:
        (media / "coffee.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 100)
    srv = start(fresh_ws)
    try:
        w, r = srv.client(WRITE), srv.client(READ)
        got = w.post("/v1/items", json={"item_id": "esc", "image": "media/escape.png"})
        assert got.status_code == 422
        loop = w.post("/v1/items", json={"item_id": "loop", "image": "media/loop-a.png"})
        assert loop.status_code == 422 and loop.json()["code"] == "invalid_media", loop.text
        assert loop.json()["message"] == "image: media/loop-a.png: symlink loop"
        # inside the workspace's media/ folder: accepted, served, and answered as a URL
        ok = w.post("/v1/items", json={"item_id": "cup", "title": "Coffee", "image":
                                       "media/coffee.png"})  # fmt: skip
        assert ok.status_code == 201, ok.text
        item = r.get("/v1/items/cup").json()
        assert item["image"] == "/v1/items/cup/image"
        cover = r.get(item["image"])
        assert cover.status_code == 200
        assert cover.content == (media / "coffee.png").read_bytes()
    finally:
        srv.stop()


def test_answers_carry_the_cover_route_never_a_server_path(fresh_ws):
    """Bug: every item in API answers carried ``image`` as the server's absolute path."""
    from avrec.workspace import Workspace

    media = fresh_ws / "media"
    media.mkdir(exist_ok=True)
    (media / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 64)
    ws = Workspace(fresh_ws)
    import polars as pl

    # the trained items get covers inside the media folder, stored as absolute paths
    ids = [f"i{i}" for i in range(24)]
    with ws.store.transaction():
        ws.store.upsert_items(pl.DataFrame({"item_id": ids, "image": [str(media / "c.png")] * 24}))
    ws.close()
    srv = start(fresh_ws)
    try:
        r = srv.client(READ)
        recs = r.get("/v1/users/u0/recommendations", params={"k": 5})
        assert recs.status_code == 200
        items = recs.json()["items"]
        assert items and all(x["image"] == f"/v1/items/{x['item_id']}/image" for x in items)
        _no_server_path(recs.text, fresh_ws)
        hits = r.get("/v1/search", params={"q": "piano"})
        assert hits.status_code == 200 and all(
            h["image"].startswith("/v1/items/") for h in hits.json()["items"]
        )
        _no_server_path(hits.text, fresh_ws)
        one = r.get("/v1/items/i0")
        _no_server_path(one.text, fresh_ws)
        assert r.get("/v1/items/i0/image").content == (media / "c.png").read_bytes()
    finally:
        srv.stop()


def test_a_server_error_answers_with_its_request_id_only(trained):
    """Bug: a domain error turned 500 answered its type and message, paths included."""
    from fastapi.testclient import TestClient

    from avrec.errors import StoreError
    from avrec.service.app import create_app
    from avrec.service.settings import ServiceSettings
    from avrec.service.state import ServiceState
    from avrec.workspace import Workspace

    st = ServiceState(Workspace(trained))
    app = create_app(ServiceSettings(workspace=trained, dev=True, log_json=True), state=st)

    @app.get("/boom")
    def boom() -> None:
        raise StoreError(f"cannot open SQLite store {trained / 'avrec.db'}: disk I/O error")

    with TestClient(app, raise_server_exceptions=False) as c:
        got = c.get("/boom", headers={"X-Request-ID": "rid-123"})
    assert got.status_code == 500
    assert got.json() == {"code": "internal", "request_id": "rid-123",
                          "message": "internal error; the request id is in the log"}  # fmt: skip
    st.ws.close()


def test_user_tokens_act_for_their_user_only(server):
    """Bug: any read key could list any user's events, their searches and comments."""
    a, r, w = server.client(ADMIN), server.client(READ), server.client(WRITE)
    assert r.get("/v1/users/u1/events").status_code == 403
    assert w.get("/v1/users/u1/events").status_code == 403
    assert a.get("/v1/users/u1/events").status_code == 200
    # a read key cannot mint; an admin or a tokens key can
    assert r.post("/v1/tokens", json={"user_id": "u1"}).status_code == 403
    minted = a.post("/v1/tokens", json={"user_id": "u1", "ttl_s": 300})
    assert minted.status_code == 201
    body = minted.json()
    assert body["user_id"] == "u1" and time.time() < body["expires_at"] <= time.time() + 301
    t = server.client(body["token"])
    assert t.get("/v1/users/u1/recommendations", params={"k": 3}).status_code == 200
    assert t.get("/v1/users/u2/recommendations").status_code == 403
    assert t.get("/v1/users/u1/events").status_code == 403  # events are read by admin only
    assert t.get("/v1/users/u2/events").status_code == 403
    assert t.get("/v1/search", params={"q": "piano"}).status_code == 200
    assert t.post("/v1/ask", json={"query": "rock"}).status_code == 200
    assert t.post("/v1/ask", json={"query": "rock", "user_id": "u2"}).status_code == 403
    mine = {"user_id": "u1", "item_id": "i3", "event": "like"}
    assert t.post("/v1/events", json=mine).status_code == 200
    theirs = {"events": [mine, {**mine, "user_id": "u2"}]}
    assert t.post("/v1/events", json=theirs).status_code == 403
    # nothing else: no catalogue writes, no users, no admin
    assert t.post("/v1/items", json={"item_id": "t1"}).status_code == 403
    assert t.get("/v1/users/u1").status_code == 403
    assert t.post("/v1/admin/retrain").status_code == 403
    # a forged or expired token is no token
    head, claims, sig = body["token"].split(".")
    assert server.client(f"{head}.{claims}.{sig[::-1]}").get(
        "/v1/users/u1/recommendations").status_code == 401  # fmt: skip
    import jwt

    secret = (server.ws / "token-secret").read_text().strip().encode()
    old = jwt.encode({"sub": "u1", "aud": "avrec-user", "exp": int(time.time()) - 5}, secret,
                     algorithm="HS256")  # fmt: skip
    assert server.client(old).get("/v1/users/u1/recommendations").status_code == 401
    assert oct((server.ws / "token-secret").stat().st_mode)[-3:] == "600"


def test_a_tokens_key_only_mints(fresh_ws):
    key = "tokens-key-0123456789abcdef"
    srv = start(fresh_ws, env={"AVREC_API_KEYS": f"{key}:tokens,{READ}:read"})
    try:
        c = srv.client(key)
        assert c.post("/v1/tokens", json={"user_id": "u3"}).status_code == 201
        assert c.get("/v1/users/u3/recommendations").status_code == 403
        assert c.get("/v1/search", params={"q": "x"}).status_code == 403
    finally:
        srv.stop()


def test_failed_keys_are_limited_per_address_across_workers(fresh_ws):
    """Bug: failed authentication was never throttled, and limits lived in one process."""
    srv = start(fresh_ws, env={"AVREC_AUTH_FAIL_LIMIT": "6"}, workers=2)
    try:
        # a fresh connection per request, so the kernel spreads them over both workers
        def get(key: str) -> httpx.Response:
            with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {key}"},
                              timeout=30) as c:  # fmt: skip
                return c.get("/v1/users/u0/recommendations", params={"k": 2})

        assert get(READ).status_code == 200
        codes = [get(f"guess-{n:020d}").status_code for n in range(6)]
        assert codes[:5] == [401] * 5 and codes[5] == 429
        # blocked now on every worker, even with a valid key, until the window ends
        after = [get(READ) for _ in range(12)]
        assert all(x.status_code == 429 for x in after)
        assert int(after[0].headers["Retry-After"]) >= 1
        pids = {int(line.split()[0]) for line in subprocess.run(
            ["pgrep", "-P", str(srv.proc.pid)], capture_output=True, text=True
        ).stdout.split()}  # fmt: skip
        assert len(pids) >= 2  # two workers really served
    finally:
        srv.stop()


def test_an_erasure_during_a_retraining_is_honoured_by_another(fresh_ws):
    """Bug: erasing a user while a retraining ran answered "already running" and dropped the
    retraining that would forget them; the running one may have read their events."""
    srv = start(fresh_ws, env={"AVREC_RETRAIN_ON_ERASURE": "1"})
    try:
        a = srv.client(ADMIN)
        first = a.post("/v1/admin/retrain").json()
        assert first["retrain"] == "started"
        erased = a.delete("/v1/users/u7")
        assert erased.status_code == 200 and erased.json()["retrain"] == "queued"
        deadline = time.time() + 300
        state = {}
        while time.time() < deadline:
            state = a.get("/v1/admin/retrain").json()
            if state.get("runs") == 2 and not state.get("running"):
                break
            time.sleep(1)
        assert state.get("runs") == 2 and state.get("ok"), state
        while time.time() < deadline and a.get("/v1/admin/retrain").json().get(
            "model_version") != "pipeline-v3":  # fmt: skip
            time.sleep(0.5)
        assert a.get("/v1/admin/retrain").json()["model_version"] == "pipeline-v3"
        user = a.get("/v1/users/u7")
        assert user.status_code == 404
        recs = a.get("/v1/users/u7/recommendations").json()
        assert recs["fallback"] is True
    finally:
        srv.stop()


def test_the_schedule_survives_a_broken_store(trained, caplog):
    """Bug: an error of the store in the scheduled retraining's turn killed its thread."""
    from avrec.service.app import scheduled_turn
    from avrec.service.state import ServiceState
    from avrec.workspace import Workspace

    st = ServiceState(Workspace(trained))
    started = []
    st.retrain = lambda: started.append(1) or "started"  # the turn, not a real training
    st.store.close()  # a real fault: the connection is gone
    assert scheduled_turn(st, 3600.0) is False
    assert "scheduled retraining failed" in caplog.text
    st.store = Workspace(trained).store  # the store is back
    assert scheduled_turn(st, 3600.0) is True and started == [1]
    st.store.delete_state("lease", f"retrain-{int(time.time() // 3600.0)}")
    st.store.close()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dev_mode_refuses_an_address_others_can_reach(trained):
    env = {k: v for k, v in os.environ.items() if k != "AVREC_API_KEYS"}
    r = subprocess.run([AVREC, "-w", str(trained), "serve", "--dev", "--host", "0.0.0.0",
                        "--port", str(_port())], capture_output=True, text=True, env=env,
                       timeout=120)  # fmt: skip
    assert r.returncode != 0 and "--i-know-it-is-open" in (r.stdout + r.stderr)
    port = _port()
    proc = subprocess.Popen([AVREC, "-w", str(trained), "serve", "--dev", "--host", "0.0.0.0",
                             "--port", str(port), "--i-know-it-is-open"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)  # fmt: skip
    try:
        line = ""
        for line in proc.stdout:  # the first log lines come before it
            if "listening on" in line:
                break
        assert f"listening on http://0.0.0.0:{port} (every interface)" in line, line
        assert "dev mode" in line
    finally:
        proc.kill()
        proc.wait(20)


def test_events_take_the_field_names_of_event_files(server):
    """Bug: files say ``event`` and ``timestamp``, the API said ``type`` and ``ts``; a row
    ingested from a file and posted as JSON was a 422."""
    w, a = server.client(WRITE), server.client(ADMIN)
    row = {"user_id": "fields", "item_id": "i2", "event": "like",
           "timestamp": "2024-05-01T12:00:00Z"}  # fmt: skip
    got = w.post("/v1/events", json=row)
    assert got.status_code == 200 and got.json()["accepted"] == 1
    short = {"user_id": "fields", "item_id": "i3", "type": "play", "ts": 1714564800.0}
    assert w.post("/v1/events", json=short).json()["accepted"] == 1
    assert w.post("/v1/events", json={**row, "timestamp": "yesterday"}).status_code == 422
    events = a.get("/v1/users/fields/events").json()["events"]
    assert {(e["event"], e["timestamp"]) for e in events} == {
        ("like", 1714564800.0),
        ("play", 1714564800.0),
    }
    assert all("type" not in e and "ts" not in e for e in events)


@pytest.mark.parametrize("ref", ["/etc/passwd", "../outside.png"])
def test_workspace_media_roots(tmp_path, ref):
    """A workspace reads local media from its media/ folder, its configured roots and the
    loaded datasets' folders only; nothing else."""
    from avrec.errors import MediaError
    from avrec.workspace import Workspace

    ws = Workspace.init(tmp_path / "ws")
    src = ws.media_source()
    assert (ws.root / "media").is_dir() and src.roots == [ws.root / "media"]
    with pytest.raises(MediaError, match="outside the allowed media roots"):
        src.check(ref)
    extra = tmp_path / "posters"
    extra.mkdir()
    ws.register_media_root(extra, "dataset:test")
    assert ws.media_source().check(str(extra / "1.jpg")) == (extra / "1.jpg").resolve()
    ws.close()
