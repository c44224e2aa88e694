"""Sources whose list does not depend on the user's history, only on the time: ``popular``
(the fallback that answers anyone), ``trending`` (time-decayed popularity) and ``fresh`` (new
items with little history yet); and the helpers that keep and check their timelines.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Self

import numpy as np

from avrec.data.dataset import Dataset
from avrec.errors import ConfigError, NotFittedError
from avrec.pipeline.sources.base import (
    Candidates,
    Request,
    Source,
    _ranked,
    _top,
    _top_ranked,
    register_source,
)

__all__ = ["FreshSource", "PopularSource", "TrendingSource"]


class _GlobalSource(Source):
    """Sources whose list is the same for everyone (minus what each request excludes)."""

    scores: np.ndarray

    def fit(self, dataset: Dataset) -> Self:
        super().fit(dataset)
        self.order = _ranked(self.scores)
        return self

    def _retrieve(self, requests: list[Request], n: int) -> list[Candidates]:
        return [
            Candidates(*_top_ranked(self.order, self.scores, req.exclude, n, req.allowed))
            for req in requests
        ]

    def _state(self) -> dict[str, np.ndarray]:
        return {"scores": self.scores}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.scores = arrays["scores"]
        self.order = _ranked(self.scores)


@register_source
class PopularSource(_GlobalSource):
    """Most played items (distinct users): the fallback that answers anyone."""

    kind = "popular"

    def _fit(self, dataset: Dataset) -> None:
        counts = np.asarray((dataset.seen > 0).sum(axis=0)).ravel().astype(np.float32)
        self.scores = np.where(counts > 0, counts, -np.inf).astype(np.float32)


@register_source
class TrendingSource(Source):
    """Time-decayed play counts at the request's time: an event's weight halves every
    ``half_life_days`` before the request, and events after it do not count (a request made
    on day ``t`` sees what was trending on day ``t``; a request with no time sees the newest
    data)."""

    kind = "trending"

    def __init__(self, half_life_days: float = 7.0, name: str | None = None) -> None:
        super().__init__(name)
        if half_life_days <= 0:
            raise ConfigError("half_life_days must be positive")
        self.half_life_days = half_life_days

    def _fit(self, dataset: Dataset) -> None:
        from avrec.pipeline.temporal import ItemTimeline

        self._timeline_shared = False
        self._set_timeline(ItemTimeline().fit(dataset))

    def _set_timeline(self, timeline: Any) -> None:
        self.timeline = timeline
        self._now: tuple[np.ndarray, np.ndarray] | None = None
        self._past: OrderedDict[int, tuple[np.ndarray, np.ndarray, bool]] = OrderedDict()

    def use_timeline(self, timeline: Any) -> None:
        """Read ``timeline`` (the pipeline's, of the same events) instead of an own copy: a
        bundle then keeps one timeline for every part that needs one."""
        _check_same_timeline(getattr(self, "timeline", None), timeline, self.name)
        self._timeline_shared = True
        self._set_timeline(timeline)

    def scores_at(self, t: float | None) -> np.ndarray:
        """Every item's score at ``t`` (``-inf``: not played in the window). An explicit ``t``
        is rounded down to the hour (cached per hour, and never a later event); ``None`` is
        the newest event exactly."""
        if t is not None:
            t = self.timeline.t0 + self.timeline.hour(t)
        s = self.timeline.decayed(t, self.half_life_days)
        return np.where(s > 0, s, -np.inf).astype(np.float32)

    #: items kept per past hour (a request needing more, after its exclusions and filter,
    #: recomputes the whole list), and how many hours are kept
    SHORT_LIST = 1000
    HOURS_KEPT = 4096

    def _short_list(self, t: float) -> tuple[np.ndarray, np.ndarray, bool]:
        """The best ``SHORT_LIST`` items at ``t``'s hour, best first, and whether that is
        every item played in the window. A million-item catalogue costs one pass over the
        items per distinct hour, not per request."""
        key = self.timeline.hour(t)
        hit = self._past.get(key)
        if hit is not None:
            self._past.move_to_end(key)  # least recently used goes first
        else:
            scores = self.scores_at(t)
            finite = np.flatnonzero(np.isfinite(scores))
            m = min(self.SHORT_LIST, len(finite))
            if m < len(finite):
                finite = finite[np.argpartition(-scores[finite], m - 1)[:m]]
            top = finite[np.lexsort((finite, -scores[finite]))]
            hit = (top.astype(np.int64), scores[top], m == int(np.isfinite(scores).sum()))
            self._past[key] = hit
            if len(self._past) > self.HOURS_KEPT:
                self._past.popitem(last=False)
        return hit

    def _retrieve(self, requests: list[Request], n: int) -> list[Candidates]:
        _need_timeline(self)
        out = []
        for req in requests:
            if req.time is None:  # serving "now": one ordered list for every request
                if self._now is None:
                    scores = self.scores_at(None)
                    self._now = (scores, _ranked(scores))
                scores, order = self._now
                out.append(Candidates(*_top_ranked(order, scores, req.exclude, n, req.allowed)))
                continue
            # a request in the past (evaluation, ranker training)
            items, scores, complete = self._short_list(req.time)
            keep = ~np.isin(items, req.exclude)
            if req.allowed is not None:
                keep &= req.allowed[items]
            if keep.sum() >= n or complete:
                out.append(Candidates(items[keep][:n], scores[keep][:n]))
            else:
                out.append(Candidates(*_top(self.scores_at(req.time), req.exclude, n, req.allowed)))
        return out

    def _state(self) -> dict[str, np.ndarray]:
        return _timeline_state(self)

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._timeline_shared = "timeline_shared" in arrays
        self._set_timeline(_timeline_from(arrays))


@register_source
class FreshSource(Source):
    """New items with little history yet, newest first: catalogue items created within
    ``max_age_days`` before the request (or, without creation times, first played that
    recently) that fewer than ``max_users`` events have reached by then. At a past request
    time nothing later counts: an item created afterwards is not proposed."""

    kind = "fresh"

    def __init__(
        self, max_age_days: float = 30.0, max_users: int = 20, name: str | None = None
    ) -> None:
        super().__init__(name)
        self.max_age_days = max_age_days
        self.max_users = max_users

    def _fit(self, dataset: Dataset) -> None:
        from avrec.pipeline.temporal import ItemTimeline

        n = dataset.n_items
        created = np.full(n, np.nan)
        if "created_at" in dataset.catalogue.columns:
            vals = dataset.catalogue["created_at"].to_numpy()
            created[: len(vals)] = np.asarray(vals, dtype=np.float64)
        first = np.full(n, np.inf)
        if dataset.n_events:
            np.minimum.at(first, dataset.item_index, dataset.ts)
        self._timeline_shared = False
        self._set(np.where(np.isfinite(created), created, first), ItemTimeline().fit(dataset))

    def use_timeline(self, timeline: Any) -> None:
        """Read the pipeline's ``timeline`` (the same events) instead of an own copy."""
        _check_same_timeline(getattr(self, "timeline", None), timeline, self.name)
        self._timeline_shared = True
        self.timeline = timeline

    def _set(self, born: np.ndarray, timeline: Any) -> None:
        self.born = born
        self.timeline = timeline
        ok = np.flatnonzero(np.isfinite(born))
        self.by_birth = ok[np.lexsort((ok, -born[ok]))]  # newest first, ties by index
        self.neg_birth = -born[self.by_birth]  # ascending, for binary searches

    def _window(self, t: float | None) -> tuple[int, int, float]:
        """The slice of items (newest first) born in ``[t - max_age, t]``, and ``t``."""
        now = self.timeline.now if t is None else t
        lo = np.searchsorted(self.neg_birth, -now, side="left")
        hi = np.searchsorted(self.neg_birth, -(now - self.max_age_days * 86400.0), "right")
        return int(lo), int(hi), now

    def _pick(
        self, t: float | None, n: int, exclude: np.ndarray, allowed: np.ndarray | None
    ) -> Candidates:
        """The ``n`` newest fresh items at ``t``, read newest first in growing chunks (a
        million-item catalogue has hundreds of thousands born within a month)."""
        lo, hi, now = self._window(t)
        found: list[np.ndarray] = []
        got, step, start = 0, 4 * (n + len(exclude)), lo
        while start < hi and got < n:
            items = self.by_birth[start : min(hi, start + step)]
            start += len(items)
            step *= 2
            items = items[self.timeline.counts(items, t, None) < self.max_users]
            items = items[~np.isin(items, exclude)]
            if allowed is not None:
                items = items[allowed[items]]
            found.append(items)
            got += len(items)
        top = np.concatenate(found)[:n] if found else np.zeros(0, np.int64)
        return Candidates(top, (self.born[top] - now).astype(np.float32))

    def _retrieve(self, requests: list[Request], n: int) -> list[Candidates]:
        _need_timeline(self)
        return [self._pick(req.time, n, req.exclude, req.allowed) for req in requests]

    def _state(self) -> dict[str, np.ndarray]:
        return {"born": self.born, **_timeline_state(self)}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._timeline_shared = "timeline_shared" in arrays
        self._set(arrays["born"], _timeline_from(arrays))


def _timeline_state(src: Any) -> dict[str, np.ndarray]:
    """A source's timeline for its bundle: a marker when it reads the pipeline's."""
    if getattr(src, "_timeline_shared", False):
        return {"timeline_shared": np.asarray(True)}
    return {f"tl_{k}": v for k, v in src.timeline.state().items()}


def _timeline_from(arrays: dict[str, np.ndarray]) -> Any:
    """The timeline a bundle kept (``None`` when it is the pipeline's, handed over on load)."""
    from avrec.pipeline.temporal import ItemTimeline

    if "timeline_shared" in arrays:
        return None
    return ItemTimeline().set_state({k[3:]: v for k, v in arrays.items() if k.startswith("tl_")})


def _check_same_timeline(mine: Any, theirs: Any, name: str) -> None:
    if mine is not None and (
        mine.n_items != theirs.n_items
        or len(mine.keys) != len(theirs.keys)
        or mine.now != theirs.now
    ):
        raise ConfigError(f"source {name!r} was fitted on other events than the timeline given")


def _need_timeline(src: Any) -> None:
    if src.timeline is None:
        raise NotFittedError(
            f"source {src.name!r} reads the pipeline's timeline: load it with its pipeline"
        )
