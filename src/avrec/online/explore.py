"""Exploration with logged propensities, and off-policy evaluation from those logs.

**The slot policy** (epsilon-greedy over one slot): with probability ``rate`` a page's
``slot``-th position shows, instead of the pipeline's item, one drawn uniformly from the
exploration pool (fresh items, created in the last ``fresh_days``, and cold ones, shown
fewer than ``cold_impressions`` times), none of the page's own; with ``fresh_share``, that
share of the draws from the fresh items alone (so that a few new items are not lost among
a large cold catalogue). Every impression logs the
probability with which it was shown there: 1 at the other positions (the page is the
pipeline's), ``1 - rate`` for the pipeline's item at the slot, ``rate / |pool|`` for an
explored one (``rate * fresh_share / |fresh|`` and ``rate * (1 - fresh_share) / |cold|``
with a fresh share). New items thus get impressions before anyone has played them, and the logs
can tell how another policy would have done.

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

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SlotPolicy", "dr", "estimate_slot", "ips", "snips"]


@dataclass
class SlotPolicy:
    """One page's exploration: which slot, how often, from which pool."""

    rate: float
    slot: int
    rng: np.random.Generator
    fresh_share: float = 0.0

    def apply(
        self, items: list[str], pool: Sequence[str], fresh: Collection[str] = ()
    ) -> tuple[list[str], list[float]]:
        """The page to show and each item's propensity at its position. With
        ``fresh_share``, an explored slot draws from the pool's ``fresh`` items with that
        probability and from the others otherwise (from whichever there are, when one side
        is empty)."""
        props = [1.0] * len(items)
        if self.rate <= 0 or self.slot >= len(items):
            return items, props
        shown = set(items)
        new = [i for i in pool if i not in shown and i in fresh]
        old = [i for i in pool if i not in shown and i not in fresh]
        if not new and not old:
            return items, props
        share = self.fresh_share if new and old else (1.0 if new else 0.0)
        out = list(items)
        if self.rng.random() < self.rate:
            side, p = (new, share) if self.rng.random() < share else (old, 1.0 - share)
            out[self.slot] = side[int(self.rng.integers(len(side)))]
            props[self.slot] = self.rate * p / len(side)
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
