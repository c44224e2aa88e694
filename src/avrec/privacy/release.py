"""Differentially private releases: popular and trending lists with user-level privacy.

What leaves the system about many people (the most played items, their play counts) is
released so that it does not reveal any one person. A list is released by one of two
mechanisms (``[privacy] release_mechanism``):

- **``top_k``** (the default; ``benchmarks/privacy.py`` chose it on MovieLens-100K): the
  ranked items alone, by OpenDP's noisy top-k (``make_noisy_top_k``: Gumbel noise added
  once, the ``k`` largest kept; Durfee and Rogers' one-shot top-k, zero-concentrated DP)
  over each item's count of distinct users, converted to ``(epsilon, delta)``-DP by
  OpenDP's tight zCDP conversion (``release_delta``). Adding or removing one user changes
  every count by at most one, all in the same direction (the L-infinity distance,
  monotonic), however many items they played: no user is bounded or sampled, so the list
  keeps the shape of the exact one. The noise scale is OpenDP's binary search for the
  largest ``epsilon`` the release may spend. No count is released.
- **``counts``**: the items and their noisy counts.

  1. **Bounding.** Each user contributes at most ``items_per_user`` distinct items (a
     uniform sample of theirs), each counted once: adding or removing a whole user changes
     the count vector by at most ``items_per_user`` in L1.
  2. **Noise.** OpenDP's Laplace mechanism on integers (the discrete Laplace,
     ``make_laplace`` over a vector of counts with the L1 distance) at scale
     ``items_per_user / epsilon``: ``epsilon``-DP for that user-level sensitivity, pure DP
     (``delta`` 0). OpenDP checks the privacy map; a release whose map says more than its
     ``epsilon`` is refused.

Both are then:

1. **Spent from a ledger.** Every release spends from the day's budget (``[privacy]
   release_budget_per_day``), kept in the store (state ``dp_ledger``) and spent in one
   transaction with the check: a release that would overspend is refused
   (:class:`~avrec.errors.BudgetSpentError`) and nothing is released.
2. **Post-processed.** The ranked list (and its noisy counts) is kept in the store (state
   ``release``) and served as often as asked without spending more.
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import polars as pl

from avrec.errors import BudgetSpentError, ConfigError

__all__ = [
    "Release",
    "bounded_counts",
    "noisy_counts",
    "noisy_top_k",
    "release_popular",
    "top_k_scale",
    "release_stats",
    "spend",
]

LEDGER_KIND = "dp_ledger"
RELEASE_KIND = "release"


@dataclass
class Release:
    """A released list: the items, their noisy counts, and its privacy terms."""

    name: str
    items: list[str]
    counts: list[int] | None  # None: the mechanism releases the ranking alone (top_k)
    epsilon: float
    delta: float
    items_per_user: int | None  # None: no user is bounded (top_k)
    scale: float
    mechanism: str
    window_days: float | None
    released_at: float
    budget_left: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bounded_counts(
    events: pl.DataFrame,
    items_per_user: int | None,
    seed: int | None = None,
    domain: list[str] | None = None,
) -> tuple[list[str], np.ndarray]:
    """Per item of ``domain`` (default: the items ``events`` name), how many users played
    it, each user counted for at most ``items_per_user`` distinct items: a uniform sample of
    theirs when they have more (:func:`~avrec.privacy.training.bound_rows`, drawn with
    ``seed``; ``None``: every item of theirs, once). Items of the domain nobody played
    count 0; events of other items are left out. ``events`` has ``user_id, item_id``."""
    import scipy.sparse as sp

    from avrec.privacy.training import bound_rows

    if items_per_user is not None and items_per_user < 1:
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
    kept = (
        x if items_per_user is None else bound_rows(x, items_per_user, np.random.default_rng(seed))
    )
    return names.tolist(), np.asarray(kept.sum(axis=0)).ravel().astype(np.int64)


def noisy_counts(
    counts: np.ndarray, items_per_user: int, epsilon: float
) -> tuple[np.ndarray, float]:
    """``counts`` with discrete Laplace noise for ``epsilon``-DP at the user-level L1
    sensitivity ``items_per_user`` (OpenDP), and the noise scale. (Any count vector whose
    L1 change by one user is at most ``items_per_user``.)

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


def noisy_top_k(
    counts: np.ndarray, k: int, epsilon: float, delta: float
) -> tuple[list[int], float]:
    """The indices of ``k`` of ``counts`` by OpenDP's noisy top-k, best first, and the noise
    scale: ``(epsilon, delta)``-DP for count vectors that one user moves by at most one
    per entry, all in the same direction (distinct users per item, a user added or
    removed). Zero-concentrated DP (Gumbel noise, one shot) converted to ``(epsilon,
    delta)`` by OpenDP; the scale is OpenDP's binary search for the privacy map.

    Raises:
        ConfigError: ``epsilon`` or ``delta`` out of range, or the map exceeds them.
    """
    k = min(int(k), len(counts))
    scale = top_k_scale(k, epsilon, delta)
    if k < 1:
        return [], scale
    meas, _ = _top_k(k, float(epsilon), float(delta))
    return [int(i) for i in meas([int(c) for c in counts])], scale


def top_k_scale(k: int, epsilon: float, delta: float) -> float:
    """The noise scale of :func:`noisy_top_k` for ``k`` picks (0 for none), its terms
    checked.

    Raises:
        ConfigError: ``epsilon`` or ``delta`` out of range, or no scale reaches them.
    """
    if not epsilon > 0:
        raise ConfigError(f"epsilon must be positive, got {epsilon}")
    if not 0 < delta < 1:
        raise ConfigError(f"a top-k release needs a delta in (0, 1), got {delta}")
    return _top_k(int(k), float(epsilon), float(delta))[1] if k >= 1 else 0.0


@functools.lru_cache(maxsize=64)
def _top_k(k: int, epsilon: float, delta: float) -> tuple[Any, float]:
    """The noisy top-k measurement for these terms and its scale (found once)."""
    import opendp.prelude as dp

    dp.enable_features("contrib")

    def make(scale: float) -> Any:
        top = dp.m.make_noisy_top_k(
            dp.vector_domain(dp.atom_domain(T=int)), dp.linf_distance(T=int, monotonic=True),
            dp.zero_concentrated_divergence(), k=k, scale=scale,
        )  # fmt: skip
        return dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(top), delta=delta)

    try:
        scale = float(dp.binary_search_param(make, d_in=1, d_out=(epsilon, delta), T=float))
    except dp.OpenDPException:
        raise ConfigError(f"no noise scale gives epsilon {epsilon:g} at delta {delta:g} for "
                          f"a top {k}") from None  # fmt: skip
    meas = make(scale)
    spent, d = meas.map(d_in=1)
    if spent > epsilon * (1 + 1e-9) or d > delta * (1 + 1e-9):
        raise ConfigError("the noisy top-k's privacy map exceeds epsilon")
    return meas, scale


def spend(
    store: Any, what: str, epsilon: float, budget: float, now: float | None = None,
    delta: float = 0.0,
) -> float:  # fmt: skip
    """Spend ``epsilon`` of the day's ``budget`` (UTC days) for ``what``, in one store
    transaction with the check; returns what is left of the day's budget. The ledger also
    records each release's ``delta`` and their sum (``delta_spent``): under basic
    composition a day's releases are ``(sum of epsilons, sum of deltas)``-DP together.

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
        ledger["delta_spent"] = float(ledger.get("delta_spent", 0.0)) + float(delta)
        ledger["releases"] = [*ledger["releases"], {"what": what, "epsilon": epsilon,
                                                    "delta": float(delta), "at": now}]  # fmt: skip
        # kept for 400 days: the ledger is the record of what was released
        store.put_state(LEDGER_KIND, day, ledger, ttl_s=400 * 86400.0)
    return budget - ledger["spent"]


def release_popular(
    store: Any,
    k: int = 50,
    epsilon: float = 1.0,
    items_per_user: int = 10,
    budget: float = 1.0,
    window_days: float | None = None,
    now: float | None = None,
    name: str | None = None,
    mechanism: str = "top_k",
    delta: float = 1e-6,
) -> Release:
    """The ``k`` items the most users played (within the last ``window_days``: trending),
    released with user-level DP by ``mechanism`` (``top_k``: the ranking alone,
    ``(epsilon, delta)``; ``counts``: with noisy counts, each user bounded to
    ``items_per_user`` items, pure ``epsilon``); the budget is spent first, and the release
    is kept in the store (state ``release``, key ``name``: ``popular`` or ``trending``).

    Raises:
        BudgetSpentError: the day's budget would be overspent.
        ConfigError: an unknown mechanism, or no catalogue.
    """
    if mechanism not in ("top_k", "counts"):
        raise ConfigError(f"release mechanism must be top_k or counts, got {mechanism!r}")
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
    if mechanism == "top_k":  # its terms checked (and its scale found) before spending
        top_k_scale(min(k, len(domain)), epsilon, delta)
    else:
        noisy_counts(np.zeros(0, np.int64), items_per_user, epsilon)
    left = spend(store, name, epsilon, budget, now, delta if mechanism == "top_k" else 0.0)
    if mechanism == "top_k":
        items, counts = bounded_counts(events, None, domain=domain)
        order, scale = noisy_top_k(counts, k, epsilon, delta)
        released, bound, d = None, None, float(delta)
    else:
        items, counts = bounded_counts(events, items_per_user, domain=domain)
        noisy, scale = noisy_counts(counts, items_per_user, epsilon)
        order = np.lexsort((np.arange(len(noisy)), -noisy))[:k].tolist()
        released, bound, d = [int(noisy[i]) for i in order], int(items_per_user), 0.0
    rel = Release(
        name=name,
        items=[items[i] for i in order],
        counts=released,
        epsilon=float(epsilon),
        delta=d,
        items_per_user=bound,
        scale=float(scale),
        window_days=window_days,
        released_at=now,
        budget_left=float(left),
        mechanism=mechanism,
    )
    store.put_state(RELEASE_KIND, name, rel.to_dict())
    return rel


#: what :func:`release_stats` releases, each with its share of epsilon
STATS = ("users", "active_users", "events", "events_by_type", "pairs", "active_items")


def bounded_events(events: pl.DataFrame, per_user: int, seed: int | None = None) -> pl.DataFrame:
    """``events`` with each user's kept to at most ``per_user`` (a uniform sample)."""
    if per_user < 1:
        raise ConfigError("events_per_user must be at least 1")
    rng = np.random.default_rng(seed)
    keyed = events.with_columns(pl.Series("_r", rng.random(events.height)))
    rank = pl.col("_r").rank("ordinal").over("user_id")
    return keyed.filter(rank <= per_user).drop("_r")


def release_stats(
    store: Any,
    event_types: list[str],
    epsilon: float = 1.0,
    events_per_user: int = 100,
    budget: float = 1.0,
    now: float | None = None,
) -> dict[str, Any]:
    """``avrec stats``'s figures about people, released with user-level ``epsilon``-DP.

    Each user's events are bounded to ``events_per_user`` (a uniform sample); then six
    counts, each with an equal share of ``epsilon`` (basic composition) and discrete Laplace
    noise at its user-level sensitivity: ``users`` and ``active_users`` (1 each),
    ``events``, ``events_by_type`` (over ``event_types``, the configured types: a type only
    one person used would be told by its name), ``pairs`` and ``active_items`` (catalogue
    items with events) (``events_per_user`` each). Means and densities are computed from
    the noisy counts (post-processing). Withheld: first and last event times, and the
    minimum, median and maximum events of a user (one person's figures). The catalogue's
    own counts are the operator's, released as they are. Spent from the day's budget and
    kept in the store (state ``release``, key ``stats``).

    Raises:
        BudgetSpentError: the day's budget would be overspent.
    """
    now = time.time() if now is None else now
    share = epsilon / len(STATS)
    left = spend(store, "stats", epsilon, budget, now)
    counts = store.counts()
    catalogue = store.items(include_placeholders=False)["item_id"].to_list()
    events = store.events(include_excluded=False).select("user_id", "item_id", "event")
    bounded = bounded_events(events, events_per_user)
    with_item = bounded.filter(pl.col("item_id").is_not_null())
    by_type = bounded.group_by("event").len()
    type_counts = dict(zip(by_type["event"].to_list(), by_type["len"].to_list(), strict=True))
    exact = {
        "users": [counts["users"]],
        "active_users": [with_item["user_id"].n_unique()],
        "events": [bounded.height],
        "events_by_type": [int(type_counts.get(t, 0)) for t in event_types],
        "pairs": [with_item.select("user_id", "item_id").unique().height],
        "active_items": [
            with_item.filter(pl.col("item_id").is_in(catalogue))["item_id"].n_unique()
        ],
    }
    sensitivity = {"users": 1, "active_users": 1}
    noisy: dict[str, Any] = {}
    scales: dict[str, float] = {}
    for name in STATS:
        sens = sensitivity.get(name, events_per_user)
        values, scales[name] = noisy_counts(np.asarray(exact[name], np.int64), sens, share)
        values = np.maximum(values, 0)  # post-processing: a count is not negative
        noisy[name] = values.tolist() if name == "events_by_type" else int(values[0])
    noisy["events_by_type"] = dict(zip(event_types, noisy["events_by_type"], strict=True))
    n_items = len(catalogue)
    out = {
        **noisy,
        "items": n_items,
        "events_per_user": {"mean": noisy["events"] / max(noisy["active_users"], 1)},
        "density": noisy["pairs"] / max(noisy["users"] * n_items, 1),
        "privacy": {
            "epsilon": float(epsilon),
            "delta": 0.0,
            "unit": "user",
            "events_per_user": int(events_per_user),
            "epsilon_each": share,
            "scales": scales,
            "mechanism": "discrete Laplace (OpenDP), per-user bounding, basic composition",
            "withheld": ["first_event", "last_event", "events_per_user min/median/max"],
        },
        "released_at": now,
        "budget_left": float(left),
    }
    store.put_state(RELEASE_KIND, "stats", out)
    return out
