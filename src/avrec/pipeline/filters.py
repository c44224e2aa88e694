"""Which items a request may get: category, language, duration range, availability window.

:class:`ItemFilter` is what a caller asks for; :class:`ItemFacts` holds the catalogue fields it
needs as arrays (saved in a pipeline bundle), and turns a filter into a boolean mask over the
items. The mask travels in the :class:`~avrec.pipeline.sources.Request` and every source applies
it where it searches (inside FAISS, before a top-n), so a filter never shortens the list while
enough items pass it.

Availability is always applied: an item whose ``available_from``/``available_until`` window
does not contain the request time is never recommended, filter or not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from avrec.data.dataset import Dataset
from avrec.errors import ConfigError
from avrec.storage.artifacts import from_json_array, json_array

__all__ = ["ItemFacts", "ItemFilter"]


@dataclass
class ItemFilter:
    """What the items of a list must satisfy (``None``: no condition).

    Attributes:
        categories: at least one of these categories or tags (case-insensitive).
        languages: one of these languages (items without a language fail this condition).
        min_duration, max_duration: seconds, inclusive; items without a duration fail a
            duration condition.
        exclude_categories: none of these categories or tags.
        year_from, year_to: the item's year (release, else creation), inclusive; items
            without one fail a year condition.
    """

    categories: Sequence[str] | None = None
    languages: Sequence[str] | None = None
    min_duration: float | None = None
    max_duration: float | None = None
    exclude_categories: Sequence[str] | None = None
    year_from: int | None = None
    year_to: int | None = None

    def __post_init__(self) -> None:
        lo, hi = self.min_duration, self.max_duration
        if lo is not None and lo < 0:
            raise ConfigError(f"min_duration must be >= 0, got {lo}")
        if lo is not None and hi is not None and hi < lo:
            raise ConfigError(f"max_duration ({hi}) is below min_duration ({lo})")
        if self.year_from is not None and self.year_to is not None:
            if self.year_to < self.year_from:
                raise ConfigError(
                    f"year_to ({self.year_to}) is before year_from ({self.year_from})"
                )

    @property
    def empty(self) -> bool:
        return (
            not self.categories
            and not self.languages
            and self.min_duration is None
            and self.max_duration is None
            and not self.exclude_categories
            and self.year_from is None
            and self.year_to is None
        )


class ItemFacts:
    """Per-item catalogue fields for filters, as arrays."""

    def fit(self, dataset: Dataset) -> ItemFacts:
        n = dataset.n_items
        labels = [
            sorted({x.lower() for x in (*t, *c)})
            for t, c in zip(dataset.item_tags, dataset.item_categories, strict=True)
        ]
        language = [(x or "").lower() for x in dataset.item_field("language")]
        # the genres (categories) apart from free tags: a request that names a genre is
        # filtered by it; a tag counts only when written as one ("#cats")
        self.genres = sorted({c.lower() for cats in dataset.item_categories for c in cats if c})
        self.duration = _floats(dataset.item_field("duration"), n)
        self.available_from = _floats(dataset.item_field("available_from"), n)
        self.available_until = _floats(dataset.item_field("available_until"), n)
        self.year = _years(dataset)
        self._index(labels, language)
        return self

    def _index(self, labels: list[list[str]], language: list[str]) -> None:
        groups: dict[str, list[int]] = {}
        for i, labs in enumerate(labels):
            for lab in labs:
                groups.setdefault(lab, []).append(i)
        self.by_label = {k: np.asarray(v, np.int64) for k, v in groups.items()}
        langs: dict[str, list[int]] = {}
        for i, lang in enumerate(language):
            if lang:
                langs.setdefault(lang, []).append(i)
        self.by_language = {k: np.asarray(v, np.int64) for k, v in langs.items()}
        self._windows()

    def _windows(self) -> None:
        self._available: dict[int, np.ndarray] = {}
        self.windowed = bool(
            np.isfinite(self.available_from).any() or np.isfinite(self.available_until).any()
        )

    @property
    def n_items(self) -> int:
        return len(self.duration)

    def state(self) -> dict[str, np.ndarray]:
        # the label and language indexes themselves (label -> items), so a bundle loads
        # without a pass over every item
        out = {}
        for name, index in (("label", self.by_label), ("lang", self.by_language)):
            keys = sorted(index)
            out[f"{name}_keys"] = json_array(keys)
            out[f"{name}_ptr"] = np.cumsum([0, *(len(index[k]) for k in keys)]).astype(np.int64)
            out[f"{name}_items"] = (
                np.concatenate([index[k] for k in keys]) if keys else np.zeros(0, np.int64)
            )
        return {
            **out,
            "genres": json_array(self.genres),
            "duration": self.duration,
            "available_from": self.available_from,
            "available_until": self.available_until,
            "year": self.year,
        }

    def set_state(self, arrays: dict[str, np.ndarray]) -> ItemFacts:
        self.duration = arrays["duration"]
        self.available_from = arrays["available_from"]
        self.available_until = arrays["available_until"]
        self.year = arrays["year"]
        self.genres = from_json_array(arrays["genres"])
        indexes = []
        for name in ("label", "lang"):
            keys = from_json_array(arrays[f"{name}_keys"])
            ptr, items = arrays[f"{name}_ptr"], arrays[f"{name}_items"]
            indexes.append({k: items[ptr[j] : ptr[j + 1]] for j, k in enumerate(keys)})
        self.by_label, self.by_language = indexes
        self._windows()
        return self

    def available(self, t: float) -> np.ndarray | None:
        """Items whose availability window contains ``t`` (``None``: every item). Cached per
        second of ``t`` (serving asks at "now" again and again)."""
        if not self.windowed:
            return None
        key = int(t)
        hit = self._available.get(key)
        if hit is None:
            with np.errstate(invalid="ignore"):
                hit = ~(self.available_from > t) & ~(self.available_until < t)
            hit.flags.writeable = False
            if len(self._available) >= 64:
                self._available.pop(next(iter(self._available)))
            self._available[key] = hit
        return hit

    def mask(self, flt: ItemFilter | None, t: float | None = None) -> np.ndarray | None:
        """The items ``flt`` allows and that are available at ``t`` (``None``: all items)."""
        out = self.available(t) if t is not None else None
        if flt is None or flt.empty:
            return out
        ok = np.ones(self.n_items, bool) if out is None else out.copy()
        if flt.categories:
            ok &= self._any_of(self.by_label, flt.categories)
        if flt.languages:
            ok &= self._any_of(self.by_language, flt.languages)
        with np.errstate(invalid="ignore"):
            if flt.min_duration is not None:
                ok &= self.duration >= flt.min_duration
            if flt.max_duration is not None:
                ok &= self.duration <= flt.max_duration
            if flt.year_from is not None:
                ok &= self.year >= flt.year_from
            if flt.year_to is not None:
                ok &= self.year <= flt.year_to
        if flt.exclude_categories:
            ok &= ~self._any_of(self.by_label, flt.exclude_categories)
        return ok

    def _any_of(self, index: dict[str, np.ndarray], keys: Sequence[str]) -> np.ndarray:
        """Items listed in ``index`` under any of ``keys`` (case-insensitive)."""
        hit = np.zeros(self.n_items, bool)
        for key in keys:
            idx = index.get(str(key).lower())
            if idx is not None:
                hit[idx] = True
        return hit


def _floats(values: list, n: int) -> np.ndarray:
    out = np.full(n, np.nan)
    for i, v in enumerate(values[:n]):
        if v is not None:
            try:
                out[i] = float(v)
            except (TypeError, ValueError):
                pass
    return out


def _years(dataset: Dataset) -> np.ndarray:
    """Each item's year: a ``year`` attribute when the catalogue has one, else the UTC year
    of ``created_at`` (NaN when neither is known)."""
    import datetime as dt

    n = dataset.n_items
    out = np.full(n, np.nan)
    created = _floats(dataset.item_field("created_at"), n)
    for i in np.flatnonzero(np.isfinite(created)):
        try:
            out[i] = dt.datetime.fromtimestamp(created[i], dt.UTC).year
        except (OverflowError, OSError, ValueError):
            pass
    if "attributes" in dataset.catalogue.columns:
        import json

        for i, a in enumerate(dataset.catalogue["attributes"].to_list()[:n]):
            if not isinstance(a, str) or '"year"' not in a:
                continue
            try:
                y = int(float(json.loads(a)["year"]))
            except (TypeError, ValueError, KeyError, json.JSONDecodeError):
                continue
            if 1800 <= y <= 2200:
                out[i] = y
    return out
