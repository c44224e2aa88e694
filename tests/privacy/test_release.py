"""Differentially private releases: the bounding, the noise at its stated scale, the
ledger, and the release through ``avrec release`` and the API."""

from __future__ import annotations

import time

import numpy as np
import polars as pl
import pytest

from avrec.errors import BudgetSpentError, ConfigError
from avrec.privacy.release import (
    LEDGER_KIND,
    RELEASE_KIND,
    bounded_counts,
    noisy_counts,
    noisy_top_k,
    release_popular,
    release_stats,
)


def _events(rows):
    return pl.DataFrame(rows, schema=["user_id", "item_id", "ts"], orient="row")


def test_each_user_counts_for_at_most_the_bound():
    heavy = [("heavy", f"i{j}", float(j)) for j in range(100)]  # one user, 100 items
    light = [(f"u{u}", "i0", 1.0) for u in range(5)] + [("u0", "i0", 2.0)]  # a repeat
    items, counts = bounded_counts(_events(heavy + light), items_per_user=3, seed=0)
    got = dict(zip(items, counts.tolist(), strict=True))
    assert sum(got.values()) == 3 + 5  # the heavy user adds 3, each light user 1
    assert got["i0"] in (5, 6) and all(v in (0, 1) for k, v in got.items() if k != "i0")
    # the heavy user's three are a uniform sample: over many draws every item is drawn
    drawn = set()
    for seed in range(200):
        names, n = bounded_counts(_events(heavy), items_per_user=3, seed=seed)
        drawn |= {name for name, c in zip(names, n.tolist(), strict=True) if c}
    assert len(drawn) > 90
    items, counts = bounded_counts(_events(heavy), items_per_user=1000)
    assert counts.sum() == 100 and set(counts.tolist()) == {1}


def test_the_noise_has_the_stated_scale():
    """Discrete Laplace at scale b = bound / epsilon: mean 0 and variance
    2 e^(-1/b) / (1 - e^(-1/b))^2 (about 2 b^2), within a margin far wider than 20,000
    draws' error (OpenDP draws from the system's randomness: it cannot be seeded)."""
    n, bound, eps = 20_000, 5, 1.0
    noisy, scale = noisy_counts(np.full(n, 100, np.int64), bound, eps)
    assert scale == 5.0
    noise = noisy - 100
    q = np.exp(-1 / scale)
    var = 2 * q / (1 - q) ** 2
    assert abs(noise.mean()) < 5 * np.sqrt(var / n)
    assert 0.9 < noise.var() / var < 1.1
    assert (noise != 0).mean() > 0.8  # noise is there
    wider, _ = noisy_counts(np.full(n, 100, np.int64), bound, eps / 4)
    assert 3.5 < (wider - 100).std() / noise.std() < 4.5  # four times the scale


def test_noisy_top_k_keeps_the_order_and_draws_at_its_scale():
    """OpenDP's noisy top-k: with almost no noise, the exact ranking; with noise, the
    chance that the lower of two counts wins is the Gumbel race's, ``1 / (1 + exp(gap /
    scale))`` at the scale stated (1,000 draws; the bound is 5 standard errors); the scale
    grows as epsilon shrinks, and no user is bounded (a count may move by one per item)."""
    counts = np.array([5, 40, 7, 90, 0, 60])
    order, _ = noisy_top_k(counts, 4, epsilon=1e4, delta=1e-6)
    assert order == [3, 5, 1, 2]
    _, s1 = noisy_top_k(counts, 50, epsilon=1.0, delta=1e-6)
    _, s8 = noisy_top_k(counts, 50, epsilon=8.0, delta=1e-6)
    _, s50 = noisy_top_k(np.zeros(100, np.int64), 50, epsilon=1.0, delta=1e-6)
    assert s1 > 4 * s8 and s50 > s1  # k capped at 6 items above: fewer picks, less noise
    gap, draws = 3, 1000
    wins = 0
    for _ in range(draws):
        order, scale = noisy_top_k(np.array([0, gap]), 1, epsilon=0.5, delta=1e-6)
        wins += order == [0]
    p = 1.0 / (1.0 + np.exp(gap / scale))
    assert abs(wins / draws - p) < 5 * np.sqrt(p * (1 - p) / draws), (wins, p, scale)
    with pytest.raises(ConfigError, match="delta"):
        noisy_top_k(counts, 2, epsilon=1.0, delta=0.0)


def test_the_ledger_refuses_an_overspend_and_releases_nothing(store):
    rows = [
        (f"u{u}", f"i{(u * 7 + j) % 30}", "play", float(j)) for u in range(200) for j in range(5)
    ]
    store.add_events(pl.DataFrame(rows, schema=["user_id", "item_id", "event", "ts"], orient="row"))
    store.upsert_items(pl.DataFrame({"item_id": [f"i{j}" for j in range(30)]}))
    day = 1_717_200_000.0
    first = release_popular(store, k=10, epsilon=0.6, items_per_user=5, budget=1.0, now=day,
                            mechanism="counts")  # fmt: skip
    assert len(first.items) == 10 and first.delta == 0.0 and first.scale == 5 / 0.6
    assert first.budget_left == pytest.approx(0.4)
    assert store.get_state(RELEASE_KIND, "popular")["items"] == first.items
    with pytest.raises(BudgetSpentError, match="budget of 2024-06-01 is spent"):
        release_popular(store, k=10, epsilon=0.6, items_per_user=5, budget=1.0, now=day + 60)
    assert store.get_state(RELEASE_KIND, "popular")["released_at"] == day  # unchanged
    ledger = store.get_state(LEDGER_KIND, "2024-06-01")
    assert ledger["spent"] == pytest.approx(0.6) and len(ledger["releases"]) == 1
    later = release_popular(
        store, k=10, epsilon=0.6, items_per_user=5, budget=1.0, now=day + 86_400, name="popular"
    )
    assert later.budget_left == pytest.approx(0.4)  # a new day, a new budget
    # the default mechanism: the ranking alone, (epsilon, delta), nobody bounded
    assert later.mechanism == "top_k" and later.counts is None and later.delta == 1e-6
    assert later.items_per_user is None and len(later.items) == 10
    with pytest.raises(BudgetSpentError):  # spent from the same ledger
        release_popular(store, k=10, epsilon=0.6, budget=1.0, now=day + 86_460)
    ledger = store.get_state(LEDGER_KIND, "2024-06-02")
    assert ledger["releases"][-1]["delta"] == 1e-6 and ledger["delta_spent"] == 1e-6
    # terms a top-k cannot meet are refused before anything is spent
    with pytest.raises(ConfigError, match="delta"):
        release_popular(store, k=10, epsilon=0.1, budget=1.0, now=day + 2 * 86_400, delta=0.0)
    assert store.get_state(LEDGER_KIND, "2024-06-03") is None


def test_a_release_names_catalogue_items_only(store):
    """The items a release may name are the catalogue's (public): an item that only events
    name is never released, however many played it, and one nobody played may be."""
    with pytest.raises(ConfigError, match="catalogue"):
        release_popular(store, k=5, epsilon=1.0, budget=10.0)  # no catalogue yet
    rows = [(f"u{u}", "secret", "play", 1.0) for u in range(300)]
    rows += [(f"u{u}", f"i{u % 3}", "play", 2.0) for u in range(300)]
    store.add_events(pl.DataFrame(rows, schema=["user_id", "item_id", "event", "ts"], orient="row"))
    store.upsert_items(pl.DataFrame({"item_id": ["i0", "i1", "i2", "i3"]}))
    rel = release_popular(store, k=10, epsilon=1e4, items_per_user=2, budget=1e5,
                          mechanism="counts")  # fmt: skip
    assert "secret" not in rel.items and set(rel.items) == {"i0", "i1", "i2", "i3"}
    top = release_popular(store, k=10, epsilon=1e4, budget=1e5)
    assert "secret" not in top.items and set(top.items) == {"i0", "i1", "i2", "i3"}
    assert top.items[-1] == "i3"  # nobody played it: last, with almost no noise
    assert dict(zip(rel.items, rel.counts, strict=True))["i3"] in (-1, 0, 1)  # nobody: ~0
    items, counts = bounded_counts(
        pl.DataFrame({"user_id": ["a", "a"], "item_id": ["i0", "x"]}), 5, domain=["i0", "i9"]
    )
    assert items == ["i0", "i9"] and counts.tolist() == [1, 0]


def test_stats_release_bounds_each_user_and_withholds_single_persons_figures(store):
    """``avrec release stats``: with almost no noise the counts are the bounded ones (a
    heavy user adds at most the bound); a type nobody configured is not named; the figures
    of one person (first and last event, maximum per user) are not released."""
    rows = [("heavy", f"i{j % 20}", "play", float(j)) for j in range(1000)]
    rows += [(f"u{u}", f"i{u % 20}", "play", 1.0) for u in range(50)]
    rows += [(f"u{u}", f"i{u % 20}", "like", 2.0) for u in range(10)]
    rows += [("odd", "i0", "my-secret-type", 3.0)]
    store.add_events(pl.DataFrame(rows, schema=["user_id", "item_id", "event", "ts"], orient="row"))
    store.upsert_items(pl.DataFrame({"item_id": [f"i{j}" for j in range(25)]}))
    rel = release_stats(store, ["like", "play"], epsilon=1e5, events_per_user=30, budget=1e6)
    assert rel["events"] == 30 + 60 + 1  # the heavy user's 1,000 count as 30
    assert rel["active_users"] == 52 and rel["users"] == 52
    assert set(rel["events_by_type"]) == {"like", "play"}  # the odd type is not named
    assert rel["active_items"] == 20 and rel["items"] == 25
    assert not {"first_event", "last_event", "ingests"} & set(rel)
    assert "max" not in rel["events_per_user"]
    assert store.get_state(RELEASE_KIND, "stats")["events"] == rel["events"]
    # at a real epsilon the noise is there, at the stated scale (sixth of epsilon each)
    noisy = [release_stats(store, ["play"], epsilon=0.6, events_per_user=30, budget=1e6)
             for _ in range(30)]  # fmt: skip
    assert noisy[0]["privacy"]["scales"]["events"] == pytest.approx(30 / 0.1)
    assert noisy[0]["privacy"]["scales"]["users"] == pytest.approx(1 / 0.1)
    spread = np.std([n["events"] for n in noisy])
    # discrete Laplace at scale 300 (std about 424) on a count of 91, then floored at 0 (a
    # count is not negative): the spread of 30 releases has its median near 260 and falls
    # below 87 once in 10,000 draws (simulated); it was 150, which failed about 1 in 50
    assert 80 < spread < 800
    ledger = store.get_state(LEDGER_KIND, time.strftime("%Y-%m-%d", time.gmtime()))
    assert ledger["spent"] == pytest.approx(1e5 + 30 * 0.6)
