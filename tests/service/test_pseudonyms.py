"""Pseudonymous user ids (``[privacy] pseudonymous_ids``): through ``avrec ingest``,
``avrec train``, the real ``avrec serve`` and the CLI, the store never holds a platform's
own user id, and the same person is still recognised everywhere."""

from __future__ import annotations

import sqlite3

import polars as pl
import pytest

from avrec.errors import ConfigError
from avrec.privacy import Pseudonyms
from tests.cli.test_cli import run
from tests.conftest import write
from tests.service.conftest import ADMIN, READ, WRITE, start

KEY = {"AVREC_ID_KEY": "a-test-key-of-32-characters-long"}


def test_a_pseudonym_is_keyed_and_stable():
    p, q = Pseudonyms(b"k" * 16), Pseudonyms(b"j" * 16)
    assert p("alice") == p("alice") != p("bob")
    assert p("alice") != q("alice") and p("alice").startswith("p") and len(p("alice")) == 33
    assert p(p("alice")) != p("alice")  # a pseudonym sent back is hashed again, never kept
    df = pl.DataFrame({"user_id": ["alice", "bob", "alice", None]})
    assert p.frame(df)["user_id"].to_list() == [p("alice"), p("bob"), p("alice"), None]
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        Pseudonyms(b"short")


def _raw_ids_in(db, raw: list[str]) -> list[str]:
    """Every cell of every table of the SQLite store that holds one of ``raw``."""
    con = sqlite3.connect(db)
    found = []
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    for t in tables:
        for row in con.execute(f'SELECT * FROM "{t}"'):  # noqa: S608 - the store's own tables
            text = " ".join(map(str, row))
            found += [f"{t}: {r}" for r in raw if r in text]
    con.close()
    return found


def test_the_store_never_holds_a_raw_user_id(tmp_path):
    ws = tmp_path / "ws"
    assert run("init", str(ws)).returncode == 0
    toml = ws / "avrec.toml"
    toml.write_text(toml.read_text().replace("pseudonymous_ids = false", "pseudonymous_ids = true"))
    people = [f"person-{u}@example.org" for u in range(30)]
    lines = ["user_id,item_id,timestamp"] + [
        f"{p},i{(u + k) % 12},{1_700_000_000 + u * 10 + k}"
        for u, p in enumerate(people)
        for k in range(6)
    ]
    events = write(tmp_path / "e.csv", "\n".join(lines) + "\n")
    r = run("-w", str(ws), "ingest", "events", str(events))  # no key: refused, nothing kept
    assert r.returncode != 0 and "AVREC_ID_KEY" in r.stderr
    users = write(tmp_path / "u.csv", "user_id,country\n" + people[0] + ",NZ\n")
    assert run("-w", str(ws), "ingest", "events", str(events), env=KEY).returncode == 0
    assert run("-w", str(ws), "ingest", "users", str(users), env=KEY).returncode == 0
    r = run("-w", str(ws), "train", "--model", "ease", env=KEY)
    assert r.returncode == 0, r.stderr
    r = run("-w", str(ws), "recommend", "--model", "ease", "--user", people[1], "--json", env=KEY)
    assert r.returncode == 0 and people[1] in r.stdout and '"items": [' in r.stdout
    srv = start(ws, {**KEY, "AVREC_MODEL": "ease"})
    try:
        with srv.client(READ) as c:  # known under the raw id, through its pseudonym
            page = c.get(f"/v1/users/{people[2]}/recommendations", params={"k": 5})
            assert page.status_code == 200 and page.json()["fallback"] is False
            # a user id in the query string (the live rooms' affinity) is one too; the
            # list is logged as impressions under whatever id the route saw
            live = c.get("/v1/live", params={"user_id": people[1]})
            assert live.status_code == 200 and live.json()["user_id"] != people[1]
        with srv.client(WRITE) as c:
            new = {"user_id": "newcomer@example.org", "item_id": "i3", "event": "play"}
            assert c.post("/v1/events", json=new).status_code in (200, 201)
            batch = {"events": [{"user_id": "batch@example.org", "item_id": "i4"}]}
            assert c.post("/v1/events", json=batch).status_code in (200, 201)
            # a JSON body sent without its content type is not read (the middleware rewrites
            # JSON bodies only): refused, so no raw id gets in that way either
            bare = b'{"user_id": "bare@example.org", "item_id": "i5", "event": "play"}'
            assert c.post("/v1/events", content=bare).status_code == 422
        with srv.client(ADMIN) as c:
            held = c.get(f"/v1/users/{people[0]}/export").json()
            assert held["user"]["attributes"] == {"country": "NZ"} and len(held["events"]) == 6
            # the API's events were kept under the same pseudonyms the API reads them by
            played = c.get("/v1/users/newcomer@example.org/export").json()["events"]
            assert [e["item_id"] for e in played] == ["i3"]
            assert held["user_id"] != people[0]  # answers name the pseudonym
    finally:
        srv.stop()
    raw = [*people, "newcomer@example.org", "batch@example.org", "bare@example.org"]
    assert _raw_ids_in(ws / "avrec.db", raw) == []
    logged = srv.log.read_text()
    assert "/v1/users/p" in logged  # the access log names the pseudonym ...
    assert not [r for r in raw if r in logged]  # ... never the raw id
    r = run("-w", str(ws), "users", "export", people[0], env=KEY)
    assert r.returncode == 0 and "NZ" in r.stdout
