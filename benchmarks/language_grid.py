"""The search's fusion settings, chosen on development requests (used by
``benchmarks.language``).

A request in the catalogue's own language and one that crosses languages are fused at
different weights (``SearchIndex.weights`` and ``cross_weights``): each class has its grid,
measured on the development sets of that class only (the request sets' development halves,
and MovieLens-100K's rule-made requests from the split's validation items). The keyword
evidence boost is one setting for both.

Each development request's ranked lists (``SearchIndex.legs``, every leg, read
``depth`` deep) are computed once; every cell of the grid then fuses them by weighted
reciprocal rank as ``SearchIndex.fuse`` does (ties to the lower item index, the first 100
kept), all cells at once as one matrix product. :func:`check` runs the real ``fuse`` at the
chosen cell and counts the requests whose rank differs (expected 0; rounding can break a
tie the other way).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from avrec.language.search import RETRIEVERS

#: the grid: the keyword evidence boost (one for both classes), then per class the weights
#: of e5 over the request (semantic), USE (multilingual) and e5 over the descriptions; for
#: requests that cross languages also e5 over the word-by-word translation (translated) and
#: whether the translation's words join the keyword leg. keyword 1 and title 0.5 are fixed.
EVIDENCE = (256.0, 1024.0, 4096.0)
SEMANTIC = (0.0, 1.0, 3.0, 6.0, 12.0)
MULTILINGUAL = (0.75, 1.5, 3.0, 6.0)
DESCRIPTION = (0.0, 1.0, 3.0, 6.0)
TRANSLATED = (0.0, 1.0, 2.0, 4.0)
TRANSLATE_KEYWORDS = (False, True)
FIXED = {"keyword": 1.0, "title": 0.5}
PARAMS = {
    "same": ("semantic", "multilingual", "description"),
    "cross": ("semantic", "multilingual", "description", "translated", "translate_keywords"),
}
VALUES = {
    "semantic": SEMANTIC,
    "multilingual": MULTILINGUAL,
    "description": DESCRIPTION,
    "translated": TRANSLATED,
    "translate_keywords": TRANSLATE_KEYWORDS,
}
#: the rank a request's target must reach to count for MRR (as in the tables)
DEPTH = 100


def cells(kind: str) -> list[dict]:
    """Every cell of ``kind``'s (``same`` or ``cross``) grid, without the evidence boost."""
    names = PARAMS[kind]
    out = []
    for values in itertools.product(*(VALUES[n] for n in names)):
        cell = dict(zip(names, values, strict=True))
        if kind == "same":
            cell["translated"] = 0.0
        out.append(cell)
    return out


def key(kind: str, ev: float, cell: dict) -> str:
    """A cell's name: the evidence boost, then the class's parameters in :data:`PARAMS`."""
    return ",".join([f"{ev:g}", *(f"{float(cell[n]):g}" for n in PARAMS[kind])])


def weights(cell: dict) -> dict[str, float]:
    """The retriever weights of a cell."""
    return {**FIXED, **{n: float(cell.get(n, 0.0)) for n in RETRIEVERS if n not in FIXED}}


@contextmanager
def memoised(search) -> Iterator[None]:  # noqa: ANN001
    """The index's query encoders with every answer kept while inside (one development
    request is fused at many settings; e5 and USE are the slow part)."""
    saved = {}
    for name in ("encode_query", "encode_multilingual_query"):
        fn = getattr(search, name)
        seen: dict = {}
        saved[name] = search.__dict__.get(name)

        def call(q: str, fn=fn, seen=seen) -> np.ndarray:  # noqa: ANN001
            if q not in seen:
                seen[q] = fn(q)
            return seen[q]

        setattr(search, name, call)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                search.__dict__.pop(name, None)
            else:
                setattr(search, name, old)


def _matrix(legs, rrf_k: float) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    """The union of ``legs``' items (sorted) and one row per retriever of
    ``1 / (rrf_k + rank)`` (0 where the retriever did not find the item)."""
    lists = [v for v in legs.lists.values() if len(v)]
    items = np.unique(np.concatenate(lists)) if lists else np.zeros(0, np.int64)
    r = np.zeros((len(RETRIEVERS), len(items)), np.float64)
    for name, found in legs.lists.items():
        if len(found):
            r[RETRIEVERS.index(name), np.searchsorted(items, found)] = 1.0 / (
                rrf_k + np.arange(1, len(found) + 1)
            )
    return items, r


def ranks(legs, target: int, w: np.ndarray, rrf_k: float) -> np.ndarray:  # noqa: ANN001
    """The target's rank (0: not in the first :data:`DEPTH`) under each row of ``w`` (cells
    x retrievers, the evidence boost already applied)."""
    items, r = _matrix(legs, rrf_k)
    at = np.searchsorted(items, target)
    if at >= len(items) or items[at] != target:
        return np.zeros(len(w), np.int64)
    s = w @ r
    st = s[:, at : at + 1]
    ahead = (s > st) | ((s == st) & (items < target)[None, :] & (s > 0))
    out = ahead.sum(1) + 1
    out[(st[:, 0] <= 0) | (out > DEPTH)] = 0
    return out


def measure(search, dev_sets: dict[str, list]) -> dict:  # noqa: ANN001
    """``{kind: {cell key: {set: MRR, ...}}}`` over the development sets (each a list of
    ``(query, user, target)``), each request in the class it falls in (crossing languages
    or not)."""
    plan = {kind: cells(kind) for kind in ("same", "cross")}
    w_base = {kind: np.asarray([[weights(c)[n] for n in RETRIEVERS] for c in cs])
              for kind, cs in plan.items()}  # fmt: skip
    kw = RETRIEVERS.index("keyword")
    rr: dict = {kind: {} for kind in plan}  # kind -> set -> list of (evidence -> ranks)
    all_on = dict.fromkeys(RETRIEVERS, 1.0)
    with memoised(search):
        for set_name, queries in dev_sets.items():
            for q, _, target in queries:
                kind = "cross" if search.crosses(q) else "same"
                tks = TRANSLATE_KEYWORDS if kind == "cross" else (False,)
                per_ev = {ev: np.zeros(len(plan[kind]), np.int64) for ev in EVIDENCE}
                for tk in tks:
                    legs = search.legs(q, k=10, weights=all_on, translate_keywords=tk)
                    rows = np.asarray(
                        [c.get("translate_keywords", False) == tk for c in plan[kind]]
                    )
                    for ev in EVIDENCE:
                        w = w_base[kind].copy()
                        if legs.evidence:
                            w[:, kw] *= ev
                        per_ev[ev][rows] = ranks(legs, target, w[rows], search.rrf_k)
                rr[kind].setdefault(set_name, []).append(per_ev)
    out: dict = {}
    for kind, by_set in rr.items():
        grid: dict = {}
        for set_name, rows in by_set.items():
            for ev in EVIDENCE:
                rk = np.stack([r[ev] for r in rows])  # requests x cells
                mrr = np.where(rk > 0, 1.0 / np.maximum(rk, 1), 0.0).mean(0)
                for cell, m in zip(plan[kind], mrr.tolist(), strict=True):
                    grid.setdefault(key(kind, ev, cell), {})[set_name] = m
        out[kind] = grid
    return out


def choose(grids: list[dict]) -> tuple[dict, dict]:
    """The setting with the best mean development MRR over every development set of every
    catalogue in ``grids``: for each evidence boost, each class's best cell; the boost whose
    two best cells give the best mean over all sets (at three decimals; ties to the smaller
    values). Returns ``({"keyword_evidence", "same": cell, "cross": cell}, means)`` where
    ``means[kind][cell key]`` is the mean MRR over that class's sets."""
    means: dict = {}
    counts: dict = {}
    for kind in ("same", "cross"):
        pooled: dict = {}
        for g in grids:
            for k, per in g.get(kind, {}).items():
                pooled.setdefault(k, []).extend(per.values())
        means[kind] = {k: float(np.mean(v)) for k, v in pooled.items()}
        counts[kind] = max((len(v) for v in pooled.values()), default=0)

    def order(k: str, table: dict) -> tuple:
        return (round(table[k], 3), *(-float(x) for x in k.split(",")))

    best: dict = {}
    for ev in EVIDENCE:
        pick, total = {}, 0.0
        for kind in ("same", "cross"):
            table = {k: v for k, v in means[kind].items() if float(k.split(",")[0]) == ev}
            if not table:
                continue
            k = max(table, key=lambda k, t=table: order(k, t))
            pick[kind] = k
            total += table[k] * counts[kind]
        n = sum(counts.values())
        score = round(total / max(n, 1), 3)
        if not best or (score, -ev) > (best["score"], -best["ev"]):
            best = {"score": score, "ev": ev, "pick": pick}
    chosen: dict = {"keyword_evidence": best.get("ev", EVIDENCE[0])}
    for kind, k in best.get("pick", {}).items():
        values = [float(x) for x in k.split(",")[1:]]
        chosen[kind] = dict(zip(PARAMS[kind], values, strict=True))
    return chosen, means


def check(search, dev_sets: dict[str, list], chosen: dict) -> dict:  # noqa: ANN001
    """The chosen cells' development ranks through the real ``SearchIndex.fuse``: how many
    requests the grid ranked differently (a sanity check of the matrix fusion)."""
    same = 0
    total = 0
    with memoised(search):
        for queries in dev_sets.values():
            for q, _, target in queries:
                kind = "cross" if search.crosses(q) else "same"
                cell = chosen.get(kind)
                if cell is None:
                    continue
                tk = bool(cell.get("translate_keywords", False))
                legs = search.legs(q, k=10, weights=dict.fromkeys(RETRIEVERS, 1.0),
                                   translate_keywords=tk)  # fmt: skip
                hits = search.fuse(legs, k=DEPTH, explain=False, weights=weights(cell),
                                   keyword_evidence=chosen["keyword_evidence"])  # fmt: skip
                found = [h.item for h in hits]
                real = found.index(target) + 1 if target in found else 0
                w = np.asarray([[weights(cell)[n] for n in RETRIEVERS]])
                if legs.evidence:
                    w[:, RETRIEVERS.index("keyword")] *= chosen["keyword_evidence"]
                same += int(ranks(legs, target, w, search.rrf_k)[0] == real)
                total += 1
    return {"requests": total, "same_rank": same}
