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
from dataclasses import asdict, dataclass
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bounded_counts(
    events: pl.DataFrame,
    items_per_user: int,
    seed: int | None = None,
    domain: list[str] | None = None,
) -> tuple[list[str], np.ndarray]:
    """Per item of ``domain`` (default: the items ``events`` name), how many users played
    it, each user counted for at most ``items_per_user`` distinct items: a uniform sample of
    theirs when they have more (:func:`~avrec.privacy.training.bound_rows`, drawn with
    ``seed``). Items of the domain nobody played count 0; events of other items are left
    out. ``events`` has ``user_id, item_id``."""
    import scipy.sparse as sp

    from avrec.privacy.training import bound_rows

    if items_per_user < 1:
        raise ConfigError("items_per_user must be at least 1")
    pairs = events.select("user_id", "item_id").unique()
    names = np.asarray(
        sorted(set(domain) if domain is not None else set(pairs["item_id"].to_list())), object
    )
    if domain is not None:
        pairs = pairs.filter(pl.col("item_id").is_in(list(names)))
    if not len(names):
        return [], np.zeros(0, np.int64)
    _, users = np.unique(pairs["user_id"].to_numpy(), return_inverse=True)
    cols = np.searchsorted(names, pairs["item_id"].to_numpy().astype(object))
    x = sp.csr_matrix(
        (np.ones(len(cols)), (users, cols)), shape=(int(users.max(initial=-1)) + 1, len(names))
    )
    kept = bound_rows(x, items_per_user, np.random.default_rng(seed))
    return names.tolist(), np.asarray(kept.sum(axis=0)).ravel().astype(np.int64)


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
    # the items a release may name are the catalogue's, a public list: an item that only
    # events name (a placeholder) would tell that someone played it
    domain = store.items(include_placeholders=False)["item_id"].to_list()
    if not domain:
        raise ConfigError("a release names catalogue items only: ingest the catalogue first")
    events = store.events(include_excluded=False).select("user_id", "item_id", "ts")
    if window_days:
        events = events.filter(pl.col("ts") >= now - window_days * 86400.0)
    left = spend(store, name, epsilon, budget, now)
    items, counts = bounded_counts(events, items_per_user, domain=domain)
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
