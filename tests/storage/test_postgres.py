"""What only the PostgreSQL store has: a real server, partitions by month, several nodes
on one database, migrations, and clear errors for bad URLs and credentials."""

from __future__ import annotations

import math
import threading

import polars as pl
import pytest

from avrec.errors import StoreError
from avrec.storage import open_store
from avrec.storage.postgres import BULK_ROWS, SCHEMA_VERSION, PostgresStore


def events(rows):
    return pl.DataFrame(rows, schema=["user_id", "item_id", "event", "ts"], orient="row")


def test_bad_url_and_wrong_password_are_one_clear_line(pg_server, pg_url):
    wrong = pg_url.replace(pg_server.password, "not-the-password")
    with pytest.raises(StoreError) as err:
        open_store(wrong)
    msg = str(err.value)
    assert "password authentication failed" in msg and "\n" not in msg
    assert "not-the-password" not in msg and ":***@" in msg  # never echoes the secret
    with pytest.raises(StoreError, match="cannot connect"):
        open_store(f"postgresql://avrec@127.0.0.1:{pg_server.port}/no_such_database")
    with pytest.raises(StoreError, match="bad PostgreSQL URL|cannot connect"):
        open_store("postgresql://avrec@127.0.0.1:notaport/x")


def test_events_go_to_monthly_partitions_and_old_months_drop_whole(pg_url):
    s = open_store(pg_url)
    jan, feb, mar = 1704067200.0, 1706745600.0, 1709251200.0  # 2024-01-01, -02-01, -03-01
    s.add_events(events([("u", "a", "play", jan + 5), ("u", "b", "play", feb + 5),
                         ("v", "a", "play", mar + 5)]))  # fmt: skip
    parts = {r[0] for r in s._rows(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'events'")}  # fmt: skip
    assert parts == {"events_y2024m01", "events_y2024m02", "events_y2024m03"}
    assert s.drop_events_before(feb + 10) == 1  # January ends before; February does not
    assert s.events()["ts"].to_list() == [feb + 5, mar + 5]
    s.add_events(events([("u", "c", "play", jan + 9)]))  # January comes back when written to
    assert s.counts()["events"] == 3
    # the last instant of a month is that month's, in a served batch and in a bulk one
    edge = math.nextafter(1717200000.0, 0)  # the float just before 2024-06-01: May
    s.add_events(events([("u", "d", "play", edge)]))
    s.add_events(pl.DataFrame({"user_id": "w", "item_id": [f"i{k}" for k in range(2000)],
                               "event": "play", "ts": edge}))  # fmt: skip
    assert s.counts()["events"] == 2004
    assert s._one("SELECT count(*) FROM events_y2024m05 WHERE ts = %s", (edge,))[0] == 2001
    s.close()


def test_two_nodes_share_one_database(pg_url):
    a, b = open_store(pg_url), open_store(pg_url)
    a.add_events(events([("ua", "i1", "play", 1.0), ("ua", "i2", "play", 2.0)]))
    b.add_events(events([("ub", "i2", "play", 3.0)]))
    a.add_events(events([("ub", "i3", "like", 4.0)]))
    got = b.events()
    assert got["user_id"].to_list() == ["ua", "ua", "ub", "ub"]
    assert b.counts() == a.counts() and a.counts()["users"] == 2 and a.counts()["items"] == 3
    # what node b sees after its last event id is what node a wrote
    last = b.last_event_id()
    a.add_events(events([("uc", "i1", "play", 5.0)]))
    assert [r[1:4] for r in b.events_after(last)] == [("uc", "i1", "play")]
    a.close()
    b.close()


def test_concurrent_writers_never_hide_an_id_from_a_reader(pg_url):
    """A reader that polls events_after(last seen) while two nodes write must see every
    event: ids become visible in order (the writers take turns on an advisory lock)."""
    nodes = [open_store(pg_url) for _ in range(2)]
    reader = open_store(pg_url)
    done = threading.Event()
    errors: list[BaseException] = []

    def write(k: int) -> None:
        try:
            for j in range(40):
                nodes[k].add_events(events([(f"u{k}", f"i{j}", "play", float(j * 2 + k))]))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    seen: list[int] = []
    last = 0
    while not done.is_set():
        if not any(t.is_alive() for t in threads):
            done.set()
        for row in reader.events_after(last):
            seen.append(row[0])
            last = row[0]
    for row in reader.events_after(last):
        seen.append(row[0])
    assert not errors
    ids = reader.events()  # every event, by id
    assert len(seen) == ids.height == 80 and seen == sorted(seen)
    for s in (*nodes, reader):
        s.close()


def test_migrations_run_once_and_a_newer_schema_is_refused(pg_url):
    s = open_store(pg_url)
    assert isinstance(s, PostgresStore) and s.schema_version() == SCHEMA_VERSION
    assert s.migrate() == []  # nothing left to run
    s._exec("INSERT INTO schema_version VALUES (%s, 'from the future', 0)", (SCHEMA_VERSION + 1,))
    s.close()
    with pytest.raises(StoreError, match="newer than this avrec"):
        open_store(pg_url)


def test_durable_off_still_commits(pg_url):
    s = open_store(pg_url)
    s.set_durable(False)
    s.add_events(events([("u", "i", "play", 1.0)]))
    s.close()
    with open_store(pg_url) as again:
        assert again.counts()["events"] == 1


def test_a_new_month_inside_an_open_transaction(pg_url):
    """Regression: an ingest's transaction had written to events when a later chunk needed
    a new month; creating it on a second connection waited for the first forever."""
    s = open_store(pg_url)
    jan, feb = 1704067200.0, 1706745600.0
    with s.transaction():
        s.add_events(events([("u", "a", "play", jan + 5)]))
        s.add_events(events([("u", "b", "play", feb + 5)]))  # a month not there yet
    assert s.counts()["events"] == 2
    try:  # a rolled-back transaction's new month is forgotten, and made again when needed
        with s.transaction():
            s.add_events(events([("u", "c", "play", feb + 40 * 86400)]))  # March
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    s.add_events(events([("u", "c", "play", feb + 40 * 86400)]))
    assert s.counts()["events"] == 3
    s.close()


def test_a_store_opened_while_the_server_is_down_waits_and_says_so(caplog):
    """``avrec serve`` opens its store with ``wait_s``: started before the database, it
    waits, logs why, and opens once the server is up."""
    import logging

    from avrec.storage.pglocal import LocalPostgres

    pg = LocalPostgres().start()
    try:
        url = pg.create_database("later")
        pg.stop(remove=False)
        with pytest.raises(StoreError, match="cannot connect"):  # a command fails at once
            open_store(url)
        threading.Timer(2.0, pg.start).start()
        with caplog.at_level(logging.WARNING, logger="avrec.storage.postgres"):
            s = open_store(url, wait_s=60)
        assert s.counts()["events"] == 0
        assert any("waiting for the PostgreSQL store" in r.getMessage() for r in caplog.records)
        assert pg.password not in caplog.text
        s.close()
    finally:
        pg.stop()


def test_the_throwaway_server_asks_a_password_on_its_socket_too(pg_server):
    import psycopg

    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(host=str(pg_server.root), port=pg_server.port, user="avrec",
                        dbname="postgres", connect_timeout=5)  # fmt: skip
    assert oct(pg_server.root.stat().st_mode & 0o777) == "0o700"


def _partition_indexes(s, name):
    return {r[0] for r in s._rows(
        "SELECT indexdef FROM pg_indexes WHERE tablename = %s", (name,))}  # fmt: skip


def test_a_bulk_load_into_new_months_is_indexed_and_attached_at_the_commit(pg_url):
    import numpy as np

    s = open_store(pg_url)
    jan, feb = 1704067200.0, 1706745600.0  # 2024-01-01, 2024-02-01
    n = 3 * BULK_ROWS
    rng = np.random.default_rng(0)
    # January into February, whole seconds: a second goes on from one batch to the next
    ts = np.floor(np.sort(jan + rng.random(n) * (feb - jan + 20 * 86400)))
    ts[n // 2 - 1 : n // 2 + 1] = ts[n // 2 - 1]
    batch = pl.DataFrame({"user_id": [f"u{x}" for x in rng.integers(0, 500, n)],
                          "item_id": [f"i{x}" for x in rng.integers(0, 900, n)],
                          "event": "play", "ts": ts, "value": rng.random(n)})  # fmt: skip
    first, second = batch.slice(0, n // 2), batch.slice(n // 2)
    with s.transaction():
        a = s.add_events(first)
        assert s._local.fresh  # went the bulk way: tables of their own, not yet attached
        b = s.add_events(second)
        assert len(s._local.fresh) == 2  # the second batch went the bulk way too
    assert not s._local.fresh
    assert a.inserted + b.inserted == n and a.duplicates + b.duplicates == 0
    assert a.new_users + b.new_users == batch["user_id"].n_unique()
    got = s.events()
    assert got.height == n
    # ids follow the file's order, and every row kept its user, item and value
    assert (
        got["ts"].to_list() == ts.tolist()
        and got["user_id"].to_list() == batch["user_id"].to_list()
    )
    assert got["value"].to_list() == batch["value"].to_list()
    ids = [r[0] for r in s.events_after(0)]
    assert ids == sorted(ids) and len(set(ids)) == n
    for name in ("events_y2024m01", "events_y2024m02"):  # attached, with every index adopted
        assert s._one("SELECT count(*) FROM pg_inherits WHERE inhrelid = %s::regclass",
                      (name,))[0] == 1  # fmt: skip
        defs = " ".join(_partition_indexes(s, name))
        assert "UNIQUE" in defs and "brin (id)" in defs and "(user_idx)" in defs
        assert "(item_idx)" in defs
    # the same rows again: all duplicates, through the unique index the attach adopted
    again = s.add_events(batch)
    assert again.inserted == 0 and again.duplicates == n
    # a served event after it lands in the attached month
    s.add_events(events([("u1", "i1", "like", feb + 25 * 86400)]))
    assert s.counts()["events"] == n + 1
    # a batch between a served one and a bulk one, newer than every event: a plain insert
    later = pl.DataFrame({"user_id": "u2", "item_id": [f"j{k}" for k in range(2000)],
                          "event": "play", "ts": feb + 26 * 86400})  # fmt: skip
    res = s.add_events(later)
    assert (res.inserted, res.new_items) == (2000, 2000)
    assert s.counts()["events"] == n + 2001
    s.close()


def test_a_bulk_load_that_fails_leaves_nothing_and_an_older_batch_falls_back(pg_url):
    import numpy as np

    s = open_store(pg_url)
    mar = 1709251200.0  # 2024-03-01
    n = 2 * BULK_ROWS
    batch = pl.DataFrame({"user_id": [f"u{x % 300}" for x in range(n)],
                          "item_id": [f"i{x % 700}" for x in range(n)],
                          "event": "play", "ts": mar + np.arange(n, dtype=float)})  # fmt: skip
    with pytest.raises(RuntimeError), s.transaction():
        s.add_events(batch)
        raise RuntimeError("the ingest stopped")
    assert s.counts()["events"] == 0
    assert s._one("SELECT to_regclass('events_y2024m03')")[0] is None
    with s.transaction():
        s.add_events(batch.slice(n // 2))  # the newer half first: bulk
        res = s.add_events(batch)  # older rows, half of them loaded: attaches, then upserts
    assert res.inserted == n // 2 and res.duplicates == n // 2
    assert s.counts()["events"] == n
    assert sorted(s.events()["ts"].to_list()) == batch["ts"].to_list()
    # an event of the last loaded second sent again in the next batch: an upsert decides
    apr, m = mar + 40 * 86400, 3 * BULK_ROWS
    tail = pl.DataFrame({"user_id": ["x"] * m, "item_id": [f"i{k}" for k in range(m)],
                         "event": "play", "ts": apr + np.arange(m) // 1000,
                         "value": 1.0})  # fmt: skip
    with s.transaction():
        s.add_events(tail.slice(0, m // 2))
        assert s._local.fresh
        again = tail.slice(m // 2 - 1).with_columns(pl.lit(2.0).alias("value"))
        res = s.add_events(again)
        assert not s._local.fresh  # attached first, then upserted
    assert res.inserted == m - m // 2 and res.duplicates == 1
    assert s.counts()["events"] == n + m
    last = s.events().filter(pl.col("item_id") == f"i{m // 2 - 1}")
    assert last["value"].to_list() == [2.0]  # the later copy of the event wins
    s.close()


def test_an_erasure_waits_for_an_ingest_in_progress_and_erases_its_rows_too(pg_url):
    """Regression: an erasure that ran while an ingest of the user's history was open left
    the rows that ingest committed after it."""
    a, b = open_store(pg_url), open_store(pg_url)
    b.add_events(events([("u", "i0", "play", 1.0)]))
    done = threading.Event()
    result = {}

    def erase():
        result.update(b.erase_user("u"))
        done.set()

    with a.transaction():
        a.add_events(events([("u", "i1", "play", 2.0), ("v", "i1", "play", 3.0)]))
        t = threading.Thread(target=erase)
        t.start()
        assert not done.wait(1.0)  # it waits for the ingest to commit
    t.join(10)
    assert done.is_set() and result["events"] == 2 and result["user"] == 1
    assert a.events()["user_id"].to_list() == ["v"]
    a.close()
    b.close()


def test_a_month_another_node_dropped_is_made_again(pg_url):
    """Regression: node b still listed a month node a had dropped, and its next write to
    that month failed (no partition of relation "events" found for row)."""
    a, b = open_store(pg_url), open_store(pg_url)
    jan, feb = 1704067200.0, 1706745600.0
    b.add_events(events([("u", "x", "play", jan + 1)]))  # b knows January
    a.add_events(events([("u", "y", "play", feb + 1)]))
    assert a.drop_events_before(feb) == 1  # a drops it
    b.add_events(events([("v", "x", "play", jan + 2)]))  # a late event of January
    assert sorted(a.events()["ts"].to_list()) == [jan + 2, feb + 1]
    a.close()
    b.close()
