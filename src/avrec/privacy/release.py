"""Differentially private releases: popular and trending lists with user-level privacy.

What leaves the system about many people (the most played items, their play counts) is
released so that it does not reveal any one person:

1. **Bounding.** Each user contributes at most ``items_per_user`` distinct items (a uniform
   sample of theirs), each counted once: adding or removing a whole user changes the count
   vector by at most ``items_per_user`` in L1.
2. **Noise.** OpenDP's Laplace mechanism on integers (the discrete Laplace, ``make_laplace``
   over a vector of counts with the L1 distance) at scale ``items_per_user / epsilon``:
   ``epsilon``-DP for that user-level sensitivity, pure DP (``delta`` 0). OpenDP checks
   the privacy map; a release whose map says more than its ``epsilon`` is refused.
3. **The ledger.** Every release spends from the day's budget (``[privacy]
   release_budget_per_day``), kept in the store (state ``dp_ledger``) and spent in one
   transaction with the check: a release that would overspend is refused
   (:class:`~avrec.errors.BudgetSpentError`) and nothing is released.
4. **Post-processing.** The ranked list (and its noisy counts) is kept in the store (state
   ``release``) and served as often as asked without spending more.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import polars as pl

from avrec.errors import BudgetSpentError, ConfigError

__all__ = ["Release", "bounded_counts", "noisy_counts", "release_popular", "spend"]

LEDGER_KIND = "dp_ledger"
RELEASE_KIND = "release"


@dataclass
class Release:
    """A released list: the items, their noisy counts, and its privacy terms."""

    name: str
    items: list[str]
    counts: list[int]
    epsilon: float
    delta: float
    items_per_user: int
    scale: float
    window_days: float | None
    released_at: float
    budget_left: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bounded_counts(
    events: pl.DataFrame, items_per_user: int, seed: int | None = None
) -> tuple[list[str], np.ndarray]:
    """Per item, how many users played it, each user counted for at most ``items_per_user``
    distinct items: a uniform sample of theirs when they have more (drawn with ``seed``;
    their most recent ones would tilt the list towards what is new). ``events`` has
    ``user_id, item_id``."""
    if items_per_user < 1:
        raise ConfigError("items_per_user must be at least 1")
    if not events.height:
        return [], np.zeros(0, np.int64)
    pairs = events.select("user_id", "item_id").unique()
    rng = np.random.default_rng(seed)
    kept = (
        pairs.with_columns(pl.Series("draw", rng.random(pairs.height)))
        .with_columns(pl.col("draw").rank("ordinal").over("user_id").alias("rank"))
        .filter(pl.col("rank") <= items_per_user)
    )
    counts = kept.group_by("item_id").len().sort("item_id")
    return counts["item_id"].to_list(), counts["len"].to_numpy().astype(np.int64)


def noisy_counts(
    counts: np.ndarray, items_per_user: int, epsilon: float
) -> tuple[np.ndarray, float]:
    """``counts`` with discrete Laplace noise for ``epsilon``-DP at the user-level L1
    sensitivity ``items_per_user`` (OpenDP), and the noise scale.

    Raises:
        ConfigError: ``epsilon`` is not positive, or OpenDP's privacy map exceeds it.
    """
    import opendp.prelude as dp

    if not epsilon > 0:
        raise ConfigError(f"epsilon must be positive, got {epsilon}")
    dp.enable_features("contrib")
    scale = items_per_user / epsilon
    space = (dp.vector_domain(dp.atom_domain(T=int)), dp.l1_distance(T=int))
    meas = dp.m.make_laplace(*space, scale=scale)
    if meas.map(d_in=int(items_per_user)) > epsilon * (1 + 1e-9):
        raise ConfigError("the Laplace mechanism's privacy map exceeds epsilon")
    if not len(counts):
        return np.zeros(0, np.int64), scale
    return np.asarray(meas([int(c) for c in counts]), np.int64), scale


def spend(store: Any, what: str, epsilon: float, budget: float, now: float | None = None) -> float:
    """Spend ``epsilon`` of the day's ``budget`` (UTC days) for ``what``, in one store
    transaction with the check; returns what is left of the day's budget.

    Raises:
        BudgetSpentError: the release would overspend; nothing is spent.
    """
    now = time.time() if now is None else now
    day = time.strftime("%Y-%m-%d", time.gmtime(now))
    with store.transaction():
        store.lock_key(f"{LEDGER_KIND}:{day}")  # nodes spending at once: one after the other
        ledger = store.get_state(LEDGER_KIND, day) or {"spent": 0.0, "releases": []}
        spent = float(ledger["spent"])
        if spent + epsilon > budget + 1e-9:
            raise BudgetSpentError(
                f"the privacy budget of {day} is spent: {spent:g} of {budget:g} used, "
                f"{what} asks {epsilon:g}; nothing was released"
            )
        ledger["spent"] = spent + epsilon
        ledger["releases"] = [*ledger["releases"], {"what": what, "epsilon": epsilon, "at": now}]
        # kept for 400 days: the ledger is the record of what was released
        store.put_state(LEDGER_KIND, day, ledger, ttl_s=400 * 86400.0)
    return budget - ledger["spent"]


def release_popular(
    store: Any,
    k: int = 50,
    epsilon: float = 1.0,
    items_per_user: int = 5,
    budget: float = 1.0,
    window_days: float | None = None,
    now: float | None = None,
    name: str | None = None,
) -> Release:
    """The ``k`` items the most users played (within the last ``window_days``: trending),
    released with user-level ``epsilon``-DP; the budget is spent first, and the release is
    kept in the store (state ``release``, key ``name``: ``popular`` or ``trending``).

    Raises:
        BudgetSpentError: the day's budget would be overspent.
    """
    now = time.time() if now is None else now
    name = name or ("trending" if window_days else "popular")
    events = store.events(include_excluded=False).select("user_id", "item_id", "ts")
    if window_days:
        events = events.filter(pl.col("ts") >= now - window_days * 86400.0)
    left = spend(store, name, epsilon, budget, now)
    items, counts = bounded_counts(events, items_per_user)
    noisy, scale = noisy_counts(counts, items_per_user, epsilon)
    order = np.lexsort((np.arange(len(noisy)), -noisy))[:k]
    rel = Release(
        name=name,
        items=[items[i] for i in order],
        counts=[int(noisy[i]) for i in order],
        epsilon=float(epsilon),
        delta=0.0,
        items_per_user=int(items_per_user),
        scale=float(scale),
        window_days=window_days,
        released_at=now,
        budget_left=float(left),
    )
    store.put_state(RELEASE_KIND, name, rel.to_dict())
    return rel
