"""Zero-shot tags: which words of a vocabulary describe an item, and which modality says so.

Every tag of the vocabulary (by default the catalogue's own tags and genres) is encoded once as a
query by the text encoder. Each source of evidence about an item is a passage vector in the same
space: its own text, its transcript, its on-screen text, and a sentence made of the ImageNet
labels of its frames ("a picture of: tabby cat, Egyptian cat"). Each tag's similarity is first
calibrated by its mean similarity to that source over the catalogue (some tags are close to
everything), then a softmax over the vocabulary (temperature ``temperature``) makes a score "how
much more this tag than the others"; an item's tag score is the weighted mean over its sources,
and the tag records the source that contributed most. Once calibrated, a tag is only given to an
item that is more about it than the catalogue usually is (calibrated similarity above zero in
some source), so an item about nothing in the vocabulary gets no tags.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Tag", "ZeroShotTagger"]


@dataclass(frozen=True)
class Tag:
    """A tag with its probability and the modality that gave it."""

    tag: str
    score: float
    source: str

    def to_dict(self) -> dict[str, object]:
        return {"tag": self.tag, "score": round(self.score, 4), "source": self.source}


class ZeroShotTagger:
    """Tags items from per-source passage vectors.

    Args:
        encoder: the text encoder (``encode_queries`` is used when it has one).
        vocabulary: candidate tags (duplicates and blanks dropped, case kept).
        temperature: softmax temperature over cosine similarities (e5 similarities spread over
            a few hundredths, hence the small default).
        max_tags: tags kept per item.
        min_score: smallest probability kept.
        encode: how to encode the tags (default: the encoder's query side); the analyser passes
            a cached version.
    """

    def __init__(
        self,
        encoder,  # noqa: ANN001 - any text Encoder
        vocabulary: Sequence[str],
        temperature: float = 0.01,
        max_tags: int = 5,
        min_score: float = 0.15,
        encode: Callable[[list[str]], np.ndarray] | None = None,
    ) -> None:
        seen: dict[str, str] = {}  # lower-cased -> first spelling
        for t in vocabulary:
            t = (t or "").strip()
            if t and t.lower() not in seen:
                seen[t.lower()] = t
        self.vocabulary = list(seen.values())
        self.temperature = temperature
        self.max_tags = max_tags
        self.min_score = min_score
        encode = encode or getattr(encoder, "encode_queries", encoder.encode)
        self.tag_vectors = (
            encode(self.vocabulary) if self.vocabulary else np.zeros((0, encoder.dim), np.float32)
        )
        self.offsets: dict[str, np.ndarray] = {}

    def similarities(self, vectors: np.ndarray, source: str | None = None) -> np.ndarray:
        """``n x len(vocabulary)`` cosine similarities, minus the source's calibration."""
        sims = np.asarray(vectors, np.float32) @ self.tag_vectors.T
        if source is not None and source in self.offsets:
            sims = sims - self.offsets[source]
        return sims

    def calibrate(self, source: str, vectors: np.ndarray, min_items: int = 20) -> bool:
        """Learn how similar each tag is to this source's passages *on average*.

        Some tags are close to every passage (the encoder's prior, not the item's content);
        subtracting each tag's mean similarity over the catalogue makes the scores say how much
        more this item is about the tag than items usually are. Needs ``min_items`` non-empty
        rows; returns whether it calibrated.
        """
        v = np.asarray(vectors, np.float32)
        v = v[np.linalg.norm(v, axis=1) > 0]
        if len(v) < min_items or not len(self.vocabulary):
            return False
        self.offsets[source] = (v @ self.tag_vectors.T).mean(axis=0)
        return True

    def probabilities(self, vectors: np.ndarray, source: str | None = None) -> np.ndarray:
        """``n x len(vocabulary)`` softmax scores; rows of zero vectors give zeros."""
        if not len(self.vocabulary):
            return np.zeros((len(vectors), 0), np.float32)
        sims = self.similarities(vectors, source) / self.temperature
        sims -= sims.max(axis=1, keepdims=True)
        p = np.exp(sims)
        p /= p.sum(axis=1, keepdims=True)
        p[np.linalg.norm(vectors, axis=1) == 0] = 0.0
        return p

    def tag(
        self, sources: dict[str, np.ndarray], weights: dict[str, float] | None = None
    ) -> list[list[Tag]]:
        """Tags per item from ``source name -> n x dim`` passage vectors (zero rows: absent).

        An item's tag score is the weighted mean of its sources' probabilities (over the sources
        it has); the tag's ``source`` is the one that contributed most.
        """
        names = list(sources)
        if not names:
            return []
        n = len(next(iter(sources.values())))
        if not len(self.vocabulary) or self.max_tags == 0:
            return [[] for _ in range(n)]
        w = np.asarray([(weights or {}).get(s, 1.0) for s in names], np.float32)
        probs = np.stack([self.probabilities(sources[s], s) for s in names])  # s x n x v
        present = np.stack([np.linalg.norm(sources[s], axis=1) > 0 for s in names])  # s x n
        share = w[:, None, None] * probs
        total = share.sum(axis=0) / np.maximum((w[:, None] * present).sum(axis=0), 1e-12)[:, None]
        # "none of these": once a source is calibrated, a tag needs an item to be more about it
        # than the catalogue usually is (calibrated similarity > 0) in some calibrated source
        calibrated = [k for k, name in enumerate(names) if name in self.offsets]
        if calibrated:
            support = np.zeros(total.shape, bool)
            for k in calibrated:
                sims = self.similarities(sources[names[k]], names[k])
                support |= (sims > 0) & present[k][:, None]
            uncalibrated_present = np.zeros(n, bool)
            for k, _ in enumerate(names):
                if k not in calibrated:
                    uncalibrated_present |= present[k]
            total = np.where(support | uncalibrated_present[:, None], total, 0.0)
        best_src = share.argmax(axis=0)
        out: list[list[Tag]] = []
        for i in range(n):
            order = np.argsort(-total[i], kind="stable")[: self.max_tags]
            out.append(
                [
                    Tag(self.vocabulary[j], float(total[i, j]), names[best_src[i, j]])
                    for j in order
                    if total[i, j] > 0 and total[i, j] >= self.min_score
                ]
            )
        return out
