"""Every known user's page ahead of time (``avrec precompute``).

The active bundle's recommendations with explanations are computed for each user it knows, in
batches, and kept in the store (state kind ``page``, keyed by user id, with the bundle that
made them), where every serving node finds them. A node serves a user's page from there while
nothing has made it stale: the same bundle, no event of that user since the bundle was
trained, no new item, default parameters; anything else is computed as before. Erasing a
user deletes their page.

On a Ray cluster (``engine="ray"``) the users go out in batches to actors (Ray Data's
``map_batches``), each loading the bundle once from its folder (which every node must reach);
the pages come back to this process, which writes them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avrec.models.base import ItemList

__all__ = ["PAGE_KIND", "PrecomputeReport", "page_list", "page_record", "precompute"]

#: the store's state kind of precomputed pages
PAGE_KIND = "page"


def page_record(lst: ItemList, model: str, k: int, lang: str) -> dict[str, Any]:
    """One user's page as kept in the store."""
    return {
        "model": model,
        "k": k,
        "lang": lang,
        "at": time.time(),
        "ids": list(lst.ids),
        "scores": [round(float(x), 6) for x in lst.scores.tolist()],
        "sources": list(lst.fields.get("sources", [[]] * len(lst))),
        "explanation": list(lst.fields.get("explanation", [{}] * len(lst))),
    }


def page_list(record: dict[str, Any], skip: set[str] | frozenset = frozenset()) -> ItemList:
    """A kept page as an :class:`ItemList`, the items in ``skip`` (deleted since) left out."""
    keep = [j for j, i in enumerate(record["ids"]) if i not in skip]
    return ItemList(
        [record["ids"][j] for j in keep],
        np.asarray([record["scores"][j] for j in keep], np.float64),
        {
            "sources": [record["sources"][j] for j in keep],
            "explanation": [record["explanation"][j] for j in keep],
        },
    )


@dataclass
class PrecomputeReport:
    users: int = 0
    pages: int = 0
    seconds: float = 0.0
    engine: str = "local"
    batches: list[float] = field(default_factory=list)  # seconds per batch

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__, batches=len(self.batches))


def _batches(users: Sequence[str], size: int) -> Iterator[list[str]]:
    for lo in range(0, len(users), size):
        yield list(users[lo : lo + size])


def precompute(
    model: Any,
    store: Any,
    label: str,
    k: int = 20,
    lang: str = "en",
    users: Sequence[str] | None = None,
    batch: int = 256,
    progress: Callable[[int, int], None] | None = None,
    engine: str = "local",
    bundle_path: str | None = None,
    address: str | None = None,
    workers: int | None = None,
) -> PrecomputeReport:
    """Compute and keep the pages of ``users`` (default: every user ``model`` knows).

    Args:
        model: the loaded pipeline bundle; ``label``: its name (``pipeline-v3``), as served.
        k: items kept per page (a request for up to ``k`` items, offset included, is served
            from it).
        engine: ``local`` (this process) or ``ray`` (``bundle_path`` is loaded by each actor).
    """
    t0 = time.perf_counter()
    who = list(model.users.ids if users is None else users)
    report = PrecomputeReport(users=len(who), engine=engine)
    if progress:
        progress(0, len(who))
    done = 0

    def keep(part: list[str], records: list[dict[str, Any]]) -> None:
        nonlocal done
        store.put_states(PAGE_KIND, dict(zip(part, records, strict=True)))
        report.pages += len(records)
        done += len(part)
        if progress:
            progress(done, len(who))

    if engine == "ray":
        from avrec.compute.ray import precompute_pages

        if bundle_path is None:
            raise ValueError("the ray engine needs the bundle's folder")
        for part, records in precompute_pages(
            bundle_path, label, who, k, lang, batch, address, workers
        ):
            keep(part, records)
    else:
        for part in _batches(who, batch):
            t = time.perf_counter()
            lists = model.recommend_explained(part, k=k, lang=lang)
            keep(part, [page_record(lst, label, k, lang) for lst in lists])
            report.batches.append(time.perf_counter() - t)
    report.seconds = time.perf_counter() - t0
    return report
