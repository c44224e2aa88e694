"""What was popular when: item play counts in windows that end at the request's time.

A request made on day ``t`` should see what people played in the days before ``t``, never
after, whether ``t`` is now (serving) or a user's last event (evaluation, ranker training).
:class:`ItemTimeline` keeps each item's event times sorted once, so a window count for a few
hundred candidates is two vectorised binary searches, and the time-decayed popularity of every
item at ``t`` (the ``trending`` source) is one pass over the events of the window.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from avrec.data.dataset import Dataset

__all__ = ["ItemTimeline"]

_SHIFT = np.int64(1) << np.int64(34)  # 2**34 s is 544 years: room for any span of event times


class ItemTimeline:
    """Sorted event times per item, for counts in windows before a given time."""

    def fit(self, dataset: Dataset) -> ItemTimeline:
        self.n_items = dataset.n_items
        ts = np.asarray(dataset.ts, np.float64)
        self.t0 = float(ts.min()) if len(ts) else 0.0
        self.now = float(ts.max()) if len(ts) else 0.0
        self._set(np.asarray(dataset.item_index, np.int64), ts)
        return self

    def _set(self, items: np.ndarray, ts: np.ndarray) -> None:
        rel = np.round(ts - self.t0).astype(np.int64)
        self.keys = np.sort(items * _SHIFT + rel)
        by_time = np.argsort(rel, kind="stable")
        self.time_sorted = rel[by_time]
        self.item_by_time = items[by_time]
        first = np.full(self.n_items, np.inf)
        if len(items):
            np.minimum.at(first, items, rel.astype(np.float64))
        self.first = first  # seconds after t0, inf for items never played
        self._plays = None

    @property
    def plays(self) -> np.ndarray:
        """Every item's events in total (kept after the first call)."""
        got = getattr(self, "_plays", None)
        if got is None:
            got = np.bincount(self.keys // _SHIFT, minlength=self.n_items).astype(np.float64)
            self._plays = got
        return got

    def state(self) -> dict[str, np.ndarray]:
        items = self.keys // _SHIFT
        return {
            "items": items,
            "rel": self.keys - items * _SHIFT,
            "meta": np.asarray([self.t0, self.now, self.n_items], np.float64),
        }

    def set_state(self, arrays: dict[str, np.ndarray]) -> ItemTimeline:
        self.t0, self.now, n = (float(x) for x in arrays["meta"])
        self.n_items = int(n)
        self._set(arrays["items"].astype(np.int64), arrays["rel"].astype(np.float64) + self.t0)
        return self

    def _rel(self, t: float | None) -> int:
        return int(round((self.now if t is None else t) - self.t0))

    def hour(self, t: float | None) -> int:
        """``t`` rounded down to the hour, in seconds after the first event."""
        return (self._rel(t) // 3600) * 3600

    def counts(self, items: np.ndarray, t: float | None, window_s: float | None) -> np.ndarray:
        """Events of each item in ``[t - window_s, t]`` (``t``: the request time, ``None`` for
        the newest event; ``window_s`` ``None``: every event up to ``t``)."""
        items = np.asarray(items, np.int64)
        hi = self._rel(t)
        base = items * _SHIFT
        right = np.searchsorted(self.keys, base + hi, side="right")
        lo = base if window_s is None else base + (hi - int(window_s))
        left = np.searchsorted(self.keys, np.maximum(lo, base), side="left")
        return (right - left).astype(np.float32)

    def window_counts(
        self, items: np.ndarray, t: float | None, windows_s: Sequence[float | None]
    ) -> np.ndarray:
        """``len(items) x len(windows_s)``: :meth:`counts` for several windows that end at
        ``t`` in one pass (the window's end is searched once; the items are searched in
        sorted order, which numpy's binary search walks faster)."""
        items = np.asarray(items, np.int64)
        order = np.argsort(items, kind="stable")
        base = items[order] * _SHIFT
        hi = self._rel(t)
        right = np.searchsorted(self.keys, base + hi, side="right")
        out = np.empty((len(items), len(windows_s)), np.float32)
        for j, w in enumerate(windows_s):
            lo = base if w is None else np.maximum(base + (hi - int(w)), base)
            out[order, j] = right - np.searchsorted(self.keys, lo, side="left")
        return out

    def age_days(self, items: np.ndarray, t: float | None) -> np.ndarray:
        """Days from each item's first play to ``t``; NaN when it was not played by ``t``
        (an item first played later looks, at ``t``, like one never played: nothing may say
        that it will be)."""
        first = self.first[np.asarray(items, np.int64)]
        age = (self._rel(t) - first) / 86400.0
        return np.where(np.isfinite(first) & (age >= 0), age, np.nan).astype(np.float32)

    def decayed(self, t: float | None, half_life_days: float) -> np.ndarray:
        """Every item's play count at ``t``, each event weighted ``0.5 ** (age / half_life)``,
        events after ``t`` left out; events older than ten half-lives are ignored (weight below
        0.001). Not cached here: the trending source keeps what it serves from."""
        hi = self._rel(t)
        span = int(10 * half_life_days * 86400)
        lo_i = np.searchsorted(self.time_sorted, hi - span, side="left")
        hi_i = np.searchsorted(self.time_sorted, hi, side="right")
        age = (hi - self.time_sorted[lo_i:hi_i]) / 86400.0
        w = np.power(0.5, age / half_life_days)
        out = np.bincount(self.item_by_time[lo_i:hi_i], weights=w, minlength=self.n_items)
        return out.astype(np.float32)
