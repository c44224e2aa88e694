"""Impressions in both stores: stored once, attributed to the events that followed them
(same user and item within the window, or an echoed request_id), erased with the user,
exported, dropped by retention, the online metrics computed from them, and exploration's
pool (fresh or cold items available now) counted by the database."""

from __future__ import annotations

import json

import polars as pl
import pytest

from avrec.online.impressions import rows_of
from avrec.online.metrics import online_metrics
from avrec.service.parts import passes
from avrec.storage.base import IMPRESSION_SCHEMA

T = 1_700_000_000.0


def _shown(request_id: str, user: str | None, items: list[str], ts: float,
           surface: str = "recommendations", offset: int = 0, variant: str | None = None,
           ) -> bytes:  # fmt: skip
    return json.dumps({"request_id": request_id, "surface": surface, "items": items,
                       "user_id": user, "model_version": "pipeline-v1", "offset": offset,
                       "variant": variant, "ts": ts}).encode()  # fmt: skip


def _events(store, rows):
    store.add_events(pl.DataFrame(
        rows, schema=["user_id", "item_id", "event", "ts", "value", "context"], orient="row"
    ))  # fmt: skip


@pytest.fixture()
def shop(store):
    store.upsert_items(pl.DataFrame({"item_id": [f"i{j}" for j in range(6)],
                                     "duration": [100.0] * 6}))  # fmt: skip
    lines = [
        _shown("r1", "u1", ["i0", "i1", "i2", "i3"], T),
        _shown("r2", "u2", ["i0", "i4"], T + 10, surface="search"),
        _shown("r3", None, ["i5", "i1"], T + 20, surface="session"),
        _shown("r1", "u1", ["i0", "i1", "i2", "i3"], T),  # replayed: stored once
        b'{"request_id": "torn", "surf',  # a torn last line
    ]
    rows = rows_of(lines)
    assert rows.height == 12
    assert store.add_impressions(rows) == 8
    _events(store, [
        ("u1", "i1", "play", T + 60, 0.95, None),  # a click and a completion, 95 s watched
        ("u1", "i2", "like", T + 100, None, None),
        ("u1", "i3", "play", T + 90_000, 1.0, None),  # after the window: not attributed
        ("u2", "i0", "play", T + 30, 0.2, None),
        ("anon", "i5", "play", T + 40, 0.5, json.dumps({"request_id": "r3"})),  # echoed
        ("u9", "i4", "play", T + 50, 1.0, None),  # someone else's play of a shown item
    ])  # fmt: skip
    return store


def test_outcomes_are_attributed_by_user_and_window_or_echo(shop):
    out = shop.impression_outcomes(T - 1, T + 1000, window_s=3600.0)
    got = {(r["request_id"], r["position"], r["event"]) for r in out.to_dicts()}
    assert got == {("r1", 1, "play"), ("r1", 2, "like"), ("r2", 0, "play"), ("r3", 0, "play")}
    shown = shop.impressions(T - 1, T + 1000)
    assert shown.height == 8 and shown["position"].to_list()[:4] == [0, 1, 2, 3]
    assert shop.impressions(user_id="u2")["item_id"].to_list() == ["i0", "i4"]


def test_online_metrics_per_surface(shop):
    rows = online_metrics(shop, T - 1, T + 1000, window_s=3600.0)
    by = {r["surface"]: r for r in rows}
    rec, search, session = by["recommendations"], by["search"], by["session"]
    assert rec["impressions"] == 4 and rec["lists"] == 1
    assert rec["ctr"] == pytest.approx(1 / 4)  # the like is not a click; i3 came too late
    assert rec["completion"] == pytest.approx(1 / 4)
    assert rec["watch_s"] == pytest.approx(95.0 / 4)
    assert rec["likes"] == pytest.approx(1 / 4)
    assert search["ctr"] == pytest.approx(1 / 2) and search["completion"] == 0
    assert session["ctr"] == pytest.approx(1 / 2)  # the anonymous play echoed r3
    assert rec["coverage"] == pytest.approx(4 / 6)
    assert rec["model_version"] == "pipeline-v1"
    hourly = online_metrics(shop, T - 1, T + 1000, window_s=3600.0, every="hour")
    assert {r["period"] for r in hourly} == {T // 3600 * 3600}


def test_erasure_export_and_retention_cover_impressions(shop):
    export = shop.export_user("u1")
    assert [x["item_id"] for x in export["impressions"]] == ["i0", "i1", "i2", "i3"]
    gone = shop.erase_user("u1")
    assert gone["impressions"] == 4
    assert shop.impressions(user_id="u1").height == 0
    assert shop.impressions().height == 4
    shop.drop_events_before(T + 15)  # retention: r2 (T + 10) goes, r3 (T + 20) stays
    assert shop.impressions()["request_id"].unique().to_list() == ["r3"]


def test_the_explore_pool_is_counted_by_the_store(store):
    """Fresh (created since ``fresh_since``) or cold (fewer than 3 impressions since
    ``since``), available at ``now``, no placeholder; the same answer on both backends and
    the same as the rule the service applied to the whole catalogue in Python."""
    now, day = T + 40 * 86400.0, 86400.0
    since, fresh_since = now - 30 * day, now - 7 * day
    old = T  # created long ago
    items = [  # item, created_at, available_from, available_until, impressions (since, before)
        ("fresh", now - day, None, None, (9, 0)),  # shown a lot, but new
        ("fresh-edge", fresh_since, None, None, (9, 0)),
        ("popular", old, None, None, (3, 0)),  # shown cold_impressions times: not cold
        ("cold", old, None, None, (2, 0)),
        ("unseen", None, None, None, (0, 0)),  # no created_at, never shown
        ("shown-long-ago", old, None, None, (0, 9)),  # impressions before ``since``
        ("in-window", old, now - day, now + day, (0, 0)),
        ("ends-now", old, None, now, (0, 0)),
        ("ended", now - day, None, now - 1.0, (0, 0)),
        ("not-yet", now - day, now + 1.0, None, (0, 0)),
        ("popular-windowed", old, now - day, now + day, (5, 0)),
    ]  # fmt: skip
    store.upsert_items(pl.DataFrame(
        [r[:4] for r in items], schema=["item_id", "created_at", "available_from",
                                        "available_until"], orient="row",
    ))  # fmt: skip
    _events(store, [("u1", "ghost", "play", now - day, 1.0, None)])  # a placeholder item
    shown = []
    for item, *_, (recent, before) in items:
        shown += [(item, now - day + n) for n in range(recent)]
        shown += [(item, since - day - n) for n in range(before)]
    store.add_impressions(pl.DataFrame(
        [(f"r{n}", 0, "u1", item, "recommendations", None, None, None, ts)
         for n, (item, ts) in enumerate(shown)], schema=IMPRESSION_SCHEMA, orient="row",
    ))  # fmt: skip
    pairs = store.explore_items(now, fresh_since, since, cold_impressions=3)
    got = [i for i, _ in pairs]
    assert got == sorted(["fresh", "fresh-edge", "cold", "unseen", "shown-long-ago",
                          "in-window", "ends-now"])  # fmt: skip
    # one query says which are fresh (the slot's fresh share draws from those)
    assert sorted(i for i, fresh in pairs if fresh) == ["fresh", "fresh-edge"]
    # the rule as the service applied it to the whole catalogue
    counts = dict(store.impressions(since, now + 1.0).group_by("item_id").len().iter_rows())
    rule = sorted(
        r["item_id"] for r in store.items(include_placeholders=False).to_dicts()
        if passes(r, None, now) and ((r["created_at"] or -1.0) >= fresh_since
                                      or counts.get(r["item_id"], 0) < 3)
    )  # fmt: skip
    assert got == rule
