"""The search's fusion settings, chosen on development requests (used by
``benchmarks.language``).

Each language pair (a request's language, the catalogue's: ``en-en``, ``zh-zh``, ``zh-en``,
``en-zh``) is fused at weights of its own (``SearchIndex.pair_weights``): each pair has its
grid, measured on the development sets of that pair only (the request sets' development
halves, and MovieLens-100K's rule-made requests from the split's validation items). The
keyword evidence boost and whether a translation's words join BM25 are one setting for all.

Each development request's ranked lists (``SearchIndex.legs``, every leg, read
``depth`` deep) are computed once; every cell of the grid then fuses them by weighted
reciprocal rank as ``SearchIndex.fuse`` does (ties to the lower item index, the first 100
kept), all cells at once as one matrix product. :func:`check` runs the real ``fuse`` at the
chosen cells and counts the requests whose rank differs (expected 0; rounding can break a
tie the other way).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from avrec.language.search import RETRIEVERS

#: the grid: the keyword evidence boost and whether the translation's words join the keyword
#: leg (one for every pair), then per pair the weights of e5 over the request (semantic),
#: USE (multilingual) and e5 over the descriptions; for pairs that cross languages also e5
#: over the word-by-word translation (translated). keyword 1 and title 0.5 are fixed.
EVIDENCE = (256.0, 1024.0, 4096.0)
# widened where the last run chose an edge (zh-zh: semantic 12 and multilingual 6, the
# tops; the MovieLens pairs: multilingual 0.75, the bottom) and with USE at 1, a cell the
# equal-weights column held and the grid did not
SEMANTIC = (0.0, 1.0, 3.0, 6.0, 12.0, 24.0)
MULTILINGUAL = (0.5, 0.75, 1.0, 1.5, 3.0, 6.0, 12.0)
DESCRIPTION = (0.0, 1.0, 3.0, 6.0)
TRANSLATED = (0.0, 1.0, 2.0, 4.0)
TRANSLATE_KEYWORDS = (False, True)
FIXED = {"keyword": 1.0, "title": 0.5}
SAME = ("semantic", "multilingual", "description")
CROSS = ("semantic", "multilingual", "description", "translated")
VALUES = {
    "semantic": SEMANTIC,
    "multilingual": MULTILINGUAL,
    "description": DESCRIPTION,
    "translated": TRANSLATED,
}
#: the rank a request's target must reach to count for MRR (as in the tables)
DEPTH = 100


def crossing(pair: str) -> bool:
    a, b = pair.split("-")
    return a != b


def params(pair: str) -> tuple[str, ...]:
    """The weights the grid varies for ``pair``."""
    return CROSS if crossing(pair) else SAME


def cells(pair: str) -> list[dict]:
    """Every cell of ``pair``'s grid (its weights; for a crossing pair also whether the
    translation's words join BM25), without the evidence boost."""
    names = params(pair)
    tks = TRANSLATE_KEYWORDS if crossing(pair) else (False,)
    out = []
    for values in itertools.product(*(VALUES[n] for n in names)):
        for tk in tks:
            cell = dict(zip(names, values, strict=True))
            cell.setdefault("translated", 0.0)
            if crossing(pair):
                cell["translate_keywords"] = tk
            out.append(cell)
    return out


def key(pair: str, ev: float, cell: dict) -> str:
    """A cell's name: the evidence boost, the pair's weights in :func:`params` order, and
    for a crossing pair the keyword translation (0 or 1)."""
    parts = [f"{ev:g}", *(f"{float(cell[n]):g}" for n in params(pair))]
    if crossing(pair):
        parts.append(str(int(bool(cell["translate_keywords"]))))
    return ",".join(parts)


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
    """``{pair: {cell key: {set: MRR, ...}}}`` over the development sets (each a list of
    ``(query, user, target)``), each request in its own language pair."""
    plans: dict = {}
    rr: dict = {}  # pair -> set -> list of (evidence -> ranks per cell)
    kw = RETRIEVERS.index("keyword")
    all_on = dict.fromkeys(RETRIEVERS, 1.0)
    with memoised(search):
        for set_name, queries in dev_sets.items():
            for q, _, target in queries:
                pair = search.pair(q)
                if pair not in plans:
                    cs = cells(pair)
                    w = np.asarray([[weights(c)[n] for n in RETRIEVERS] for c in cs])
                    plans[pair] = (cs, w)
                cs, w_base = plans[pair]
                per_ev = {ev: np.zeros(len(cs), np.int64) for ev in EVIDENCE}
                tks = TRANSLATE_KEYWORDS if crossing(pair) else (False,)
                for tk in tks:
                    legs = search.legs(q, k=10, weights=all_on, translate_keywords=tk)
                    rows = np.asarray([bool(c.get("translate_keywords", False)) == tk for c in cs])
                    for ev in EVIDENCE:
                        w = w_base[rows].copy()
                        if legs.evidence:
                            w[:, kw] *= ev
                        per_ev[ev][rows] = ranks(legs, target, w, search.rrf_k)
                rr.setdefault(pair, {}).setdefault(set_name, []).append(per_ev)
    out: dict = {}
    for pair, by_set in rr.items():
        grid: dict = {}
        for set_name, rows in by_set.items():
            for ev in EVIDENCE:
                rk = np.stack([r[ev] for r in rows])  # requests x cells
                mrr = np.where(rk > 0, 1.0 / np.maximum(rk, 1), 0.0).mean(0)
                for cell, m in zip(plans[pair][0], mrr.tolist(), strict=True):
                    grid.setdefault(key(pair, ev, cell), {})[set_name] = m
        out[pair] = grid
    return out


def parse(pair: str, k: str) -> tuple[float, dict]:
    """A cell key back to its evidence boost and cell."""
    parts = k.split(",")
    cell: dict = dict(zip(params(pair), (float(x) for x in parts[1:]), strict=False))
    if crossing(pair):
        cell["translate_keywords"] = bool(int(parts[-1]))
    return float(parts[0]), cell


def choose(grids: list[dict]) -> tuple[dict, dict]:
    """The setting with the best mean development MRR over every development set of every
    catalogue in ``grids``: for each evidence boost and keyword translation, each pair's
    best cell; the (boost, translation) whose best cells give the best mean over all sets
    (at three decimals; ties to the smaller values). Returns ``({"keyword_evidence",
    "translate_keywords", pair: weights ...}, means)`` where ``means[pair][cell key]`` is
    the mean MRR over that pair's sets."""
    means: dict = {}
    counts: dict = {}
    for g in grids:
        for pair, table in g.items():
            for k, per in table.items():
                means.setdefault(pair, {}).setdefault(k, []).extend(per.values())
    for pair, table in means.items():
        counts[pair] = max(len(v) for v in table.values())
        means[pair] = {k: float(np.mean(v)) for k, v in table.items()}

    def order(k: str, table: dict) -> tuple:
        return (round(table[k], 3), *(-float(x) for x in k.split(",")))

    def fits(pair: str, k: str, ev: float, tk: bool) -> bool:
        e, cell = parse(pair, k)
        return e == ev and (not crossing(pair) or cell["translate_keywords"] == tk)

    best: dict = {}
    for ev in EVIDENCE:
        for tk in TRANSLATE_KEYWORDS:
            pick, total = {}, 0.0
            for pair, table in means.items():
                ok = {k: v for k, v in table.items() if fits(pair, k, ev, tk)}
                k = max(ok, key=lambda k, t=ok: order(k, t))
                pick[pair] = k
                total += ok[k] * counts[pair]
            score = round(total / max(sum(counts.values()), 1), 3)
            if not best or (score, -ev, -tk) > (best["score"], -best["ev"], -best["tk"]):
                best = {"score": score, "ev": ev, "tk": tk, "pick": pick}
    chosen: dict = {"keyword_evidence": best.get("ev", EVIDENCE[0]),
                    "translate_keywords": bool(best.get("tk", True))}  # fmt: skip
    for pair, k in best.get("pick", {}).items():
        cell = parse(pair, k)[1]
        cell.pop("translate_keywords", None)
        chosen[pair] = cell
    return chosen, means


def check(search, dev_sets: dict[str, list], chosen: dict) -> dict:  # noqa: ANN001
    """The chosen cells' development ranks through the real ``SearchIndex.fuse``: how many
    requests the grid ranked differently (a sanity check of the matrix fusion)."""
    same = 0
    total = 0
    tk = bool(chosen.get("translate_keywords", True))
    with memoised(search):
        for queries in dev_sets.values():
            for q, _, target in queries:
                cell = chosen.get(search.pair(q))
                if cell is None:
                    continue
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
