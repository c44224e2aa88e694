"""The ``catalogue`` source: what to show anyone when there is no behaviour to learn from.

A platform that is launching, or a catalogue loaded before its first event, still has a front
page. This source orders the catalogue by what the operator and the catalogue say, with no
events: items with an ``editorial_boost`` attribute first (higher first), then the newest
(``created_at``, else ``available_from``), then the rest in catalogue order; and it deals the
list round-robin over the items' first categories, so the first page shows the catalogue's range
rather than ten items of its largest category. A pipeline trained without events adds it (see
:meth:`avrec.pipeline.pipeline.Pipeline._fit`); trained again once events arrive, the pipeline
uses its configured sources.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from avrec.data.dataset import Dataset
from avrec.pipeline.sources import _GlobalSource, register_source

__all__ = ["CatalogueSource", "catalogue_order"]


def _number(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return 0.0
    return out if np.isfinite(out) else 0.0


def catalogue_order(boost: np.ndarray, born: np.ndarray, groups: list[str | None]) -> np.ndarray:
    """Item indices: by ``boost`` (descending), then ``born`` (newest first, unknown last),
    then index; dealt round-robin over ``groups`` in the order each group first appears."""
    n = len(boost)
    born_key = np.where(np.isfinite(born), -born, np.inf)
    base = np.lexsort((np.arange(n), born_key, -boost))
    queues: dict[str | None, list[int]] = {}
    for i in base:
        queues.setdefault(groups[i], []).append(int(i))
    lists = list(queues.values())
    out: list[int] = []
    depth = 0
    while len(out) < n:
        for q in lists:
            if depth < len(q):
                out.append(q[depth])
        depth += 1
    # boosted items keep their place ahead of the deal: an editor's pick is not dealt away
    boosted = [int(i) for i in base if boost[i] > 0]
    rest = [i for i in out if boost[i] <= 0]
    return np.asarray(boosted + rest, dtype=np.int64)


@register_source
class CatalogueSource(_GlobalSource):
    """Editorial picks, then new items, dealt across categories: the same list for everyone
    (minus what a request excludes), learned from the catalogue alone."""

    kind = "catalogue"
    uses_events = False

    def _fit(self, dataset: Dataset) -> None:
        n = dataset.n_items
        cat = dataset.catalogue
        boost = np.zeros(n)
        if "attributes" in cat.columns:
            for i, raw in enumerate(cat["attributes"].to_list()[:n]):
                if raw:
                    try:
                        attrs = json.loads(raw) if isinstance(raw, str) else raw
                    except json.JSONDecodeError:
                        continue
                    if isinstance(attrs, dict):
                        boost[i] = _number(attrs.get("editorial_boost"))
        born = np.full(n, np.nan)
        for col in ("available_from", "created_at"):  # created_at wins where both are known
            if col in cat.columns:
                vals = np.asarray(cat[col].to_numpy()[:n], dtype=np.float64)
                born[: len(vals)] = np.where(np.isfinite(vals), vals, born[: len(vals)])
        groups = [c[0] if c else None for c in dataset.item_categories]
        order = catalogue_order(boost, born, groups)
        scores = np.zeros(n, np.float32)
        scores[order] = np.arange(n, 0, -1, dtype=np.float32) / max(n, 1)
        self.scores = scores
