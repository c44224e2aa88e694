"""The store's serving side: idempotent writes, what changed, erasure, deletion."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from avrec.errors import StoreError


def events(rows):
    return pl.DataFrame(rows, schema=["user_id", "item_id", "event", "ts"], orient="row")


def test_idempotency_keys_make_retries_safe(store):
    ev = events([("u1", "i1", "play", 1.0), ("u1", "i2", "play", 2.0), ("u2", "i1", "like", 3.0)])
    res, dup = store.add_events_once(ev, ["a", None, "a"])  # the same key twice in a batch
    assert dup == [False, False, True] and res.inserted == 2 and res.duplicates == 1
    retry = events([("u1", "i1", "play", 9.0)])  # a retry with a new timestamp
    res, dup = store.add_events_once(retry, ["a"])
    assert dup == [True] and res.inserted == 0 and store.counts()["events"] == 2
    with pytest.raises(StoreError, match="idempotency keys"):
        store.add_events_once(retry, [])


def test_events_after_and_changes(store):
    store.add_events(events([("u1", "i1", "play", 1.0), ("u2", "i2", "play", 2.0)]))
    first = store.events_after(0)
    assert [r[1:4] for r in first] == [("u1", "i1", "play"), ("u2", "i2", "play")]
    assert store.events_after(first[0][0]) == first[1:]
    assert store.last_event_id() == first[-1][0]
    store.record_change("item", "i9")
    assert store.changes_after(0)[0][1:] == ("item", "i9", first[-1][0])
    assert store.last_change_id() == store.changes_after(0)[0][0]


def test_erasing_a_user_removes_their_rows_and_conversations(store):
    store.add_events(events([("u1", "i1", "play", 1.0), ("u1", "i2", "like", 2.0),
                             ("u2", "i1", "play", 3.0)]))  # fmt: skip
    store.put_state("conversation", "c1", {"user": "u1", "turns": []})
    store.put_state("conversation", "c2", {"user": "u2", "turns": []})
    assert store.get_user("u1")["events"] == 2
    out = store.erase_user("u1")
    assert out == {"events": 2, "conversations": 1, "user": 1, "pages": 0, "impressions": 0}
    assert store.get_user("u1") is None and store.user_events("u1").height == 0
    assert store.get_state("conversation", "c2") is not None
    kinds = [c[1] for c in store.changes_after(0)]
    assert kinds == ["user_erased"]
    # the freed key is not confused with a later user
    store.add_events(events([("u3", "i2", "play", 4.0)]))
    assert store.user_events("u3")["item_id"].to_list() == ["i2"]
    assert store.user_events("u2")["item_id"].to_list() == ["i1"]


def test_exporting_a_user_gives_what_erasure_deletes(store):
    """The right of access on both backends: every event (across pages), the user's
    conversations and kept page, nobody else's; nothing once erased."""
    rows = [("u1", f"i{k}", "play", float(k)) for k in range(7)] + [("u2", "i1", "play", 9.0)]
    store.add_events(events(rows))
    store.put_state("conversation", "c1", {"user": "u1", "turns": ["hi"]})
    store.put_state("conversation", "c2", {"user": "u2", "turns": []})
    store.put_state("page", "u1", {"items": ["i3"]})
    held = store.export_user("u1", page=3)  # three pages of events
    assert held["user"]["user_id"] == "u1" and len(held["events"]) == 7
    assert [e["item_id"] for e in held["events"]][:2] == ["i6", "i5"]  # newest first
    assert all("timestamp" in e and "user_id" not in e for e in held["events"])
    assert held["conversations"] == {"c1": {"user": "u1", "turns": ["hi"]}}
    assert held["page"] == {"items": ["i3"]}
    erased = store.erase_user("u1")
    assert erased["events"] == len(held["events"]) and erased["pages"] == 1
    assert store.export_user("u1") is None
    assert store.export_user("never-seen") is None
    assert len(store.export_user("u2")["events"]) == 1


def test_deleting_items(store):
    store.add_events(events([("u1", "i1", "play", 1.0), ("u1", "i2", "play", 2.0)]))
    store.upsert_items(pl.DataFrame({"item_id": ["i1", "i2"], "title": ["One", "Two"]}))
    assert store.get_items(["i1", "i2", "nope"])["title"].to_list() == ["One", "Two"]
    assert store.delete_items(["i1", "nope"]) == {"items": 1, "events": 1}
    assert store.get_items(["i1"]).height == 0
    assert store.events()["item_id"].to_list() == ["i2"]
    store.add_events(events([("u1", "i3", "play", 3.0)]))  # a new item after the deletion
    assert sorted(store.events()["item_id"].to_list()) == ["i2", "i3"]


def test_a_model_forgets_users(tmp_path):
    from avrec.models import create_model
    from avrec.testing import toy_dataset

    ds = toy_dataset()
    for name in ("als", "itemknn"):
        m = create_model(name).fit(ds)
        user = m.users.ids[0]
        assert m.user_batch([user]).history.nnz > 0
        cleared = m.forget_users([user, "nobody"])
        assert "history" in cleared and m.user_batch([user]).history.nnz == 0
        if name == "als":
            assert "als.user_factors" in cleared
            assert not np.any(m.user_factors[0])
        other = m.users.ids[1]
        assert m.user_batch([other]).history.nnz > 0  # the others keep theirs
        assert m.forget_users(["nobody"]) == []


def test_small_batches_and_bulk_ingest_share_one_id_space(store):
    """A served batch looks up only its own ids; a bulk ingest afterwards (which reads the
    whole id map) and another small batch must agree with it on every key."""
    store.add_events(events([("s1", "a", "play", 1.0), ("s2", "b", "play", 2.0)]))
    bulk = [(f"u{i % 700}", f"i{i % 900}", "play", 10.0 + i) for i in range(6000)]
    bulk += [("s1", "b", "play", 5.0)]
    store.add_events(events(bulk))
    store.add_events(events([("s2", "a", "like", 7.0), ("new", "i5", "play", 8.0)]))
    got = store.events()
    assert got.height == 2 + 6001 + 2
    pairs = set(zip(got["user_id"].to_list(), got["item_id"].to_list(), strict=True))
    assert {("s1", "a"), ("s2", "b"), ("s1", "b"), ("s2", "a"), ("new", "i5")} <= pairs
    assert store.counts()["users"] == 2 + 700 + 1 and store.counts()["items"] == 2 + 900


def test_consent_keeps_a_user_out_of_training_and_back_in(store):
    """Withdrawn consent excludes the user's events from training and deletes their kept
    page; given back, it clears that exclusion and no other (a bot stays excluded)."""
    store.add_events(events([("u1", "i1", "play", 1.0), ("u2", "i2", "play", 2.0)]))
    store.put_state("page", "u1", {"items": ["i9"]})
    out = store.set_consent("u1", False)
    assert out == {"user_id": "u1", "personalisation": False, "excluded": True}
    assert store.get_state("page", "u1") is None
    assert store.events(include_excluded=False)["user_id"].to_list() == ["u2"]
    assert store.without_consent() == {"u1"}
    assert [c[1:3] for c in store.changes_after(0)] == [("consent", "u1")]
    assert store.set_consent("u1", True)["excluded"] is False
    assert store.without_consent() == set()
    assert store.events(include_excluded=False).height == 2
    store.set_users_excluded(["u2"], True, "bot")
    assert store.set_consent("u2", True) == {
        "user_id": "u2", "personalisation": True, "excluded": True,
    }  # fmt: skip
    assert store.set_consent("new-user", False)["excluded"] is True  # unknown: made, then kept out


def test_retention_deletes_old_events_and_tells_the_nodes(store):
    """Events older than the retention period go (SQLite: every such row; PostgreSQL: whole
    months), and the change log says so, with the floor of the event ids left."""
    day = 86400.0
    now = 1_717_200_000.0  # 2024-06-01
    old = now - 400 * day
    store.add_events(events([("u1", "i1", "play", old), ("u1", "i2", "play", now - day),
                             ("u2", "i1", "play", old + 1)]))  # fmt: skip
    out = store.apply_retention(365, now=now)
    assert out["events"] == 2 and out["before"] == now - 365 * day
    assert store.events()["ts"].to_list() == [now - day]
    assert [c[1] for c in store.changes_after(0)] == ["events_dropped"]
    assert store.apply_retention(365, now=now)["events"] == 0  # nothing more: no change
    assert len(store.changes_after(0)) == 1
