from __future__ import annotations

import numpy as np
import pytest

from avrec.errors import ConfigError
from avrec.pipeline.rerank import Reranker, RerankRules


def clusters():
    """Items 0-4 near-duplicates (cluster A, best scores), 5-9 cluster B, 10-14 cluster C."""
    rng = np.random.default_rng(0)
    x = np.zeros((15, 3))
    for i in range(15):
        x[i, i // 5] = 1.0
    x += 0.05 * rng.normal(size=x.shape)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    scores = np.linspace(1.0, 0.0, 15)  # 0 best
    return np.arange(15), scores, x.astype(np.float32)


def test_zero_diversity_keeps_the_ranker_order():
    items, scores, x = clusters()
    out, _ = Reranker(0.0, x).rerank(items[::-1], scores[::-1], 6)
    assert out.tolist() == [0, 1, 2, 3, 4, 5]


def test_mmr_spreads_over_clusters_and_ild_rises():
    items, scores, x = clusters()
    plain, _ = Reranker(0.0, x).rerank(items, scores, 3)
    diverse, _ = Reranker(0.5, x).rerank(items, scores, 3)
    assert len({i // 5 for i in diverse}) == 3 and len({i // 5 for i in plain}) == 1
    assert diverse[0] == 0  # the best item still leads

    def ild(lst):
        s = x[lst] @ x[lst].T
        return 1 - s[np.triu_indices(len(lst), 1)].mean()

    assert ild(diverse) > ild(plain)


def test_cap_per_creator_blocked_and_boosts():
    items, scores, x = clusters()
    groups = [[f"creator{i // 5}"] for i in range(15)]
    r = Reranker(0.0, x, groups, RerankRules(max_per_group=2, blocked={0}))
    out, _ = r.rerank(items, scores, 6)
    assert 0 not in out
    assert out.tolist() == [1, 2, 5, 6, 10, 11]
    boosted, _ = Reranker(0.0, x, rules=RerankRules(boosts={14: 1.5})).rerank(items, scores, 1)
    assert boosted.tolist() == [14]


def test_pages_never_repeat_and_exclude_removes_shown_items():
    items, scores, x = clusters()
    r = Reranker(0.3, x)
    pages = [r.rerank(items, scores, 4, offset=4 * p)[0].tolist() for p in range(4)]
    flat = [i for p in pages for i in p]
    assert len(flat) == len(set(flat)) == 15  # the last page is short
    assert len(pages[3]) == 3
    shown = pages[0]
    again, _ = r.rerank(items, scores, 4, exclude=shown)
    assert not set(again) & set(shown)


def test_mistakes():
    items, scores, x = clusters()
    with pytest.raises(ConfigError):
        Reranker(1.5, x)
    with pytest.raises(ConfigError):
        Reranker(0.5, None)
    with pytest.raises(ConfigError):
        Reranker().rerank(items, scores, 0)
    out, rel = Reranker().rerank(items, np.full(15, -np.inf), 3)
    assert len(out) == 0 and len(rel) == 0
