"""Catalogue search: BM25 over the items' words, vector search over their meaning, fused.

:class:`SearchIndex` answers a query four ways and fuses the ranked lists by reciprocal rank
fusion (each list weighted):

- **keyword**: BM25 (``bm25s``) over each item's fields, the title and tags counting more (each
  field's words are repeated by its weight, the usual BM25F shortcut). Words come from
  :func:`~avrec.language.tokens.tokenize` (stemmed English, jieba-segmented Chinese). A query
  word the catalogue never uses is replaced by the closest word it does use, as typed, before
  stemming (edit distance with transpositions 1, or 2 for words of eight letters or more;
  ``rapidfuzz``), so "shawshenk" finds "Shawshank" and "stroy" "story".
- **semantic**: the query encoded with multilingual-e5 (query side) against the items' vectors
  (passage side) through FAISS, so "a funny cat video" finds a clip whose title says "kitten
  fails" and a Chinese query finds English titles. Each item has its text vector (title, tags,
  description) and, as separate rows, vectors of its tags and of passages of its transcript and
  on-screen text (:func:`encode_segments`); an item counts by its closest row, so a line said
  in a clip is found even when the clip's description is about something else.
- **multilingual**: the query encoded with the Universal Sentence Encoder (multilingual v3)
  against USE vectors of each item's title, tags and sentences
  (:func:`~avrec.language.passages.encode_multilingual`); an item counts by its closest
  sentence. e5 keeps to the query's language (a Chinese request over an English catalogue
  found hub items); USE was trained on translation pairs and crosses languages both ways.
- **translated**: a request in the other language than (part of) the catalogue, rendered word
  by word through CC-CEDICT (:mod:`avrec.language.translate`) and searched by e5 in the
  catalogue's language; with ``translate_keywords``, the rendering's words also join the
  keyword leg's (words the catalogue uses, uncorrected).
- **title**: fuzzy matching of the whole query against whole titles (``rapidfuzz`` ratio >= 80,
  leading articles and the year left out), for people who type a title, misspelt; catalogues
  above ``fuzzy_titles_max`` items skip it (the per-word correction still applies).

Filters are an ``allowed`` mask over items (the pipeline's :class:`ItemFacts` masks), applied
inside each retriever, so K results all pass.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avrec.errors import ConfigError, NotFittedError
from avrec.language import clip_query
from avrec.language.passages import (
    DEFAULT_SEGMENTS,
    FIELDS,
    SEGMENT_FIELDS,
    document_text,
    encode_multilingual,
    encode_segments,
    fill_text_vectors,
    item_documents,
    multilingual_passages,
    segment_texts,
)
from avrec.language.tokens import stem, tokenize
from avrec.storage.artifacts import JsonRows, atomic_write_bytes, from_json_array, json_array

__all__ = [
    "FIELDS",
    "SearchHit",
    "SearchIndex",
    "document_text",
    "DEFAULT_SEGMENTS",
    "SEGMENT_FIELDS",
    "encode_multilingual",
    "encode_segments",
    "fill_text_vectors",
    "multilingual_passages",
    "item_documents",
    "segment_texts",
]

#: the retrievers a search fuses, each with its weight
RETRIEVERS: tuple[str, ...] = (
    "keyword", "semantic", "title", "multilingual", "translated", "description",
)  # fmt: skip
#: the least share of the catalogue in the other language for which a request is translated:
#: a request is translated into the catalogue's majority language only. On the development
#: half, Chinese requests over the KuaiRec captions (a tenth of them not Chinese) lost MRR
#: when translated too (0.643 without, 0.621 with, BENCHMARKS.md, run of 679c368)
TRANSLATE_MIN_SHARE = 0.5

_DESCRIPTION = SEGMENT_FIELDS.index("description")

#: the language pairs (request-catalogue: the request's language, the catalogue's majority
#: language) whose requests are fused at weights of their own
PAIRS: tuple[str, ...] = ("en-en", "zh-zh", "zh-en", "en-zh")

#: the fusion weights of each language pair, chosen on that pair's development sets
#: (``python -m benchmarks.language``, BENCHMARKS.md); keyword 1 and title 0.5 fixed. A
#: request that crosses languages is also translated (the ``translated`` leg)
PAIR_WEIGHTS: dict[str, dict[str, float]] = {
    "en-en": {"keyword": 1.0, "semantic": 1.0, "title": 0.5, "multilingual": 0.75,
              "translated": 0.0, "description": 3.0},
    "zh-zh": {"keyword": 1.0, "semantic": 24.0, "title": 0.5, "multilingual": 12.0,
              "translated": 0.0, "description": 1.0},
    "zh-en": {"keyword": 1.0, "semantic": 1.0, "title": 0.5, "multilingual": 0.5,
              "translated": 1.0, "description": 1.0},
    "en-zh": {"keyword": 1.0, "semantic": 3.0, "title": 0.5, "multilingual": 6.0,
              "translated": 1.0, "description": 1.0},
}  # fmt: skip

_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")


_ARTICLE = r"(the|a|an|les|la|le|il|el|der|die|das)"


def _title_key(title: str) -> str:
    """A title as compared: lower case, without its year and leading article ("Shawshank
    Redemption, The (1994)" and "the shawshank redemption" both give "shawshank
    redemption")."""
    t = _YEAR.sub("", unicodedata.normalize("NFKC", title or "")).strip().lower()
    t = re.sub(rf"^(.*), {_ARTICLE}$", r"\1", t)
    return re.sub(rf"^{_ARTICLE}\s+", "", t).strip()


@dataclass
class SearchHit:
    """One result: the item (index), its fused score, its rank in each retriever that found it
    (1 = first), per field, the query words found there, and, when the meaning matched, which
    part of the item was closest (``near``: ``"text"`` or one of :data:`SEGMENT_FIELDS`)."""

    item: int
    score: float
    ranks: dict[str, int] = field(default_factory=dict)
    matched: dict[str, list[str]] = field(default_factory=dict)
    near: str = ""


@dataclass
class Legs:
    """One query's ranked lists, one per retriever (item indexes, best first), before
    fusion: which part of an item its meaning matched (``near``), the language pair
    (request-catalogue, :data:`PAIRS`), and whether the best keyword match holds the
    request's words."""

    query: str
    mode: str
    lists: dict[str, np.ndarray]
    near: dict[int, str]
    pair: str
    evidence: bool

    @property
    def crossing(self) -> bool:
        """Whether the request is in another language than most of the catalogue."""
        a, b = self.pair.split("-")
        return a != b


class SearchIndex:
    """Hybrid keyword + semantic search over a catalogue.

    Args:
        weights: how much each retriever's list counts in the fusion, for every language
            pair (over :data:`PAIR_WEIGHTS`, chosen on development sets); 0 turns one off.
        pair_weights: the same for one language pair (``"zh-en"``: a Chinese request over
            a mostly English catalogue), over ``weights``.
        rrf_k: the reciprocal rank fusion constant (``1 / (rrf_k + rank)``).
        depth: how deep each retriever's list goes before fusion (at least ``k``).
        fuzzy_titles_max: the largest catalogue whose titles are fuzzy-matched whole.
        k1, b: BM25 parameters.
        keyword_evidence: the keyword list's weight is multiplied by this when the best
            keyword match holds at least ``evidence_coverage`` of the request's words (the
            fusion by evidence: a request made of an item's own words finds that item).
        translate_keywords: add the request's word-by-word translation to the keyword leg's
            words when the request's language differs from (part of) the catalogue's.
    """

    def __init__(
        self,
        weights: dict[str, float] | None = None,
        pair_weights: dict[str, dict[str, float]] | None = None,
        rrf_k: float = 60.0,
        depth: int = 300,
        fuzzy_titles_max: int = 200_000,
        k1: float = 1.2,
        b: float = 0.75,
        keyword_evidence: float = 256.0,
        evidence_coverage: float = 0.75,
        translate_keywords: bool = True,
    ) -> None:
        # the pipeline's defaults (PipelineConfig.search_params), chosen on development
        # requests in both languages over both benchmark catalogues (BENCHMARKS.md)
        pair_weights = pair_weights or {}
        unknown_pairs = set(pair_weights) - set(PAIRS)
        if unknown_pairs:
            raise ConfigError(f"unknown language pairs {sorted(unknown_pairs)}: {', '.join(PAIRS)}")
        #: the weights of each language pair (the fallback, ``weights``, for any other)
        self.pair_weights = {
            p: {**PAIR_WEIGHTS[p], **(weights or {}), **pair_weights.get(p, {})} for p in PAIRS
        }
        self.weights = {**PAIR_WEIGHTS["en-en"], **(weights or {})}
        used = set(self.weights).union(*self.pair_weights.values())
        unknown = used - set(RETRIEVERS)
        if unknown:
            raise ConfigError(f"unknown retrievers {sorted(unknown)}: {', '.join(RETRIEVERS)}")
        self.rrf_k = rrf_k
        self.depth = depth
        self.keyword_evidence = keyword_evidence
        self.evidence_coverage = evidence_coverage
        self.translate_keywords = translate_keywords
        self.fuzzy_titles_max = fuzzy_titles_max
        self.k1, self.b = k1, b
        self.bm25 = None
        self._fitted = False
        self.vindex: Any = None
        self.encoder: Any = None
        self.mencoder: Any = None
        self.mindex: Any = None

    # -- building ------------------------------------------------------------------------------
    def fit(
        self,
        docs: Sequence[dict[str, str]],
        vectors: np.ndarray | None = None,
        segments: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
        multilingual: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> SearchIndex:
        """Index ``docs`` (one field -> text dict per item; row ``i`` is item ``i``) and, for
        semantic search, their text ``vectors`` (``n x dim`` e5 passage vectors; zero rows for
        items without one) and ``segments`` (what :func:`encode_segments` returns: vectors of
        the items' tags, transcript and on-screen text) and ``multilingual`` (what
        :func:`encode_multilingual` returns: USE vectors of the items' sentences)."""
        self.docs = [dict(d) for d in docs]
        self._build()
        self.vindex = None
        self._set_segments(np.zeros(0, np.int64), np.zeros(0, np.int8), None)
        self._set_multilingual(np.zeros(0, np.int64), None)
        if vectors is not None:
            self.set_vectors(vectors)
        if segments is not None:
            self.set_segments(*segments)
        if multilingual is not None:
            self.set_multilingual(*multilingual)
        return self

    def _build(self) -> None:
        from collections import Counter

        bm25s = _bm25s()

        corpus, df = [], Counter()
        for d in self.docs:
            toks: list[str] = []
            for name, weight in FIELDS.items():
                if d.get(name):
                    toks.extend(tokenize(d[name], stem=False) * weight)
            df.update(set(toks))
            corpus.append(stem(toks))
        self.bm25 = None  # a catalogue without a word (ids only): no keyword search
        if any(corpus):
            self.bm25 = bm25s.BM25(k1=self.k1, b=self.b)
            self.bm25.index(corpus, show_progress=False)
        self._fitted = True
        self.zh_share = _zh_share(self.docs)
        # most used first: a typo as close to two words is read as the commoner one
        words = sorted(df, key=lambda w: (-df[w], w))
        self._prepare([_title_key(d.get("title", "")) for d in self.docs], words)

    def _prepare(self, title_keys: list[str], words: list[str]) -> None:
        self.words = words  # the catalogue's words as written (lower case), most used first
        self.word_set = frozenset(words)
        self._rank = {w: r for r, w in enumerate(words)}
        self._by_len: dict[int, list[str]] = {}
        for w in words:
            if w.isascii():
                self._by_len.setdefault(len(w), []).append(w)
        self.title_keys = title_keys
        self._encoded: dict[str, np.ndarray] = {}
        self._m_encoded: dict[str, np.ndarray] = {}
        self._translated: dict[str, str] = {}

    def set_vectors(self, vectors: np.ndarray) -> None:
        """Text vectors for semantic search, one row per item (zero rows: none). Only the
        items with one are kept and indexed."""
        from avrec.features.base import l2_normalise

        x = np.asarray(vectors, np.float32)
        if len(x) != len(self.docs):
            raise ConfigError(f"{len(x)} text vectors for {len(self.docs)} documents")
        rows = np.flatnonzero(np.linalg.norm(x, axis=1) > 0)
        self._set_rows(rows, l2_normalise(x[rows]))

    def _set_rows(
        self, rows: np.ndarray, x: np.ndarray, index_bytes: bytes | None = None, kind: str = ""
    ) -> None:
        self.rows = np.asarray(rows, np.int64)
        self.row_vectors = np.ascontiguousarray(x, np.float32)
        self.row_of = np.full(self.n_items, -1, np.int64)
        self.row_of[self.rows] = np.arange(len(self.rows))
        self.has_vector = self.row_of >= 0
        self.vindex = _vector_index(self.row_vectors, index_bytes, kind)

    def set_segments(self, items: np.ndarray, fields: np.ndarray, vectors: np.ndarray) -> None:
        """Vectors of parts of items (their tags, passages of their transcript and on-screen
        text), searched beside the text vectors: row ``r`` belongs to item ``items[r]`` and
        is field ``SEGMENT_FIELDS[fields[r]]``."""
        from avrec.features.base import l2_normalise

        items = np.asarray(items, np.int64)
        if len(items) and (items.min() < 0 or items.max() >= self.n_items):
            raise ConfigError(f"segment rows name items outside the {self.n_items} documents")
        x = l2_normalise(vectors) if len(items) else None
        self._set_segments(items, np.asarray(fields, np.int8), x)

    def _set_segments(
        self,
        items: np.ndarray,
        fields: np.ndarray,
        x: np.ndarray | None,
        index_bytes: bytes | None = None,
        kind: str = "",
    ) -> None:
        self.seg_items, self.seg_fields = items, fields
        self.seg_description = np.asarray(fields) == _DESCRIPTION  # the description leg's rows
        self.seg_vectors = None if x is None else np.ascontiguousarray(x, np.float32)
        self.sindex = _vector_index(self.seg_vectors, index_bytes, kind)

    def set_multilingual(self, items: np.ndarray, vectors: np.ndarray) -> None:
        """USE vectors of items' sentences for the ``multilingual`` leg: row ``r`` belongs to
        item ``items[r]``."""
        from avrec.features.base import l2_normalise

        items = np.asarray(items, np.int64)
        if len(items) and (items.min() < 0 or items.max() >= self.n_items):
            raise ConfigError(f"multilingual rows name items outside the {self.n_items} documents")
        self._set_multilingual(items, l2_normalise(vectors) if len(items) else None)

    def _set_multilingual(
        self,
        items: np.ndarray,
        x: np.ndarray | None,
        index_bytes: bytes | None = None,
        kind: str = "",
    ) -> None:
        self.m_items = items
        self.m_vectors = None if x is None else np.ascontiguousarray(x, np.float32)
        self.mindex = _vector_index(self.m_vectors, index_bytes, kind)

    @property
    def has_semantic(self) -> bool:
        """Whether any item has a vector to match a query's meaning against."""
        return (
            self.vindex is not None
            or getattr(self, "sindex", None) is not None
            or getattr(self, "mindex", None) is not None
        )

    @property
    def vectors(self) -> np.ndarray | None:
        """Every item's text vector (zero rows: none), or ``None`` without any."""
        if self.vindex is None:
            return None
        out = np.zeros((self.n_items, self.row_vectors.shape[1]), np.float32)
        out[self.rows] = self.row_vectors
        return out

    def similar(
        self, item: int, n: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` items whose text is closest to ``item``'s (not itself), and the cosines."""
        if self.vindex is None or self.row_of[item] < 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        return self.semantic(self.row_vectors[self.row_of[item]], n, allowed, exclude=[item])

    def _check(self) -> None:
        if not getattr(self, "_fitted", False):
            raise NotFittedError("SearchIndex.fit has not been called")

    @property
    def n_items(self) -> int:
        return len(self.docs)

    # -- querying ------------------------------------------------------------------------------
    def correct(self, words: Sequence[str]) -> list[str]:
        """Each query word (unstemmed) the catalogue does not use replaced by the closest one
        it does (Latin words of four letters or more; edit distance with transpositions 1,
        2 from eight letters), or dropped when none is close."""
        from rapidfuzz import process
        from rapidfuzz.distance import OSA

        out = []
        for w in words:
            if w in self.word_set:
                out.append(w)
                continue
            if len(w) < 4 or not w.isascii():
                continue
            cut = 2 if len(w) >= 8 else 1
            # only words whose length is within the distance can be that close
            near = [
                x for n in range(len(w) - cut, len(w) + cut + 1) for x in self._by_len.get(n, ())
            ]
            found = process.extract(w, near, scorer=OSA.distance, score_cutoff=cut, limit=None)
            if found:  # the closest; among equally close, the most used
                out.append(min(found, key=lambda f: (f[1], self._rank[f[0]]))[0])
        return out

    def query_tokens(self, query: str) -> list[str]:
        """The BM25 tokens of ``query``: its words, corrected, stemmed."""
        return stem(self.correct(tokenize(query, stem=False)))

    def keyword(
        self, query: str, n: int, allowed: np.ndarray | None = None, extra: str = ""
    ) -> np.ndarray:
        """Items by BM25 score, best first (only items that contain a query word). ``extra``
        (a translation of the query) adds its words that the catalogue uses, uncorrected."""
        self._check()
        if self.bm25 is None:
            return np.zeros(0, np.int64)
        toks = [t for t in self.query_tokens(query) if t in self.bm25.vocab_dict]
        toks += [t for t in tokenize(extra) if t in self.bm25.vocab_dict]
        if not toks:
            return np.zeros(0, np.int64)
        scores = np.asarray(self.bm25.get_scores(toks), np.float32)
        if allowed is not None:
            scores = np.where(allowed, scores, 0.0)
        return _top_positive(scores, n)

    def translation(self, query: str) -> str:
        """``query`` rendered word by word into the catalogue's other language, when at least
        :data:`TRANSLATE_MIN_SHARE` of the catalogue is in that language and not the
        request's; ``""`` otherwise (kept for the last few queries)."""
        from avrec.language.translate import dictionary

        def make() -> str:
            request, catalogue = self.pair(query).split("-")
            return dictionary().translate(query, catalogue) if request != catalogue else ""

        return _remember(self._translated, query, make)

    def pair(self, query: str) -> str:
        """``query``'s language pair, ``"<request>-<catalogue>"`` (:data:`PAIRS`): the
        request's language and the catalogue's majority language (Chinese when at least
        :data:`TRANSLATE_MIN_SHARE` of it is)."""
        from avrec.language.translate import request_language

        catalogue = "zh" if self.zh_share >= TRANSLATE_MIN_SHARE else "en"
        return f"{request_language(query)}-{catalogue}"

    def crosses(self, query: str) -> bool:
        """Whether ``query`` is in another language than most of the catalogue: such a
        request is translated, and fused at its pair's weights."""
        a, b = self.pair(query).split("-")
        return a != b

    def weights_for(self, pair: str) -> dict[str, float]:
        """The fusion weights of the language ``pair``."""
        return self.pair_weights.get(pair, self.weights)

    def encode_query(self, query: str) -> np.ndarray:
        """The query's e5 vector (kept for the last few queries)."""
        if self.encoder is None:
            from avrec.features.text import E5TextEncoder

            self.encoder = E5TextEncoder()
        return _remember(self._encoded, query, lambda: self.encoder.encode_queries([query])[0])

    def encode_multilingual_query(self, query: str) -> np.ndarray:
        """The query's USE vector (kept for the last few queries)."""
        if self.mencoder is None:
            from avrec.features.text import UseTextEncoder

            self.mencoder = UseTextEncoder()
        return _remember(self._m_encoded, query, lambda: self.mencoder.encode_queries([query])[0])

    def multilingual(
        self, query: str | np.ndarray, n: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Items by the cosine between the query's USE vector and their closest sentence, best
        first, and the cosines (the ``multilingual`` leg; empty without USE vectors)."""
        if getattr(self, "mindex", None) is None:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        q = (
            self.encode_multilingual_query(query)
            if isinstance(query, str)
            else np.asarray(query, np.float32)
        )
        ok = None if allowed is None else allowed[self.m_items]
        # several rows per item: look deeper so that n distinct items come back
        res = self.mindex.search(q[None], min(len(self.m_items), 4 * n), allowed=ok)
        best: dict[int, float] = {}
        for r, c in zip(res.indices[0].tolist(), res.scores[0].tolist(), strict=True):
            if r >= 0 and c > 0:
                item = int(self.m_items[r])
                if c > best.get(item, -2.0):
                    best[item] = c
        top = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
        return (
            np.asarray([i for i, _ in top], np.int64),
            np.asarray([c for _, c in top], np.float32),
        )

    def semantic(
        self,
        query: str | np.ndarray,
        n: int,
        allowed: np.ndarray | None = None,
        min_score: float = 0.0,
        exclude: Sequence[int] = (),
        near: bool = False,
    ) -> tuple[np.ndarray, ...]:
        """Items by cosine between the query and their closest vector (the text vector or a
        segment's), best first, and the cosines; with ``near``, also which part was closest
        (``"text"`` or a :data:`SEGMENT_FIELDS` name). Items without a vector are never
        found."""
        empty = (np.zeros(0, np.int64), np.zeros(0, np.float32))
        if not self.has_semantic:
            return (*empty, np.zeros(0, object)) if near else empty
        q = self.encode_query(query) if isinstance(query, str) else np.asarray(query, np.float32)
        best: dict[int, tuple[float, str]] = {}
        if self.vindex is not None:
            ok = None if allowed is None else allowed[self.rows]
            ex = self.row_of[np.asarray(list(exclude), np.int64)] if len(exclude) else None
            res = self.vindex.search(
                q[None], n, allowed=ok, exclude=None if ex is None else [ex[ex >= 0]]
            )
            for r, c in zip(res.indices[0].tolist(), res.scores[0].tolist(), strict=True):
                if r >= 0 and c > min_score:
                    best[int(self.rows[r])] = (c, "text")
        for item, (c, name) in self._segment_best(q, n, allowed, exclude, min_score).items():
            if c > best.get(item, (-2.0, ""))[0]:
                best[item] = (c, name)
        top = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))[:n]
        items = np.asarray([i for i, _ in top], np.int64)
        cos = np.asarray([c for _, (c, _) in top], np.float32)
        if near:
            return items, cos, np.asarray([f for _, (_, f) in top], object)
        return items, cos

    def _segment_best(
        self,
        q: np.ndarray,
        n: int,
        allowed: np.ndarray | None,
        exclude: Sequence[int] = (),
        min_score: float = 0.0,
        description: bool = False,
    ) -> dict[int, tuple[float, str]]:
        """Item -> (cosine, field) of its closest segment row: the description's rows with
        ``description``, every other field's without."""
        if self.sindex is None:
            return {}
        own = self.seg_description
        ok = own.copy() if description else ~own
        if allowed is not None:
            ok &= allowed[self.seg_items]
        if len(exclude):
            ok &= ~np.isin(self.seg_items, np.asarray(list(exclude), np.int64))
        if not ok.any():  # no row of that kind, or none that passes the filter
            return {}
        # several rows per item: look deeper so that n distinct items come back
        res = self.sindex.search(q[None], min(int(ok.sum()), 3 * n), allowed=ok)
        best: dict[int, tuple[float, str]] = {}
        for r, c in zip(res.indices[0].tolist(), res.scores[0].tolist(), strict=True):
            if r < 0 or c <= min_score:
                continue
            item = int(self.seg_items[r])
            if c > best.get(item, (-2.0, ""))[0]:
                best[item] = (c, SEGMENT_FIELDS[int(self.seg_fields[r])])
        return best

    def description(
        self, query: str | np.ndarray, n: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Items by the cosine between the query's e5 vector and their description's closest
        passage, best first, and the cosines (the ``description`` leg; only items whose
        description says more than their title have such passages)."""
        if self.sindex is None or not self.seg_description.any():
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        q = self.encode_query(query) if isinstance(query, str) else np.asarray(query, np.float32)
        best = self._segment_best(q, n, allowed, description=True)
        top = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))[:n]
        return (
            np.asarray([i for i, _ in top], np.int64),
            np.asarray([c for _, (c, _) in top], np.float32),
        )

    def title(self, query: str, n: int, allowed: np.ndarray | None = None) -> np.ndarray:
        """Items whose whole title resembles the whole query (ratio >= 80), best first."""
        from rapidfuzz import fuzz, process

        q = _title_key(query)
        if self.n_items > self.fuzzy_titles_max or not q:
            return np.zeros(0, np.int64)
        found = process.extract(
            q, self.title_keys, scorer=fuzz.ratio, limit=max(n, 1) * 4, score_cutoff=80
        )
        items = [i for _, _, i in found if allowed is None or allowed[i]]
        return np.asarray(items[:n], np.int64)

    def search(
        self,
        query: str,
        k: int = 10,
        allowed: np.ndarray | None = None,
        exclude: Sequence[int] = (),
        mode: str = "hybrid",
        semantic_margin: float | None = None,
        explain: bool = True,
    ) -> list[SearchHit]:
        """The ``k`` best items for ``query``: ``mode`` ``"hybrid"`` (every retriever, fused
        at its language pair's weights, :meth:`pair`) or one retriever's name (that one
        alone). ``semantic_margin`` keeps only the semantic matches within that much
        cosine of the best one (e5's cosines crowd together: a generic query is about as
        close to everything). ``explain`` False leaves the hits' ``matched`` empty
        (:meth:`matches` gives it for the few that are shown). A query over
        :data:`~avrec.language.MAX_QUERY_CHARS` is cut to that length
        (:func:`~avrec.language.clip_query`).

        Raises:
            ConfigError: ``k`` is not positive or ``mode`` is unknown.
        """
        legs = self.legs(query, k, allowed, exclude, mode, semantic_margin)
        return self.fuse(legs, k, explain)

    def legs(
        self,
        query: str,
        k: int = 10,
        allowed: np.ndarray | None = None,
        exclude: Sequence[int] = (),
        mode: str = "hybrid",
        semantic_margin: float | None = None,
        weights: dict[str, float] | None = None,
        translate_keywords: bool | None = None,
    ) -> Legs:
        """Each retriever's ranked list for ``query``, before fusion: in ``"hybrid"`` mode
        those whose weight is above 0 in ``weights`` (default: the weights that apply to the
        query), else the one ``mode`` names. ``translate_keywords`` overrides the index's
        setting. The benchmark fuses one query's legs at many weights (:meth:`fuse`)."""
        self._check()
        query = clip_query(query)[0]
        if k <= 0:
            raise ConfigError(f"k must be positive, got {k}")
        if mode not in ("hybrid", *RETRIEVERS) or mode == "title":
            raise ConfigError(
                f"unknown search mode {mode!r}: hybrid, "
                + ", ".join(r for r in RETRIEVERS if r != "title")
            )
        if allowed is not None:
            allowed = np.asarray(allowed, bool)
            if allowed.shape != (self.n_items,):
                raise ConfigError(f"allowed must be a mask over {self.n_items} items")
        if len(exclude):
            allowed = np.ones(self.n_items, bool) if allowed is None else allowed.copy()
            ex = np.asarray(list(exclude), np.int64)
            allowed[ex[(ex >= 0) & (ex < self.n_items)]] = False
        pair = self.pair(query)
        crossing = pair.split("-")[0] != pair.split("-")[1]
        w = weights or self.weights_for(pair)
        tk = self.translate_keywords if translate_keywords is None else translate_keywords

        def wanted(name: str) -> bool:
            return mode == name or (mode == "hybrid" and w.get(name, 0.0) > 0)

        depth = max(self.depth, k)
        lists: dict[str, np.ndarray] = {}
        near: dict[int, str] = {}
        translated = ""
        if crossing and (wanted("translated") or (wanted("keyword") and tk)):
            translated = self.translation(query)
        if wanted("keyword"):
            lists["keyword"] = self.keyword(query, depth, allowed, translated if tk else "")
        if wanted("semantic"):
            found, cos, parts = self.semantic(query, depth, allowed, near=True)
            if semantic_margin is not None and len(cos):
                keep = cos >= cos[0] - semantic_margin
                found, parts = found[keep], parts[keep]
            lists["semantic"] = found
            near = dict(zip(found.tolist(), parts.tolist(), strict=True))
        if wanted("description"):
            lists["description"] = self.description(query, depth, allowed)[0]
            for item in lists["description"].tolist():
                near.setdefault(item, "description")
        if wanted("multilingual"):
            lists["multilingual"] = self.multilingual(query, depth, allowed)[0]
        if wanted("translated") and translated and self.has_semantic:
            lists["translated"] = self.semantic(translated, depth, allowed)[0]
        if wanted("title"):
            lists["title"] = self.title(query, depth, allowed)
        evidence = (
            mode == "hybrid"
            and len(lists.get("keyword", ())) > 0
            and self.coverage(int(lists["keyword"][0]), query) >= self.evidence_coverage
        )
        return Legs(query, mode, lists, near, pair, evidence)

    def fuse(
        self,
        legs: Legs,
        k: int = 10,
        explain: bool = True,
        weights: dict[str, float] | None = None,
        keyword_evidence: float | None = None,
    ) -> list[SearchHit]:
        """The ``k`` best items of ``legs`` by weighted reciprocal rank fusion: at ``weights``
        (default: the weights that apply to the query), the keyword list's weight multiplied
        by ``keyword_evidence`` (default the index's) when the best keyword match holds the
        request's words (people who type an item's words mean that item, and the meaning
        legs' other guesses must not bury it). A single retriever's list is taken as it is."""
        if legs.mode != "hybrid":
            weights = {legs.mode: 1.0}
        w = dict(weights or self.weights_for(legs.pair))
        if legs.evidence:
            w["keyword"] = w.get("keyword", 0.0) * (
                self.keyword_evidence if keyword_evidence is None else keyword_evidence
            )
        hits: dict[int, SearchHit] = {}
        for name, items in legs.lists.items():
            weight = w.get(name, 0.0)
            if weight <= 0:
                continue
            for r, item in enumerate(items.tolist(), start=1):
                hit = hits.setdefault(item, SearchHit(item, 0.0, near=legs.near.get(item, "")))
                hit.score += weight / (self.rrf_k + r)
                hit.ranks[name] = r
        best = sorted(hits.values(), key=lambda h: (-h.score, h.item))[:k]
        if explain:
            words = self.query_words(legs.query)
            for h in best:
                h.matched = self.matches(h.item, words)
        return best

    def coverage(self, item: int, query: str) -> float:
        """The share of ``query``'s distinct words (as searched: corrected, stemmed, without
        stop words) that ``item``'s fields contain; 0 for a query of fewer than two words
        (one word is too little evidence)."""
        words = set(self.query_tokens(query))
        if len(words) < 2:
            return 0.0
        doc = self.docs[item]
        have: set[str] = set()
        for name in FIELDS:
            if doc.get(name):
                have.update(tokenize(doc[name]))
        return len(words & have) / len(words)

    def query_words(self, query: str) -> dict[str, str]:
        """Stem -> word (as corrected) of each of ``query``'s words, for :meth:`matches`."""
        words = self.correct(tokenize(query, stem=False))
        return dict(zip(stem(words), words, strict=True))

    def matches(self, item: int, query: str | dict[str, str]) -> dict[str, list[str]]:
        """The words of ``query`` (as corrected, not stemmed) found in each field of
        ``item`` (``query`` may be its :meth:`query_words`)."""
        by_stem = self.query_words(query) if isinstance(query, str) else query
        out = {}
        doc = self.docs[item]
        for name in FIELDS:
            text = doc.get(name)
            if text and by_stem:
                found = sorted({by_stem[t] for t in tokenize(text) if t in by_stem})
                if found and name == "tags" and doc.get("tag_names"):
                    # the catalogue's own tag and genre names ("Sci-Fi"), not the words
                    # they were split into ("fi, sci")
                    names = [n for n in doc["tag_names"].split("|") if n]
                    whole = [n for n in names if any(t in by_stem for t in tokenize(n))]
                    found = whole or found
                if found:
                    out[name] = found
        return out

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the index into the folder ``path``: documents, title keys and vectors in one
        ``.npz``, the BM25 matrix and vocabulary in ``bm25/`` (bm25s' own files)."""
        import io

        self._check()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self.bm25 is not None:
            self.bm25.save(path / "bm25", show_progress=False)
        docs, at = JsonRows.encode(self.docs)
        arrays = {
            "docs": docs,
            "docs_at": at,
            "titles": json_array(self.title_keys),
            "words": json_array(self.words),
            "zh_share": np.asarray(self.zh_share, np.float32),
        }
        if self.vindex is not None:
            arrays["rows"] = self.rows
            arrays["row_vectors"] = self.row_vectors
            if self.vindex.built_kind != "exact":
                arrays["index_bytes"] = np.frombuffer(self.vindex.to_bytes(), np.uint8)
                arrays["index_kind"] = np.asarray(self.vindex.built_kind)
        if self.sindex is not None:
            arrays["seg_items"] = self.seg_items
            arrays["seg_fields"] = self.seg_fields
            arrays["seg_vectors"] = self.seg_vectors
            if self.sindex.built_kind != "exact":
                arrays["seg_index_bytes"] = np.frombuffer(self.sindex.to_bytes(), np.uint8)
                arrays["seg_index_kind"] = np.asarray(self.sindex.built_kind)
        if getattr(self, "mindex", None) is not None:
            arrays["m_items"] = self.m_items
            arrays["m_vectors"] = self.m_vectors
            if self.mindex.built_kind != "exact":
                arrays["m_index_bytes"] = np.frombuffer(self.mindex.to_bytes(), np.uint8)
                arrays["m_index_kind"] = np.asarray(self.mindex.built_kind)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(path / "search.npz", buf.getvalue())

    def load(self, path: str | Path) -> SearchIndex:
        """Read an index written by :meth:`save` (constructed with the same params)."""
        bm25s = _bm25s()

        path = Path(path)
        with np.load(path / "search.npz", allow_pickle=False) as npz:
            self.docs = JsonRows(npz["docs"], npz["docs_at"])  # parsed when read
            titles = from_json_array(npz["titles"])
            words = from_json_array(npz["words"])
            zh_share = float(npz["zh_share"]) if "zh_share" in npz.files else None
            skip = ("docs", "docs_at", "titles", "words", "zh_share")
            vec = {k: npz[k] for k in npz.files if k not in skip}
        self.bm25 = None
        if (path / "bm25").is_dir():
            self.bm25 = bm25s.BM25.load(path / "bm25", show_progress=False, verbosity=0)
        self._fitted = True
        # an index saved before the languages were counted: count them now
        self.zh_share = _zh_share(self.docs) if zh_share is None else zh_share
        self._prepare(titles, words)
        if "rows" in vec:
            data = vec.get("index_bytes")
            self._set_rows(
                vec["rows"],
                vec["row_vectors"],
                None if data is None else data.tobytes(),
                str(vec.get("index_kind", "")),
            )
        self._set_segments(np.zeros(0, np.int64), np.zeros(0, np.int8), None)
        if "seg_items" in vec:
            data = vec.get("seg_index_bytes")
            self._set_segments(
                vec["seg_items"],
                vec["seg_fields"],
                vec["seg_vectors"],
                None if data is None else data.tobytes(),
                str(vec.get("seg_index_kind", "")),
            )
        self._set_multilingual(np.zeros(0, np.int64), None)
        if "m_items" in vec:
            data = vec.get("m_index_bytes")
            self._set_multilingual(
                vec["m_items"],
                vec["m_vectors"],
                None if data is None else data.tobytes(),
                str(vec.get("m_index_kind", "")),
            )
        return self


def _remember(cache: dict, key: str, make: Any) -> Any:
    """``cache[key]``, made by ``make()`` the first time; past 256 entries the oldest goes
    (the last few queries' vectors and translations)."""
    if key in cache:
        return cache[key]
    hit = cache[key] = make()
    if len(cache) > 256:
        cache.pop(next(iter(cache)))
    return hit


def _zh_share(docs: Sequence[dict[str, str]]) -> float:
    """The share of ``docs`` whose title and description are written in Chinese."""
    from avrec.language.translate import request_language

    if not len(docs):
        return 0.0
    zh = sum(
        request_language(f"{d.get('title', '')} {d.get('description', '')}") == "zh" for d in docs
    )
    return zh / len(docs)


def _vector_index(x: np.ndarray | None, index_bytes: bytes | None, kind: str) -> Any:
    """A vector index over the rows of ``x`` (``None`` without rows): a saved graph index is
    read back from ``index_bytes``, not rebuilt."""
    from avrec.retrieval import VectorIndex

    if x is None or not len(x):
        return None
    if index_bytes is not None:
        return VectorIndex.from_bytes(index_bytes, kind)
    return VectorIndex().build(x)


def _bm25s():  # noqa: ANN202
    """``bm25s``, its logger put back under the application's logging settings: the package
    sets its logger to DEBUG when imported, so ``avrec train`` printed "DEBUG bm25s: Building
    index from tokens" without ``--debug`` (issue #16)."""
    import logging

    import bm25s

    logging.getLogger("bm25s").setLevel(logging.NOTSET)
    return bm25s


def _top_positive(scores: np.ndarray, n: int) -> np.ndarray:
    ok = np.flatnonzero(scores > 0)
    if len(ok) > n:
        ok = ok[np.argpartition(-scores[ok], n - 1)[:n]]
    return ok[np.lexsort((ok, -scores[ok]))]
