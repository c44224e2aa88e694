"""Evaluate one fitted model on one split stage: full ranking, in batches, no loops over users."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from avrec.eval.metrics import Metric, MetricContext, RankBatch, target_ranks
from avrec.eval.splits import SplitResult, Stage
from avrec.models.base import Recommender, UserBatch, mask_rows, topk

__all__ = ["ModelEval", "evaluate_model", "metric_context"]

MAX_CATEGORY_COLUMNS = 1024


@dataclass
class ModelEval:
    """Per-user results of one model on one stage.

    Attributes:
        users: evaluated user indices.
        per_user: metric name -> per-user values (NaN where a metric does not apply).
        weights: metric name -> per-user weights of the mean.
        global_values: global metrics (coverage, gini).
        t_user, t_item, t_rank: one entry per target (user index, item, rank).
        exposure: how often each item appeared in the top-K lists (K = the largest list K).
    """

    model: str
    users: np.ndarray
    per_user: dict[str, np.ndarray] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    global_values: dict[str, float] = field(default_factory=dict)
    t_user: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    t_item: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    t_rank: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    exposure: np.ndarray | None = None
    seconds: float = 0.0


def metric_context(split: SplitResult) -> MetricContext:
    """Training popularity and item content for list metrics."""
    train = split.train
    item_users = np.asarray((train.seen > 0).sum(axis=0)).ravel().astype(np.float64)
    vectors = None
    if train.item_features:
        name = "fused" if "fused" in train.item_features else sorted(train.item_features)[0]
        v = np.asarray(train.item_features[name], dtype=np.float32)
        vectors = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    cats = None
    labels = [a + b for a, b in zip(train.item_categories, train.item_tags, strict=True)]
    if vectors is None and any(labels):
        from collections import Counter

        freq = Counter(lab for ls in labels for lab in set(ls))
        vocab = {lab: j for j, (lab, _) in enumerate(freq.most_common(MAX_CATEGORY_COLUMNS))}
        cats = np.zeros((train.n_items, len(vocab)), np.float32)
        for i, ls in enumerate(labels):
            for lab in ls:
                if lab in vocab:
                    cats[i, vocab[lab]] = 1.0
    return MetricContext(train.n_items, train.n_users, item_users, vectors, cats)


def evaluate_model(
    model: Recommender,
    split: SplitResult,
    metrics: list[Metric],
    stage: Stage = "test",
    exclude_history: bool = True,
    sampled: int | None = None,
    seed: int = 0,
    batch_cells: int = 20_000_000,
    ctx: MetricContext | None = None,
    candidates: np.ndarray | None = None,
) -> ModelEval:
    """Score every user that has targets in ``stage`` against every item and compute metrics.

    Args:
        exclude_history: the user's history at ``stage`` (training, plus validation for test)
            is not ranked.
        sampled: rank each target only against this many random negatives per user
            (sampled evaluation, labelled as such by callers); ``None`` ranks all items.
        batch_cells: users per batch = batch_cells // n_items.
        candidates: boolean mask over items: rank only these (e.g. the held-out items of a
            cold-start split, the usual cold-start protocol); targets outside never hit.
    """
    start = time.perf_counter()
    targets = split.targets(stage)
    history = split.history(stage)
    users = np.flatnonzero(np.diff(targets.indptr) > 0)
    ctx = ctx or metric_context(split)
    ctx.state = {}
    n_items = targets.shape[1]
    kmax = max([m.k for m in metrics if m.k is not None and m.kind != "rank"] or [1])
    result = ModelEval(model.name, users)
    parts: dict[str, list[np.ndarray]] = {m.name: [] for m in metrics if m.kind != "global"}
    wparts: dict[str, list[np.ndarray]] = {m.name: [] for m in metrics if m.kind != "global"}
    t_user, t_item, t_rank = [], [], []
    rng = np.random.default_rng(seed)
    wants_sequences = getattr(model, "uses_sequences", False)
    wants_times = getattr(model, "uses_times", False)
    step = max(1, batch_cells // max(n_items, 1))
    for lo in range(0, len(users), step):
        batch = users[lo : lo + step]
        hist = history[batch]
        ub = UserBatch(
            batch,
            hist,
            split.sequences(stage, batch) if wants_sequences or wants_times else None,
            split.sequence_times(stage, batch) if wants_times else None,
        )
        scores = np.array(model._score_batch(ub), dtype=np.float32, copy=True)
        # items the model itself left unscored (a pipeline's non-candidates), told apart from
        # the protocol's exclusions below, so that AUC ranks them last instead of dropping them
        unscored = np.isneginf(scores)
        if not unscored.any():
            unscored = None
        if candidates is not None:
            scores[:, ~candidates] = -np.inf
            if unscored is not None:
                unscored[:, ~candidates] = False
        if exclude_history:
            mask_rows(scores, hist)
            if unscored is not None:
                coo = hist.tocoo()
                unscored[coo.row, coo.col] = False
        tb = targets[batch]
        if sampled is not None:
            # ``sampled`` distinct negatives per user, drawn from the items that are neither
            # history nor targets: the smallest random keys among the allowed items
            coo = tb.tocoo()
            keys = rng.random(scores.shape, dtype=np.float32)
            excluded = ~np.isfinite(scores)  # history (items left unscored may be drawn)
            if unscored is not None:
                excluded &= ~unscored
            keys[excluded] = np.inf
            keys[coo.row, coo.col] = np.inf  # targets
            m = min(sampled, n_items)
            neg = np.argpartition(keys, m - 1, axis=1)[:, :m]
            ok = np.isfinite(np.take_along_axis(keys, neg, axis=1))
            keep = np.zeros(scores.shape, bool)
            rows = np.repeat(np.arange(len(batch)), m).reshape(len(batch), m)
            keep[rows[ok], neg[ok]] = True
            keep[coo.row, coo.col] = True
            scores[~keep] = -np.inf
            if unscored is not None:
                unscored &= keep
        row, item, rank, greater, ties = target_ranks(scores, tb)
        n_cand = np.isfinite(scores).sum(axis=1)
        top, top_scores = topk(scores, kmax)
        top = np.where(np.isfinite(top_scores), top, -1)
        rb = RankBatch(np.diff(tb.indptr), row, item, rank, greater, ties, n_cand, top)
        if unscored is not None:
            rb.n_unscored = unscored.sum(axis=1)
            rb.t_unscored = unscored[row, item]
        for m in metrics:
            if m.kind == "global":
                m.accumulate(rb, ctx)  # type: ignore[attr-defined]
            else:
                parts[m.name].append(m.per_user(rb, ctx))
                wparts[m.name].append(m.weights(rb))
        t_user.append(batch[row])
        t_item.append(item)
        t_rank.append(rank)
        expo = ctx.state.setdefault("exposure@list", np.zeros(n_items, np.int64))
        np.add.at(expo, top[top >= 0], 1)
    for name, chunks in parts.items():
        result.per_user[name] = np.concatenate(chunks) if chunks else np.zeros(0)
        result.weights[name] = np.concatenate(wparts[name]) if chunks else np.zeros(0)
    for m in metrics:
        if m.kind == "global":
            result.global_values[m.name] = m.finalize(ctx)  # type: ignore[attr-defined]
    if t_user:
        result.t_user = np.concatenate(t_user)
        result.t_item = np.concatenate(t_item)
        result.t_rank = np.concatenate(t_rank)
    result.exposure = ctx.state.get("exposure@list")
    result.seconds = time.perf_counter() - start
    return result


def history_lengths(split: SplitResult, stage: Stage) -> np.ndarray:
    """Number of history items of every user at ``stage``."""
    h: sp.csr_matrix = split.history(stage)
    return np.diff(h.indptr)
