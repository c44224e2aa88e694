"""The ``people`` source: items sharing people, a series or tags with what the user
liked (the knowledge graph's links).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from avrec.data.dataset import Dataset
from avrec.errors import ConfigError
from avrec.pipeline.sources.base import Candidates, Request, Source, register_source

__all__ = ["PeopleSource"]


@register_source
class PeopleSource(Source):
    """Items sharing people (directors, cast, artists, hosts, and people named in the item's
    text), a series, or tags with what the user liked: the knowledge graph's links.

    An item's score sums, over the user's history items it shares something with, the event
    weight times an IDF of each shared person or tag (a rare director says more than the tag
    "music"); the anchor is the history item contributing most.

    Args:
        use: which links count: ``people``, ``tags`` (tags and categories), or both.
        recent: only the latest this many history items are anchors.
        max_link_items: a person or tag on more items than this is ignored (it says little,
            and would make every request touch all of those items).
    """

    kind = "people"
    uses_events = False  # links come from the catalogue

    def __init__(
        self,
        use: Sequence[str] = ("people", "tags"),
        recent: int = 50,
        max_link_items: int = 50_000,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        bad = set(use) - {"people", "tags"}
        if bad:
            raise ConfigError(f"people source: unknown link kinds {sorted(bad)}")
        self.use = tuple(use)
        self.recent = recent
        self.max_link_items = max_link_items

    def _fit(self, dataset: Dataset) -> None:
        keys: dict[str, int] = {}
        rows, cols = [], []
        people = dataset.item_people if "people" in self.use else [[]] * dataset.n_items
        tags = dataset.item_tags if "tags" in self.use else [[]] * dataset.n_items
        cats = dataset.item_categories if "tags" in self.use else [[]] * dataset.n_items
        # the knowledge graph's other links: people the analysis found named in an item's
        # text (not credited) and the series it belongs to
        from avrec.language.graph import _series

        texts = getattr(dataset, "item_texts", {}) or {}
        ids = dataset.items.lookup(np.arange(dataset.n_items)) if texts else []
        series = _series(dataset) if "people" in self.use else [""] * dataset.n_items
        for i in range(dataset.n_items):
            links = {f"p:{p['name']}" for p in people[i] if p.get("name")}
            if texts and "people" in self.use:
                named = (texts.get(str(ids[i])) or {}).get("mentions", "")
                links |= {f"p:{m}" for m in named.split("\n") if m}
            if series[i]:
                links.add(f"s:{series[i]}")
            links |= {f"t:{t.lower()}" for t in (*tags[i], *cats[i])}
            for key in links:
                rows.append(i)
                cols.append(keys.setdefault(key, len(keys)))
        self.link_names = list(keys)
        m = sp.csr_matrix(
            (np.ones(len(rows), np.float32), (rows, cols)), shape=(dataset.n_items, len(keys))
        )
        df = np.asarray(m.sum(axis=0)).ravel()
        idf = np.log((1 + dataset.n_items) / (1 + df)).astype(np.float32)
        idf[df <= 1] = 0.0  # a link only one item has leads nowhere
        # a tag half a million items share says little and costs a pass over all of them
        idf[df > self.max_link_items] = 0.0
        self._set_links(m.tocsr(), idf)

    def _set_links(self, links: sp.csr_matrix, idf: np.ndarray) -> None:
        self.item_links = links
        self.idf = idf
        self.weighted = (links @ sp.diags(idf)).tocsr()
        self.weighted.eliminate_zeros()  # links that lead nowhere cost nothing per request
        self.by_link = self.weighted.T.tocsr()  # links x items: a request reads its links' rows

    def _state(self) -> dict[str, np.ndarray]:
        m = self.item_links
        return {
            "names": np.asarray(self.link_names, dtype=str),
            "indptr": m.indptr,
            "indices": m.indices,
            "shape": np.asarray(m.shape),
            "idf": self.idf,
        }

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.link_names = arrays["names"].tolist()
        shape = tuple(int(x) for x in arrays["shape"])
        data = np.ones(len(arrays["indices"]), np.float32)
        links = sp.csr_matrix((data, arrays["indices"], arrays["indptr"]), shape=shape)
        self._set_links(links, arrays["idf"])

    def shared(self, a: int, b: int) -> list[str]:
        """The people and tags items ``a`` and ``b`` share (for explanations)."""
        la = set(self.item_links[a].indices)
        lb = set(self.item_links[b].indices)
        return sorted(self.link_names[k] for k in la & lb)

    def _retrieve(self, requests: list[Request], n: int) -> list[Candidates]:
        out = []
        for req in requests:
            ok = (req.history >= 0) & (req.history < self.n_items)
            h = req.history[ok][-self.recent :]
            w = np.asarray(req.weights, np.float32)[ok][-self.recent :]
            pos = w > 0
            h, w = h[pos], w[pos]
            if not len(h):
                out.append(Candidates([], []))
                continue
            # each item's score: the history's weighted links, summed through the items'
            # idf-weighted links (one sparse product over the links the history has)
            via = self.item_links[h].T @ w.astype(np.float64)
            linked = np.flatnonzero(via)
            scores = self.by_link[linked].T @ via[linked]
            touched = np.flatnonzero(scores > 0)
            scores = scores[touched]
            keep = ~np.isin(touched, req.exclude)
            if req.allowed is not None:
                keep &= req.allowed[touched]
            touched, scores = touched[keep], scores[keep]
            if not len(touched):
                out.append(Candidates([], []))
                continue
            m = min(n, len(touched))
            part = np.argpartition(-scores, m - 1)[:m] if m < len(touched) else np.arange(m)
            part = part[np.lexsort((touched[part], -scores[part]))]
            items = touched[part]
            # the anchor of each chosen item: the history row contributing most to it (the
            # first such row on a tie)
            contrib = (self.item_links[h] @ self.weighted[items].T).toarray() * w[:, None]
            anchors = h[np.argmax(contrib, axis=0)].astype(np.int64)
            out.append(Candidates(items, scores[part].astype(np.float32), anchors))
        return out
