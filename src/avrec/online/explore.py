"""Exploration with logged propensities, and off-policy evaluation from those logs.

**The slot policy** (epsilon-greedy over one slot): with probability ``rate`` a page's
``slot``-th position shows, instead of the pipeline's item, one drawn uniformly from the
exploration pool (fresh items, created in the last ``fresh_days``, and cold ones, shown
fewer than ``cold_impressions`` times), never one of the page's own nor an excluded one
(deleted since the pool was read); with ``fresh_share``, that share of the draws from the
fresh items alone (so that a few new items are not lost among a large cold catalogue).
Every impression logs the probability with which it was shown there: 1 at the other
positions (the page is the pipeline's), ``1 - rate`` for the pipeline's item at the slot,
``rate / n`` for an explored one, ``n`` the pool's items it could have shown (the pool less
the page and the excluded), or ``rate * fresh_share / n_fresh`` and ``rate * (1 -
fresh_share) / n_cold`` with a fresh share. New items thus get impressions before anyone
has played them, and the logs can tell how another policy would have done.

**Off-policy estimates** (the formulas of Open Bandit Pipeline, Saito et al., 2021) of a
target policy's click rate at the slot, from logged ``(reward r, logging propensity p,
target's probability pi of the same item)``, importance weight ``w = pi / p``:

- IPS: ``mean(w r)``; SNIPS: ``sum(w r) / sum(w)`` (self-normalised: less variance, a small
  bias);
- DR: ``mean(q(target's item) + w (r - q(logged item)))`` with a reward model ``q`` (here
  each item's smoothed click rate from the same logs): unbiased when either the weights or
  ``q`` are right.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ExplorePool", "SlotPolicy", "dr", "estimate_slot", "ips", "snips"]


@dataclass(frozen=True)
class ExplorePool:
    """Exploration's pool as the slot draws from it: the fresh items and the cold ones,
    each sorted, read once (the service reads them in the background) and drawn from many
    times; a draw costs O(page), not O(pool)."""

    fresh: tuple[str, ...] = ()
    cold: tuple[str, ...] = ()
    fresh_set: frozenset[str] = field(init=False, repr=False, compare=False)
    cold_set: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fresh_set", frozenset(self.fresh))
        object.__setattr__(self, "cold_set", frozenset(self.cold))

    @classmethod
    def of(cls, items: Iterable[str], fresh: Collection[str] = ()) -> ExplorePool:
        """The pool of ``items``, those in ``fresh`` on the fresh side."""
        items = sorted(set(items))
        return cls(tuple(i for i in items if i in fresh), tuple(i for i in items if i not in fresh))

    @property
    def items(self) -> list[str]:
        """Every item of the pool, sorted."""
        return sorted((*self.fresh, *self.cold))

    def __len__(self) -> int:
        return len(self.fresh) + len(self.cold)


def _draw(side: tuple[str, ...], blocked: set[str], rng: np.random.Generator) -> str:
    """One item of ``side`` uniformly among those not ``blocked`` (at least one is not),
    by rejection: ``blocked`` is the page and a few deleted items, the side may be large."""
    for _ in range(64):
        item = side[int(rng.integers(len(side)))]
        if item not in blocked:
            return item
    rest = [i for i in side if i not in blocked]  # nearly all blocked: walk it (rare)
    return rest[int(rng.integers(len(rest)))]


@dataclass
class SlotPolicy:
    """One page's exploration: which slot, how often, from which pool."""

    rate: float
    slot: int
    rng: np.random.Generator
    fresh_share: float = 0.0

    def apply(
        self, items: list[str], pool: ExplorePool | Sequence[str], fresh: Collection[str] = (),
        excluded: Collection[str] = (),
    ) -> tuple[list[str], list[float]]:  # fmt: skip
        """The page to show and each item's propensity at its position.

        Args:
            items: the pipeline's page.
            pool: the exploration pool (a plain sequence is split by ``fresh``).
            fresh: the fresh items of a plain sequence.
            excluded: items never to explore (deleted since the pool was read); with the
                page's own, left out of the draw and of the propensity's denominator.

        With ``fresh_share``, an explored slot draws from the pool's fresh items with that
        probability and from the others otherwise (from whichever there are, when one side
        is empty)."""
        props = [1.0] * len(items)
        if self.rate <= 0 or self.slot >= len(items):
            return items, props
        if not isinstance(pool, ExplorePool):
            pool = ExplorePool.of(pool, frozenset(fresh))
        blocked = set(items).union(excluded)
        n_new = len(pool.fresh) - sum(1 for i in blocked if i in pool.fresh_set)
        n_old = len(pool.cold) - sum(1 for i in blocked if i in pool.cold_set)
        if n_new <= 0 and n_old <= 0:
            return items, props
        share = self.fresh_share if n_new > 0 and n_old > 0 else (1.0 if n_new > 0 else 0.0)
        out = list(items)
        if self.rng.random() < self.rate:
            if self.rng.random() < share:
                side, p, n = pool.fresh, share, n_new
            else:
                side, p, n = pool.cold, 1.0 - share, n_old
            out[self.slot] = _draw(side, blocked, self.rng)
            props[self.slot] = self.rate * p / n
        else:
            props[self.slot] = 1.0 - self.rate
        return out, props


def ips(reward: np.ndarray, weight: np.ndarray) -> float:
    return float(np.mean(weight * reward)) if len(reward) else float("nan")


def snips(reward: np.ndarray, weight: np.ndarray) -> float:
    total = float(np.sum(weight))
    return float(np.sum(weight * reward) / total) if total > 0 else float("nan")


def dr(reward: np.ndarray, weight: np.ndarray, q_logged: np.ndarray, q_target: np.ndarray) -> float:
    if not len(reward):
        return float("nan")
    return float(np.mean(q_target + weight * (reward - q_logged)))


def estimate_slot(
    logged: Any,
    target: Callable[[str | None, str], str | None],
    prior: tuple[float, float] = (1.0, 20.0),
    reward_model: Callable[[str | None], float] | None = None,
) -> dict[str, Any]:
    """Off-policy estimates of ``target``'s click rate at the exploration slot.

    Args:
        logged: the slot's impressions, a polars frame with ``request_id, user_id,
            item_id, propensity, click`` (one row per logged request).
        target: ``(user_id, request_id) -> the item the target policy would show at the
            slot`` (deterministic).
        prior: the Beta prior of the default reward model's per-item click rate.
        reward_model: DR's ``q(item)``, the expected click rate of an item at the slot;
            default: each item's smoothed click rate at the slot in the same logs (an item
            never logged there gets the prior's mean).
    """
    rows = logged.to_dicts()
    if not rows:
        return {"requests": 0}
    reward = np.array([float(r["click"]) for r in rows])
    p = np.array([float(r["propensity"]) for r in rows])
    chosen = [target(r["user_id"], r["request_id"]) for r in rows]
    match = np.array([c == r["item_id"] for c, r in zip(chosen, rows, strict=True)], float)
    weight = match / p
    # the reward model: each item's smoothed click rate at the slot
    a, b = prior
    stats: dict[str, list[float]] = {}
    for r in rows:
        s = stats.setdefault(r["item_id"], [0.0, 0.0])
        s[0] += float(r["click"])
        s[1] += 1.0
    base = a / (a + b)

    def q(item: str | None) -> float:
        s = stats.get(item or "")
        return (s[0] + a) / (s[1] + a + b) if s else base

    q = reward_model or q
    q_logged = np.array([q(r["item_id"]) for r in rows])
    q_target = np.array([q(c) for c in chosen])
    return {
        "requests": len(rows),
        "matched": int(match.sum()),
        "ips": ips(reward, weight),
        "snips": snips(reward, weight),
        "dr": dr(reward, weight, q_logged, q_target),
        "logged_ctr": float(reward.mean()),
    }
