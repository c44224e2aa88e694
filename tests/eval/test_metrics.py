from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from avrec.errors import ConfigError
from avrec.eval.metrics import (
    AUC,
    F1,
    GAUC,
    HR,
    MAP,
    MRR,
    NDCG,
    Coverage,
    Gini,
    MetricContext,
    Novelty,
    Precision,
    RankBatch,
    Recall,
    parse_metrics,
    target_ranks,
)
from avrec.models.base import topk

INF = -np.inf


def batch(scores, targets):
    scores = np.asarray(scores, dtype=np.float32)
    t = sp.csr_matrix(np.asarray(targets, dtype=np.float32))
    row, item, rank, greater, ties = target_ranks(scores, t)
    top, top_s = topk(scores, scores.shape[1])
    top = np.where(np.isfinite(top_s), top, -1)
    return RankBatch(
        np.diff(t.indptr), row, item, rank, greater, ties, np.isfinite(scores).sum(1), top
    )


def brute_ranks(scores, targets):
    """Reference: build each user's full list with ties broken against targets."""
    out = {}
    for u in range(scores.shape[0]):
        tset = set(np.flatnonzero(targets[u]))
        cand = [i for i in range(scores.shape[1]) if np.isfinite(scores[u, i]) or i in tset]
        # non-targets before targets on ties; targets among themselves by index
        order = sorted(cand, key=lambda i: (-scores[u, i], i in tset, i))
        for pos, i in enumerate(order):
            if i in tset:
                out[(u, i)] = pos
    return out


def test_single_target_ties_count_against():
    # items 0..4; target 2 ties with items 1 and 3
    rb = batch([[0.9, 0.5, 0.5, 0.5, 0.1]], [[0, 0, 1, 0, 0]])
    assert rb.t_rank.tolist() == [3]  # 0.9, and both 0.5 ties, come first
    assert HR(3).per_user(rb, None).tolist() == [0.0]
    assert HR(4).per_user(rb, None).tolist() == [1.0]
    assert NDCG(4).per_user(rb, None)[0] == pytest.approx(1 / np.log2(5))
    assert MRR(10).per_user(rb, None)[0] == pytest.approx(1 / 4)
    assert AUC().per_user(rb, None)[0] == pytest.approx((4 - 1 - 0.5 * 2) / 4)


def test_excluded_items_are_not_candidates():
    rb = batch([[INF, 0.9, 0.5, INF]], [[0, 0, 1, 0]])
    assert rb.t_rank.tolist() == [1]
    assert rb.n_cand.tolist() == [2]
    assert rb.top[0].tolist()[:2] == [1, 2] and rb.top[0, 2] == -1


def test_auc_ranks_items_the_model_left_unscored_last_and_tied():
    """Issue 15: a pipeline scores only its candidates (-inf elsewhere); AUC used to drop the
    unscored negatives and give an unscored target 0, which read 0.37 on MovieLens. Unscored
    items now rank below every scored one, tied among themselves."""
    # items 0..5; 0 is history (excluded by the protocol), 4 and 5 unscored by the model
    rb = batch([[INF, 0.9, 0.5, 0.1, INF, INF]], [[0, 0, 1, 0, 0, 0]])
    rb.n_unscored, rb.t_unscored = np.array([2]), np.array([False])
    # target 0.5: beats item 3 and both unscored items of 4 negatives
    assert AUC().per_user(rb, None)[0] == pytest.approx(3 / 4)
    # the target itself unscored: loses to the 3 scored items, ties with the other unscored
    rb = batch([[INF, 0.9, 0.5, 0.1, INF, INF]], [[0, 0, 0, 0, 1, 0]])
    rb.n_unscored, rb.t_unscored = np.array([2]), np.array([True])
    assert AUC().per_user(rb, None)[0] == pytest.approx(0.5 * 1 / 4)
    # a target the protocol excluded (a repeat of history) still beats nothing
    rb = batch([[INF, 0.9, 0.5, 0.1, INF, INF]], [[1, 0, 0, 0, 0, 0]])
    rb.n_unscored, rb.t_unscored = np.array([2]), np.array([False])
    assert AUC().per_user(rb, None)[0] == 0.0


def test_multiple_targets_hand_computed():
    # targets 1 (score .8) and 3 (score .4); ranking 0(.9) 1(.8) 2(.6) 3(.4) 4(.1)
    rb = batch([[0.9, 0.8, 0.6, 0.4, 0.1]], [[0, 1, 0, 1, 0]])
    assert sorted(rb.t_rank.tolist()) == [1, 3]
    assert Recall(2).per_user(rb, None)[0] == 0.5
    assert Precision(2).per_user(rb, None)[0] == 0.5
    assert F1(2).per_user(rb, None)[0] == pytest.approx(0.5)
    idcg = 1 + 1 / np.log2(3)
    assert NDCG(5).per_user(rb, None)[0] == pytest.approx((1 / np.log2(3) + 1 / np.log2(5)) / idcg)
    assert MAP(5).per_user(rb, None)[0] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert MRR(5).per_user(rb, None)[0] == pytest.approx(1 / 2)
    # K larger than the list: every target found, precision divides by K
    assert Recall(50).per_user(rb, None)[0] == 1.0
    assert Precision(50).per_user(rb, None)[0] == pytest.approx(2 / 50)
    # AUC: target .8 beats 3 of 3 negatives but .9 -> 2/3; target .4 beats 1 of 3
    assert AUC().per_user(rb, None)[0] == pytest.approx((2 / 3 + 1 / 3) / 2)


def test_user_without_targets_scores_zero_and_gauc_weights():
    rb = batch([[0.9, 0.1, 0.5], [0.1, 0.2, 0.3]], [[1, 0, 0], [0, 0, 0]])
    assert NDCG(2).per_user(rb, None).tolist() == [1.0, 0.0]
    assert GAUC().weights(rb).tolist() == [1.0, 0.0]


def test_targets_tied_with_each_other():
    rb = batch([[0.5, 0.5, 0.5, 0.9]], [[1, 1, 0, 0]])
    # non-targets with >= score first (3 and 2), then targets 0 and 1 by index
    assert sorted(zip(rb.t_item.tolist(), rb.t_rank.tolist(), strict=True)) == [(0, 2), (1, 3)]


@pytest.mark.parametrize("seed", range(5))
def test_ranks_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, size=(30, 12)).astype(np.float32)  # many ties
    scores[rng.random(scores.shape) < 0.15] = -np.inf
    targets = (rng.random(scores.shape) < 0.2).astype(np.float32)
    rb = batch(scores, targets)
    expect = brute_ranks(scores, targets)
    got = {
        (r, i): k
        for r, i, k in zip(rb.t_row.tolist(), rb.t_item.tolist(), rb.t_rank.tolist(), strict=True)
    }
    finite = {key: v for key, v in expect.items() if np.isfinite(scores[key])}
    assert {key: got[key] for key in finite} == finite


def test_list_and_global_metrics():
    rb = batch([[3, 2, 1, 0], [3, 2, 1, 0]], [[1, 0, 0, 0], [0, 1, 0, 0]])
    ctx = MetricContext(n_items=4, n_users=10, item_users=np.array([9.0, 1.0, 0.0, 4.0]))
    cov, gini = Coverage(2), Gini(2)
    cov.accumulate(rb, ctx)
    assert cov.finalize(ctx) == 0.5
    # exposure [2, 2, 0, 0]: Gini = 0.5
    assert gini.finalize(ctx) == pytest.approx(0.5)
    nov = Novelty(2).per_user(rb, ctx)
    expect = np.mean([-np.log2(10 / 11), -np.log2(2 / 11)])
    assert nov == pytest.approx([expect, expect])


def test_parse_metrics():
    ms = parse_metrics("ndcg,hr@5,auc", [10, 20])
    assert [m.name for m in ms] == ["ndcg@10", "ndcg@20", "hr@5", "auc"]
    with pytest.raises(ConfigError, match="unknown metric"):
        parse_metrics("accuracy")
    with pytest.raises(ConfigError):
        NDCG(0)


def test_masked_target_is_never_a_hit():
    """A target that repeats a history item is excluded: not a hit even in a tiny catalogue
    (a bug gave HR@10 = 1 and a negative AUC)."""
    rb = batch([[0.9, INF, 0.5, 0.1, 0.3]], [[0, 1, 0, 0, 0]])
    assert HR(10).per_user(rb, None).tolist() == [0.0]
    assert NDCG(10).per_user(rb, None).tolist() == [0.0]
    assert AUC().per_user(rb, None).tolist() == [0.0]


def test_topk_breaks_ties_by_lower_index():
    scores = np.zeros((2, 8), np.float32)
    scores[0, 5] = 1.0
    top, _ = topk(scores, 4)
    assert top[0].tolist() == [5, 0, 1, 2]
    assert top[1].tolist() == [0, 1, 2, 3]
