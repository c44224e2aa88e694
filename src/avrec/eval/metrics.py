"""Ranking and beyond-accuracy metrics, computed on full rankings, vectorised per batch.

Ranks follow one rule: a target's rank (0-based) is the number of candidate items that are not
targets and score at least as high (ties count against the target), plus the number of the user's
other targets placed before it (higher score, or equal score and lower index). Excluded items
(the user's history) are not candidates. With ``R`` the set of target ranks below ``K``:

- HR@K = 1 if R is non-empty
- Recall@K = |R| / |T|;  Precision@K = |R| / K;  F1@K = 2PR / (P + R)
- NDCG@K = sum_{r in R} 1/log2(r + 2) / IDCG, IDCG = sum_{i < min(|T|, K)} 1/log2(i + 2)
  (binary relevance, log2 discount, ideal DCG over the user's test items)
- MRR@K = 1 / (min R + 1), 0 if R is empty
- MAP@K = (1 / min(|T|, K)) sum_{j-th smallest r in R} j / (r + 1)
- AUC = mean over targets of P(target outscores a non-target candidate), ties 1/2; GAUC weights
  users by their number of targets. An item the model left unscored (``-inf`` from the model
  itself, not from the protocol: a pipeline's items that no source proposed) is a candidate
  like any other, ranked below every scored item and tied with the other unscored ones; so a
  pipeline's AUC is over the whole catalogue as the pipeline orders it (its candidates in its
  order, then everything it did not propose, tied), comparable with any model's
- a target that is itself excluded (a repeat of a history item, when history is excluded) is
  never a hit and counts 0 in AUC
- Coverage@K = share of catalogue items in at least one list; Gini@K of item exposure
- ILD@K = mean pairwise distance within a list (1 - cosine on content vectors, else Jaccard on
  categories/tags); Novelty@K = mean -log2((users_i + 1) / (n_users + 1)); ARP@K = mean training
  popularity (users) of the listed items
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from avrec.errors import ConfigError

__all__ = [
    "AUC",
    "ARP",
    "F1",
    "GAUC",
    "HR",
    "ILD",
    "MAP",
    "MRR",
    "NDCG",
    "Coverage",
    "Gini",
    "Metric",
    "Novelty",
    "Precision",
    "RankBatch",
    "Recall",
    "parse_metrics",
    "target_ranks",
]


@dataclass
class RankBatch:
    """What metrics need about one batch of users.

    Attributes:
        n_pos: targets per user.
        t_row, t_item, t_rank: one entry per target: its user row, item and rank.
        t_greater, t_ties: non-target candidates scoring above / equal to the target.
        n_cand: candidates per user the model scored (items not excluded, finite score).
        top: top-K item indices per user (-1 where the list ran out of candidates).
        n_unscored: candidates per user the model left unscored (``-inf`` from the model
            itself; the protocol's exclusions are not candidates), targets included.
        t_unscored: per target, whether the model left it unscored.
    """

    n_pos: np.ndarray
    t_row: np.ndarray
    t_item: np.ndarray
    t_rank: np.ndarray
    t_greater: np.ndarray
    t_ties: np.ndarray
    n_cand: np.ndarray
    top: np.ndarray
    n_unscored: np.ndarray | None = None
    t_unscored: np.ndarray | None = None


MISSED = np.iinfo(np.int64).max // 4  # the rank of a target that could not be ranked


def target_ranks(scores: np.ndarray, targets: sp.csr_matrix) -> tuple[np.ndarray, ...]:
    """Ranks of each user's targets under the rule in the module docstring.

    Args:
        scores: batch x n_items, excluded items already ``-inf``.
        targets: batch x n_items CSR, stored entries are targets.

    Returns:
        ``(t_row, t_item, t_rank, t_greater, t_ties)``.
    """
    t = targets.tocsr()
    t.sort_indices()
    t_row = np.repeat(np.arange(t.shape[0]), np.diff(t.indptr))
    t_item = t.indices.astype(np.int64)
    if len(t_row) == 0:
        z = np.zeros(0, np.int64)
        return z, z, z, z, z
    s_t = scores[t_row, t_item]
    if np.isnan(s_t).any() or np.isnan(scores).any():
        raise ValueError("scores contain NaN; a model must give every item a number")
    greater = np.empty(len(t_row), np.int64)
    ge = np.empty(len(t_row), np.int64)
    step = max(1, 20_000_000 // max(scores.shape[1], 1))
    for lo in range(0, len(t_row), step):  # bounded memory: step x n_items booleans
        rows = scores[t_row[lo : lo + step]]
        st = s_t[lo : lo + step, None]
        greater[lo : lo + step] = (rows > st).sum(axis=1)
        ge[lo : lo + step] = (rows >= st).sum(axis=1)
    # Remove the targets themselves from those counts, then place targets among themselves:
    # sort each user's targets by (score desc, item asc); a target's position in that order is
    # how many of its own targets precede it, and its tie group tells how many score >= / >.
    order = np.lexsort((t_item, -s_t, t_row))
    r, v = t_row[order], s_t[order]
    n = len(order)
    row_new = np.r_[True, r[1:] != r[:-1]]
    row_first = np.flatnonzero(row_new)
    row_start = row_first[np.cumsum(row_new) - 1]
    tie_new = row_new | np.r_[True, v[1:] != v[:-1]]
    tie_first = np.flatnonzero(tie_new)
    tie_last = np.r_[tie_first[1:] - 1, n - 1]
    tie_id = np.cumsum(tie_new) - 1
    pos = np.arange(n)
    same_user_gt = np.empty(n, np.int64)
    same_user_ge = np.empty(n, np.int64)
    before = np.empty(n, np.int64)
    same_user_gt[order] = tie_first[tie_id] - row_start
    same_user_ge[order] = tie_last[tie_id] - row_start + 1
    before[order] = pos - row_start
    t_greater = greater - same_user_gt
    t_ge_nontarget = ge - same_user_ge
    t_ties = t_ge_nontarget - t_greater
    t_rank = t_ge_nontarget + before
    # A target that was excluded (e.g. a repeat of a history item) is never ranked: it can be
    # neither a hit nor beat a negative, whatever the catalogue size.
    masked = ~np.isfinite(s_t)
    t_rank = np.where(masked, MISSED, t_rank)
    t_greater = np.where(masked, np.maximum(t_greater, 0), t_greater)
    t_ties = np.where(masked, 0, t_ties)
    return t_row, t_item, t_rank, t_greater, t_ties


class Metric:
    """A metric. ``kind`` is ``rank`` (per user, from ranks), ``list`` (per user, from the top-K
    lists) or ``global`` (one number over all lists)."""

    label: ClassVar[str]
    kind: ClassVar[str] = "rank"

    def __init__(self, k: int | None = None) -> None:
        if k is not None and k <= 0:
            raise ConfigError(f"{self.label}: k must be positive, got {k}")
        self.k = k

    @property
    def name(self) -> str:
        return f"{self.label}@{self.k}" if self.k is not None else self.label

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.k})" if self.k is not None else self.label

    def per_user(self, rb: RankBatch, ctx: MetricContext) -> np.ndarray:
        raise NotImplementedError

    def weights(self, rb: RankBatch) -> np.ndarray:
        """Per-user weights of the average (1 by default)."""
        return np.ones(len(rb.n_pos))


def _hits(rb: RankBatch, k: int) -> np.ndarray:
    hit = rb.t_rank < k
    return np.bincount(rb.t_row[hit], minlength=len(rb.n_pos)).astype(np.float64)


class HR(Metric):
    label = "hr"

    def per_user(self, rb, ctx):
        return (_hits(rb, self.k) > 0).astype(np.float64)


class Recall(Metric):
    label = "recall"

    def per_user(self, rb, ctx):
        return _hits(rb, self.k) / np.maximum(rb.n_pos, 1)


class Precision(Metric):
    label = "precision"

    def per_user(self, rb, ctx):
        return _hits(rb, self.k) / self.k


class F1(Metric):
    label = "f1"

    def per_user(self, rb, ctx):
        h = _hits(rb, self.k)
        p, r = h / self.k, h / np.maximum(rb.n_pos, 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(p + r > 0, 2 * p * r / (p + r), 0.0)


class NDCG(Metric):
    label = "ndcg"

    def per_user(self, rb, ctx):
        k = self.k
        hit = rb.t_rank < k
        dcg = np.bincount(
            rb.t_row[hit], weights=1.0 / np.log2(rb.t_rank[hit] + 2.0), minlength=len(rb.n_pos)
        )
        disc = np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))
        ideal = disc[np.clip(np.minimum(rb.n_pos, k) - 1, 0, k - 1)]
        return np.where(rb.n_pos > 0, dcg / ideal, 0.0)


class MRR(Metric):
    label = "mrr"

    def per_user(self, rb, ctx):
        best = np.full(len(rb.n_pos), np.iinfo(np.int64).max)
        np.minimum.at(best, rb.t_row, rb.t_rank)
        return np.where(best < self.k, 1.0 / (best + 1.0), 0.0)


class MAP(Metric):
    label = "map"

    def per_user(self, rb, ctx):
        k = self.k
        hit = rb.t_rank < k
        rows, ranks = rb.t_row[hit], rb.t_rank[hit]
        order = np.lexsort((ranks, rows))
        rows, ranks = rows[order], ranks[order]
        starts = np.r_[0, np.flatnonzero(np.diff(rows)) + 1] if len(rows) else np.zeros(0, int)
        j = np.arange(len(rows)) - np.repeat(starts, np.diff(np.r_[starts, len(rows)]))
        prec = (j + 1.0) / (ranks + 1.0)
        ap = np.bincount(rows, weights=prec, minlength=len(rb.n_pos))
        return np.where(rb.n_pos > 0, ap / np.maximum(np.minimum(rb.n_pos, k), 1), 0.0)


class AUC(Metric):
    label = "auc"

    def per_user(self, rb, ctx):
        n_users = len(rb.n_pos)
        ranked = rb.t_rank != MISSED
        n_ranked = np.bincount(rb.t_row[ranked], minlength=n_users)
        unscored = rb.t_unscored if rb.t_unscored is not None else np.zeros(len(rb.t_row), bool)
        # negatives the model left unscored: below every scored item, tied among themselves
        n_off = rb.n_unscored if rb.n_unscored is not None else np.zeros(n_users, np.int64)
        n_off_neg = (n_off - np.bincount(rb.t_row[unscored], minlength=n_users))[rb.t_row]
        n_neg = ((rb.n_cand - n_ranked)[rb.t_row] + n_off_neg).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc_t = np.where(n_neg > 0, (n_neg - rb.t_greater - 0.5 * rb.t_ties) / n_neg, 0.5)
            # an unscored target loses to every scored item and ties with the unscored rest
            auc_off = np.where(n_neg > 0, 0.5 * n_off_neg / n_neg, 0.5)
        # a target the protocol excluded (a repeat of a history item) beats nothing
        auc_t = np.where(ranked, auc_t, np.where(unscored, auc_off, 0.0))
        s = np.bincount(rb.t_row, weights=auc_t, minlength=len(rb.n_pos))
        return np.where(rb.n_pos > 0, s / np.maximum(rb.n_pos, 1), 0.0)


class GAUC(AUC):
    label = "gauc"

    def weights(self, rb):
        return rb.n_pos.astype(np.float64)


@dataclass
class MetricContext:
    """Dataset-level facts list metrics need."""

    n_items: int
    n_users: int
    item_users: np.ndarray  # training users per item
    item_vectors: np.ndarray | None = None  # L2-normalised content vectors
    item_categories: np.ndarray | None = None  # multi-hot, the most frequent categories/tags
    state: dict[str, Any] = field(default_factory=dict)


class ILD(Metric):
    label = "ild"
    kind = "list"

    def per_user(self, rb, ctx):
        top = rb.top[:, : self.k]
        valid = top >= 0
        n = valid.sum(axis=1)
        safe = np.where(valid, top, 0)
        if ctx.item_vectors is not None:
            v = ctx.item_vectors[safe] * valid[..., None]
            sim = np.einsum("bkd,bjd->bkj", v, v)
            dist = 1.0 - sim
        elif ctx.item_categories is not None:
            m = ctx.item_categories[safe] * valid[..., None]
            inter = np.einsum("bkc,bjc->bkj", m, m)
            size = m.sum(axis=2)
            union = size[:, :, None] + size[:, None, :] - inter
            with np.errstate(invalid="ignore", divide="ignore"):
                dist = np.where(union > 0, 1.0 - inter / union, 0.0)
        else:
            return np.full(len(top), np.nan)
        pair = valid[:, :, None] & valid[:, None, :]
        pair &= ~np.eye(top.shape[1], dtype=bool)[None]
        total = (dist * pair).sum(axis=(1, 2))
        pairs = n * (n - 1)
        return np.where(pairs > 0, total / np.maximum(pairs, 1), np.nan)


class Novelty(Metric):
    label = "novelty"
    kind = "list"

    def per_user(self, rb, ctx):
        top = rb.top[:, : self.k]
        valid = top >= 0
        info = -np.log2((ctx.item_users + 1.0) / (ctx.n_users + 1.0))
        vals = np.where(valid, info[np.where(valid, top, 0)], 0.0)
        n = valid.sum(axis=1)
        return np.where(n > 0, vals.sum(axis=1) / np.maximum(n, 1), np.nan)


class ARP(Metric):
    """Average recommendation popularity: mean number of training users of the listed items."""

    label = "arp"
    kind = "list"

    def per_user(self, rb, ctx):
        top = rb.top[:, : self.k]
        valid = top >= 0
        vals = np.where(valid, ctx.item_users[np.where(valid, top, 0)], 0.0)
        n = valid.sum(axis=1)
        return np.where(n > 0, vals.sum(axis=1) / np.maximum(n, 1), np.nan)


class Coverage(Metric):
    label = "coverage"
    kind = "global"

    def accumulate(self, rb: RankBatch, ctx: MetricContext) -> None:
        counts = ctx.state.setdefault(f"exposure@{self.k}", np.zeros(ctx.n_items, np.int64))
        top = rb.top[:, : self.k]
        np.add.at(counts, top[top >= 0], 1)

    def finalize(self, ctx: MetricContext) -> float:
        counts = ctx.state.get(f"exposure@{self.k}", np.zeros(ctx.n_items))
        return float((counts > 0).mean())


class Gini(Coverage):
    label = "gini"

    def finalize(self, ctx: MetricContext) -> float:
        counts = np.sort(ctx.state.get(f"exposure@{self.k}", np.zeros(ctx.n_items)))
        n, total = len(counts), counts.sum()
        if total == 0 or n == 0:
            return 0.0
        i = np.arange(1, n + 1)
        return float(((2 * i - n - 1) * counts).sum() / (n * total))


_BY_LABEL: dict[str, type[Metric]] = {
    m.label: m
    for m in (
        HR,
        Recall,
        Precision,
        F1,
        NDCG,
        MRR,
        MAP,
        AUC,
        GAUC,
        ILD,
        Novelty,
        ARP,
        Coverage,
        Gini,
    )
}
_NO_K = {"auc", "gauc"}


def parse_metrics(names: list[str] | str, ks: list[int] | None = None) -> list[Metric]:
    """Metrics from names: ``"ndcg@10"`` or ``"ndcg"`` (expanded over ``ks``), ``"auc"``.

    Raises:
        ConfigError: unknown metric name.
    """
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    ks = ks or [10]
    out: list[Metric] = []
    for name in names:
        m = re.fullmatch(r"([a-z0-9]+)(?:@(\d+))?", name.lower().strip())
        if not m or m.group(1) not in _BY_LABEL:
            raise ConfigError(f"unknown metric {name!r}; known: {', '.join(sorted(_BY_LABEL))}")
        cls = _BY_LABEL[m.group(1)]
        if m.group(1) in _NO_K:
            out.append(cls())
        elif m.group(2):
            out.append(cls(int(m.group(2))))
        else:
            out.extend(cls(k) for k in ks)
    return out
