"""Re-ranking: diversity (MMR on content vectors), at most N per creator or series, business rules
(blocked items, boosts), and paging without repeats.

:class:`Reranker` takes the ranker's ordered candidates and returns the final list. MMR (Carbonell
and Goldstein, 1998) picks, one at a time, the item maximising
``lambda * relevance - (1 - lambda) * max similarity to the items already picked``, with
relevance the ranker's scores rescaled to [0, 1]; ``lambda = 1`` keeps the ranker's order.
Paging is deterministic: page ``p`` of size ``k`` is positions ``p*k .. p*k+k`` of one re-ranked
list, so pages never repeat an item; ``exclude`` removes what a session has already shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from avrec.errors import ConfigError

__all__ = ["Reranker", "RerankRules"]


@dataclass
class RerankRules:
    """Business rules.

    Attributes:
        blocked: item indices never shown.
        boosts: item index -> relevance added (relevance is the ranker's score rescaled to
            [0, 1], so +0.1 lifts an item by a tenth of the list's score range).
        max_per_group: at most this many items per group (creator, series) in a list; 0: no cap.
    """

    blocked: set[int] = field(default_factory=set)
    boosts: dict[int, float] = field(default_factory=dict)
    max_per_group: int = 0


class Reranker:
    """Final ordering of ranked candidates.

    Args:
        diversity: ``1 - lambda`` of MMR, 0 (ranker order) to 1 (only diversity).
        vectors: item vectors for similarity (rows L2-normalised), or ``None`` (no MMR).
        groups: per item, the group keys it belongs to (e.g. its creators); used by the cap.
        rules: blocked items, boosts, the per-group cap.
    """

    def __init__(
        self,
        diversity: float = 0.0,
        vectors: np.ndarray | None = None,
        groups: Sequence[Sequence[str]] | None = None,
        rules: RerankRules | None = None,
    ) -> None:
        if not 0.0 <= diversity <= 1.0:
            raise ConfigError(f"diversity must be in [0, 1], got {diversity}")
        if diversity > 0 and vectors is None:
            raise ConfigError("diversity needs item vectors (run avrec analyze)")
        self.diversity = diversity
        self.vectors = vectors
        self.groups = groups
        self.rules = rules or RerankRules()

    def rerank(
        self,
        items: np.ndarray,
        scores: np.ndarray,
        k: int,
        offset: int = 0,
        exclude: Sequence[int] = (),
    ) -> tuple[np.ndarray, np.ndarray]:
        """Positions ``offset .. offset + k`` of the final list: item indices and the relevance
        each was picked with.

        Raises:
            ConfigError: ``k`` not positive or ``offset`` negative.
        """
        if k <= 0 or offset < 0:
            raise ConfigError(f"need k > 0 and offset >= 0, got k={k}, offset={offset}")
        items = np.asarray(items, dtype=np.int64)
        scores = np.asarray(scores, dtype=np.float64)
        drop = set(self.rules.blocked) | {int(i) for i in exclude}
        keep = np.asarray([int(i) not in drop for i in items], bool) & np.isfinite(scores)
        items, scores = items[keep], scores[keep]
        if not len(items):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        lo, hi = scores.min(), scores.max()
        rel = (scores - lo) / (hi - lo) if hi > lo else np.ones_like(scores)
        if self.rules.boosts:
            rel = rel + np.asarray([self.rules.boosts.get(int(i), 0.0) for i in items])
        order = self._select(items, rel, offset + k)
        chosen = order[offset : offset + k]
        return items[chosen], rel[chosen].astype(np.float32)

    def _select(self, items: np.ndarray, rel: np.ndarray, want: int) -> np.ndarray:
        cap = self.rules.max_per_group
        lam = 1.0 - self.diversity
        use_mmr = self.diversity > 0 and self.vectors is not None
        x = self.vectors[items] if use_mmr else None
        max_sim = np.full(len(items), -np.inf) if use_mmr else None
        counts: dict[str, int] = {}
        available = np.ones(len(items), bool)
        picked: list[int] = []
        base = np.lexsort((items, -rel))  # relevance order, ties by index
        while len(picked) < want and available.any():
            if use_mmr and picked:
                value = lam * rel - (1.0 - lam) * max_sim
                value[~available] = -np.inf
                j = int(np.lexsort((items, -value))[0])
            else:
                j = int(next(b for b in base if available[b]))
            available[j] = False
            if cap and self.groups is not None:
                keys = self.groups[int(items[j])]
                if any(counts.get(g, 0) >= cap for g in keys):
                    continue
                for g in keys:
                    counts[g] = counts.get(g, 0) + 1
            picked.append(j)
            if use_mmr:
                max_sim = np.maximum(max_sim, x @ x[j])
        return np.asarray(picked, dtype=np.int64)
