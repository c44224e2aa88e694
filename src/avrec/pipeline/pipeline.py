"""The pipeline: candidate sources -> merge with provenance -> learned ranker.

:class:`Pipeline` is a :class:`~avrec.models.base.Recommender`, so the evaluation measures it
exactly like a single model (full ranking; items no source proposed score ``-inf`` and count as
misses). ``fit(train, valid)`` fits the sources on the training split and the LambdaMART ranker
on the validation split's targets; without a validation split the candidates are ordered by
reciprocal-rank fusion of the sources (no training needed).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from avrec.data.dataset import Dataset
from avrec.errors import ConfigError, DataError, NotFittedError
from avrec.models.base import ItemList, ModelConfig, Recommender, UserBatch, register_model
from avrec.pipeline.catalogue import CatalogueSource  # noqa: F401 - registers "catalogue"
from avrec.pipeline.explain import Explanation, Reason, source_label, tag_counts, top_tags
from avrec.pipeline.filters import ItemFacts, ItemFilter
from avrec.pipeline.ranker import FeatureBuilder, Merged, Ranker, merge
from avrec.pipeline.rerank import Reranker, RerankRules
from avrec.pipeline.sources import Request, Source, create_source
from avrec.storage.artifacts import JsonRows

log = logging.getLogger(__name__)

__all__ = ["BUNDLE_FORMAT", "Pipeline", "PipelineConfig", "SourceConfig"]

#: the layout of a saved pipeline (2: request-time features, filters, shared indexes;
#: 3: item lists as one JSON document, one timeline and one index kept for all sources)
BUNDLE_FORMAT = 3


class SourceConfig(BaseModel):
    """One candidate source: its kind, how many candidates it gives, its parameters."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    name: str | None = None
    n: int = Field(100, gt=0)
    params: dict[str, Any] = Field(default_factory=dict)


def _search_defaults() -> dict[str, Any]:
    """The search index's defaults: the fusion weights of each language pair (a request's
    language, the catalogue's), depth, the evidence boost and the keyword translation, chosen
    on the development sets of both catalogues' request sets in both languages
    (benchmarks/language.py, BENCHMARKS.md)."""
    from avrec.language.search import PAIR_WEIGHTS

    return {
        "pair_weights": {p: dict(w) for p, w in PAIR_WEIGHTS.items()},
        "rrf_k": 60.0,
        "depth": 300,
        "keyword_evidence": 256.0,
        "translate_keywords": True,
    }


class PipelineConfig(ModelConfig):
    """A pipeline: its candidate sources, the ranker's parameters, the content feature."""

    sources: list[SourceConfig] = Field(
        default_factory=lambda: [
            SourceConfig(kind="model", name="ease", params={"model": "ease", "l2": 300.0}),
            SourceConfig(kind="model", name="markov", params={"model": "markov"}),
            SourceConfig(kind="model", name="itemknn", params={"model": "itemknn"}),
            SourceConfig(kind="people", n=50),
            SourceConfig(kind="popular", n=50),
        ]
    )
    ranker: dict[str, Any] = Field(
        default_factory=lambda: {
            "n_estimators": 300,
            "learning_rate": 0.05,
            "num_leaves": 7,
            "min_child_samples": 100,
        },
        description="LightGBM parameters (n_estimators is the most; early stopping picks fewer)",
    )
    ranker_holdout: int = Field(
        5,
        ge=0,
        description="the ranker learns from each user's last N training events (and the "
        "validation event) with the sources fitted on the rest, then the sources are refitted "
        "on everything; 0: learn from the validation events only, one fit (5 and the ranker's "
        "7 leaves were chosen on validation data: benchmarks/results/choose-defaults.json)",
    )
    ranker_min_history: int | None = Field(
        None,
        ge=0,
        description="requests with fewer events than this are ranked by reciprocal-rank "
        "fusion of the sources, not by the ranker; None: the shortest history the ranker "
        "learned from; 0: the ranker ranks every request",
    )
    dense_max_items: int = Field(
        30_000,
        gt=0,
        description="over a catalogue larger than this, an EASE source (n_items^2 floats, a "
        "cubic solve: 11 GB and about an hour at 30,000 items here) is replaced by the ALS "
        "factors source, searched through a vector index",
    )
    ranker_max_requests: int = Field(
        20_000,
        gt=0,
        description="at most this many users' requests (a seeded sample) teach the ranker",
    )
    feature: str = Field("fused", description="content vectors for similarity features")
    text_feature: str = Field("text", description="text vectors that mood playlists search")
    rrf_k: float = Field(60.0, gt=0, description="reciprocal-rank fusion constant (no ranker)")
    search: bool = Field(True, description="build the catalogue search index (search, ask)")
    search_params: dict[str, Any] = Field(
        default_factory=lambda: _search_defaults(),
        description="SearchIndex parameters (weights, rrf_k, depth ...)",
    )
    search_encode_max: int = Field(
        20_000,
        ge=0,
        description="items without analysed text vectors get e5 vectors of their title, tags "
        "and description at fit, for semantic search, up to this many (0: none)",
    )
    search_segments_max: int = Field(
        20_000,
        ge=0,
        description="items whose transcript and on-screen text (and free tags, if asked for) "
        "get e5 vectors of their own for semantic search, up to this many (those with speech "
        "or text first; 0: none)",
    )
    search_multilingual_max: int = Field(
        20_000,
        ge=0,
        description="items whose title, tags and sentences get Universal Sentence Encoder "
        "vectors for the cross-lingual search leg, up to this many (0: none)",
    )
    search_segment_fields: list[Literal["tags", "transcript", "ocr", "description"]] = Field(
        default_factory=lambda: ["transcript", "ocr", "description"],
        description="the parts of items that get their own vectors (tags cost MRR on both "
        "benchmark datasets; a description that says more than the title is the "
        "description leg's, BENCHMARKS.md)",
    )

    @classmethod
    def from_toml(cls, path: str | Path) -> PipelineConfig:
        """Read a pipeline file (``configs/default.toml`` shows every key).

        Raises:
            ConfigError: missing file, bad TOML, or an invalid key or value.
        """
        from avrec.config import load_toml_model

        return load_toml_model(cls, path, "pipeline file")

    def with_content_sources(self) -> PipelineConfig:
        """This config plus the vector sources (neighbours, interests) if it has none."""
        if any(s.kind in ("neighbours", "interests") for s in self.sources):
            return self
        extra = [
            SourceConfig(kind="neighbours", n=50, params={"feature": self.feature}),
            SourceConfig(kind="interests", n=50, params={"feature": self.feature}),
        ]
        return self.model_copy(update={"sources": [*self.sources, *extra]})


def _fit_to_size(c: PipelineConfig, n_items: int) -> PipelineConfig:
    """``c`` with its EASE sources replaced by ALS factors when the catalogue is larger than
    ``dense_max_items`` (one factors source: an EASE source beside an existing one is
    dropped)."""
    dense = [s for s in c.sources if s.kind == "model" and s.params.get("model") == "ease"]
    if n_items <= c.dense_max_items or not dense:
        return c
    has_factors = any(s.kind == "factors" for s in c.sources)
    sources = []
    for s in c.sources:
        if s not in dense:
            sources.append(s)
        elif not has_factors:
            sources.append(SourceConfig(kind="factors", name="factors", n=s.n))
            has_factors = True
    log.warning(
        "%s items > dense_max_items %s: EASE replaced by the ALS factors source",
        f"{n_items:,}", f"{c.dense_max_items:,}",
    )  # fmt: skip
    return c.model_copy(update={"sources": sources})


@register_model
class Pipeline(Recommender):
    """Several candidate sources, merged and ranked by LambdaMART."""

    name = "pipeline"
    Config = PipelineConfig
    config: PipelineConfig
    uses_sequences = True  # sources read the history in time order
    uses_times = True  # time-aware features look only at what happened before the request

    def _fit(self, dataset: Dataset, valid: Dataset | None) -> None:
        c = self.config
        if not c.sources:
            raise ConfigError("a pipeline needs at least one candidate source")
        if dataset.n_events == 0 and not any(s.kind == "catalogue" for s in c.sources):
            # a catalogue without behaviour: its own order (editorial picks, new items, dealt
            # across categories) answers anyone until a training with events replaces it
            c = self.config = c.model_copy(
                update={"sources": [*c.sources, SourceConfig(kind="catalogue", n=100)]}
            )
        c = self.config = _fit_to_size(c, dataset.n_items)
        self.titles = dataset.item_field("title")
        self.item_tag_lists = [
            [*t, *g] for t, g in zip(dataset.item_tags, dataset.item_categories, strict=True)
        ]
        self.item_people_names = [
            sorted({p["name"] for p in ps if p.get("name")}) for ps in dataset.item_people
        ]
        self.facts = ItemFacts().fit(dataset)
        tv = dataset.item_features.get(c.text_feature)
        if tv is not None:
            from avrec.features.base import l2_normalise

            tv = l2_normalise(np.asarray(tv, np.float32))
        self.text_vectors = tv  # mood playlists match text queries against these
        self.search = self._fit_search(dataset) if c.search else None
        from avrec.language.graph import KnowledgeGraph

        self.graph = KnowledgeGraph().fit(dataset)
        self.ranker: Ranker | None = None
        self.ranker_recall: float | None = None
        self.ranker_min_history = 0
        self.ranker_shortest_history = 0
        tail = _tail_mask(dataset, c.ranker_holdout) if c.ranker_holdout else None
        if tail is not None and tail.any():
            # the ranker's examples: sources fitted without each user's last events, asked
            # to find them (and the validation event); then the sources are refitted on all
            head = dataset.select(~tail, name=f"{dataset.name}:head")
            self.sources = self._fit_sources(head)
            self.features = FeatureBuilder(c.feature).fit(head)
            self._share_timeline()
            self._fit_ranker(head, _targets(dataset, tail, valid))
            keep = {s.name: s for s, _ in self.sources if not s.uses_events}
            self.sources = []  # free the head's sources before fitting the final ones
            del head
            self.sources = self._fit_sources(dataset, keep)
            self.features = FeatureBuilder(c.feature).fit(dataset)
            self._share_timeline()
            return
        elif valid is not None and valid.n_events:
            self.sources = self._fit_sources(dataset)
            self.features = FeatureBuilder(c.feature).fit(dataset)
            self._share_timeline()
            self._fit_ranker(dataset, valid.seen.tocsr())
            return
        self.sources = self._fit_sources(dataset)
        self.features = FeatureBuilder(c.feature).fit(dataset)
        self._share_timeline()

    def _fit_search(self, dataset: Dataset) -> Any:
        """The catalogue's search index: the catalogue's fields and the analysis' words,
        with text vectors (analysed, else encoded here for up to ``search_encode_max``
        items, which mood playlists then search too)."""
        from avrec.features.base import l2_normalise
        from avrec.language.search import (
            SearchIndex,
            encode_multilingual,
            encode_segments,
            fill_text_vectors,
            item_documents,
        )

        docs = item_documents(dataset, dataset.item_texts)
        cache = getattr(self, "text_cache", None)  # the workspace's content.db, set by train
        vectors, _ = fill_text_vectors(
            docs, self.text_vectors, self.config.search_encode_max, cache=cache
        )
        if vectors is not None:
            self.text_vectors = l2_normalise(np.asarray(vectors, np.float32))
        segments = None
        if self.config.search_segments_max:
            segments = encode_segments(
                docs,
                self.config.search_segments_max,
                cache=cache,
                fields=self.config.search_segment_fields,
            )
        multilingual = None
        if self.config.search_multilingual_max:
            multilingual = encode_multilingual(
                docs, self.config.search_multilingual_max, cache=cache
            )
        return SearchIndex(**self.config.search_params).fit(docs, vectors, segments, multilingual)

    def _fit_sources(
        self, dataset: Dataset, fitted: dict[str, Source] | None = None
    ) -> list[tuple[Source, int]]:
        """Every configured source fitted on ``dataset``; ``fitted`` sources that do not
        depend on the events are reused, and vector sources over the same vectors share one
        index."""
        out: list[tuple[Source, int]] = []
        for sc in self.config.sources:
            src = create_source(sc.kind, **({"name": sc.name} if sc.name else {}), **sc.params)
            again = (fitted or {}).get(src.name)
            if again is not None and type(again) is type(src):
                out.append((again, sc.n))
                continue
            share = getattr(src, "share_index", None)
            if share is None or not any(share(other) for other, _ in out):
                src.fit(dataset)
            out.append((src, sc.n))
        names = [s.name for s, _ in out]
        if len(set(names)) != len(names):
            raise ConfigError(f"source names must differ: {names}")
        return out

    def _requests(
        self,
        users: np.ndarray,
        sequences: list[np.ndarray],
        exclude: list[np.ndarray],
        times: list[np.ndarray] | None = None,
    ) -> list[Request]:
        ts = times if times is not None else [None] * len(users)
        return [
            Request(int(u), np.asarray(seq, np.int64), times=t, exclude=ex)
            for u, seq, ex, t in zip(users, sequences, exclude, ts, strict=True)
        ]

    def candidates(self, requests: list[Request], at_least: int = 0) -> list[Merged]:
        """Merged candidates of every source for each request (each source proposes its
        configured ``n``, or ``at_least`` when that is more: a deep page needs more)."""
        per = {s.name: s.retrieve(requests, max(n, at_least)) for s, n in self.sources}
        return [merge({name: per[name][i] for name in per}) for i in range(len(requests))]

    def _fit_ranker(self, train: Dataset, targets: sp.csr_matrix) -> None:
        """LambdaMART on requests made from ``train``'s histories, labelled by ``targets``
        (users x items: what each user played next)."""
        ptr, seq = train.sequence_indptr, train.item_index
        users = np.flatnonzero(np.diff(targets.indptr) > 0)
        cap = self.config.ranker_max_requests
        if len(users) > cap:
            users = np.sort(np.random.default_rng(0).choice(users, cap, replace=False))
        tseen = train.seen.tocsr()
        reqs = self._requests(
            users,
            [seq[ptr[u] : ptr[u + 1]] for u in users],
            [tseen[u].indices for u in users],
            [train.ts[ptr[u] : ptr[u + 1]] for u in users],
        )
        feats, labels = [], []
        step = 512
        for lo in range(0, len(reqs), step):
            part = reqs[lo : lo + step]
            for req, merged in zip(part, self.candidates(part), strict=True):
                # candidates in fusion order: LightGBM's NDCG, which picks the number of trees,
                # breaks ties by the order rows come in, as rank() breaks them by fusion
                merged = _reorder(merged, np.argsort(-self._fusion(merged), kind="stable"))
                wanted = targets.indices[targets.indptr[req.user] : targets.indptr[req.user + 1]]
                feats.append(self.features.build(req, merged))
                labels.append(np.isin(merged.items, wanted).astype(np.int32))
        names = self.features.names([s.name for s, _ in self.sources])
        # share of requests with a target among the candidates: the ranker's ceiling
        self.ranker_recall = float(np.mean([y.any() for y in labels])) if labels else 0.0
        # by default the shortest history the ranker learns from: shorter requests (a
        # stranger, a first session) lie outside what it saw, and are ranked by fusing the
        # sources instead
        lengths = [len(r.history) for r, y in zip(reqs, labels, strict=True) if y.any()]
        self.ranker_shortest_history = int(min(lengths)) if lengths else 0
        self.ranker_min_history = (
            self.ranker_shortest_history
            if self.config.ranker_min_history is None
            else self.config.ranker_min_history
        )
        try:
            self.ranker = Ranker(**self.config.ranker).fit(feats, labels, names)
        except NotFittedError:
            self.ranker = None  # no target among any candidates: fall back to RRF

    def uses_ranker(self, req: Request) -> bool:
        """Whether ``req`` is ranked by the learned ranker: there is one, and the request's
        history is at least ``ranker_min_history`` events long (by default the shortest
        history it learned from). Shorter ones (strangers, first sessions) get reciprocal-rank
        fusion of the sources: on validation strangers that rule did at least as well as the
        ranker for every request or a fixed threshold
        (benchmarks/results/choose-defaults-movielens-100k.json)."""
        return self.ranker is not None and len(req.history) >= getattr(
            self, "ranker_min_history", 0
        )

    def rank(self, req: Request, merged: Merged, features: np.ndarray | None = None) -> np.ndarray:
        """A score per merged candidate (higher first); ``features`` if already built."""
        if not len(merged.items):
            return np.zeros(0, np.float32)
        fused = self._fusion(merged)
        if self.uses_ranker(req):
            if features is None:
                features = self.features.build(req, merged)
            return _break_ties(self.ranker.predict(features), fused)
        return fused.astype(np.float32)

    def _fusion(self, merged: Merged) -> np.ndarray:
        """Reciprocal-rank fusion of the sources' ranks, one score per candidate."""
        return np.nansum(1.0 / (self.config.rrf_k + 1.0 + merged.ranks), axis=1)

    def _score_batch(self, batch: UserBatch) -> np.ndarray:
        n_items = len(self.items)
        seqs = batch.sequence_list()
        hist = batch.history.tocsr()
        reqs = self._requests(
            batch.users, seqs, [hist[i].indices for i in range(len(batch.users))], batch.times
        )
        if batch.request_times is not None:
            for req, t in zip(reqs, batch.request_times, strict=True):
                req.time = None if t is None or not np.isfinite(t) else float(t)
        if self.facts.windowed:  # what was available when each request was made
            for req in reqs:
                req.allowed = self.facts.available(
                    self.features.timeline.now if req.time is None else req.time
                )
        out = np.full((len(reqs), n_items), -np.inf, np.float32)
        for i, (req, merged) in enumerate(zip(reqs, self.candidates(reqs), strict=True)):
            if len(merged.items):
                out[i, merged.items] = self.rank(req, merged)
        return out

    # -- the final list ------------------------------------------------------------------------
    def recommend_explained(
        self,
        users: Sequence[str],
        k: int = 10,
        offset: int = 0,
        exclude: Sequence[str] | None = None,
        diversity: float = 0.0,
        rules: RerankRules | None = None,
        lang: str = "en",
        session_items: Sequence[Sequence[str]] | None = None,
        filters: ItemFilter | None = None,
        at: float | None = None,
        timings: dict[str, float] | None = None,
        available_at: float | None = None,
    ) -> list[ItemList]:
        """Top ``k`` items per user after re-ranking, with ``sources`` and ``explanation``
        fields (structured reasons plus a sentence in ``lang``: ``en`` or ``zh``).

        ``filters`` (categories, languages, a duration range) apply inside every source, so
        the list stays ``k`` long while enough items pass; items outside their availability
        window at ``at`` (the request time; default the newest event trained on) never appear.
        ``timings``, when given, accumulates the seconds spent in ``retrieval``, ``ranking``
        (features and the ranker), ``reranking`` and ``explaining``. ``available_at`` reads
        the availability windows at that time instead (the service's clock, which may be
        long after the newest event trained on), the timeline staying at ``at``.

        ``offset`` pages through the same list (page 2 of 10 is ``offset=10``; pages within
        the sources' largest ``n`` never repeat an item, and deeper pages ask the sources for
        more); ``exclude`` removes items a session has already shown, inside the sources, so
        the page is refilled around them. ``session_items`` (per user, in order) are
        events since training (this session's plays): they join the history at once, so a new
        user's second request already follows what they played. Unknown users with no events
        get the fallback sources.
        """
        _, item_vocab = self._check()
        reqs, extra = self._serving_requests(
            users, exclude, session_items, filters, at, available_at=available_at
        )
        t0 = time.perf_counter()
        # pages within the sources' usual depth come from one list (no repeats across them);
        # a deeper page asks every source for that many
        depth = max(n for _, n in self.sources)
        all_merged = self.candidates(reqs, at_least=0 if offset + k <= depth else offset + k)
        spent = {
            "retrieval": time.perf_counter() - t0,
            "ranking": 0.0,
            "reranking": 0.0,
            "explaining": 0.0,
        }
        reranker = self._reranker(diversity, rules)
        out = []
        for req, merged in zip(reqs, all_merged, strict=True):
            t1 = time.perf_counter()
            feats = (
                self.features.build(req, merged)
                if self.uses_ranker(req) and len(merged.items)
                else None
            )
            scores = self.rank(req, merged, feats)
            spent["ranking"] += time.perf_counter() - t1
            out.append(
                self._final_list(
                    req, merged, scores, feats, reranker, k, offset, extra, lang, spent
                )
            )
        if timings is not None:
            for key, value in spent.items():
                timings[key] = timings.get(key, 0.0) + value
        return out

    def rank_given(
        self,
        user: str | None,
        items: np.ndarray,
        relevance: np.ndarray,
        weight: float = 0.3,
        k: int = 10,
        offset: int = 0,
        exclude: Sequence[str] | None = None,
        exclude_seen: bool = True,
        diversity: float = 0.0,
        rules: RerankRules | None = None,
        lang: str = "en",
        session_items: Sequence[str] | None = None,
        filters: ItemFilter | None = None,
        allowed: np.ndarray | None = None,
        at: float | None = None,
        reasons: dict[int, list[Reason]] | None = None,
        timings: dict[str, float] | None = None,
        affinity: np.ndarray | None = None,
    ) -> ItemList:
        """A page of the given candidates (``items``, indices, with their ``relevance`` to a
        request in words) for ``user``, through the same ranking, re-ranking and
        explanations as :meth:`recommend_explained`.

        The relevance is blended with the pipeline's own score of each item for this user
        (the ranker over every source's view of it, or their fused ranks for short
        histories): ``(1 - weight) * relevance + weight * personal``, both as percentiles
        among the candidates. ``weight`` 0, or no history at all (an anonymous ``user``,
        ``None``, without ``session_items``), leaves the relevance alone. ``reasons`` adds
        reasons per item (what the request matched) before the pipeline's own.
        ``affinity`` (per candidate, higher: closer to the person, e.g. to their own past
        searches and comments) joins the personal side, averaged with the pipeline's score
        by percentile; with no history it is the personal side alone.

        Raises:
            ConfigError: ``weight`` outside [0, 1], or ``items`` and ``relevance`` differ
                in length.
        """
        if not 0.0 <= weight <= 1.0:
            raise ConfigError(f"weight must be in [0, 1], got {weight}")
        items = np.asarray(items, np.int64)
        relevance = np.asarray(relevance, np.float64)
        if items.shape != relevance.shape:
            raise ConfigError("items and relevance need the same length")
        spent = {"retrieval": 0.0, "ranking": 0.0, "reranking": 0.0, "explaining": 0.0}
        reqs, extra = self._serving_requests(
            ["\x00anonymous" if user is None else user],
            exclude,
            None if session_items is None else [list(session_items)],
            filters,
            at,
            allowed,
        )
        req = reqs[0]
        drop = np.union1d(req.exclude if exclude_seen else np.zeros(0, np.int64), extra)
        keep = ~np.isin(items, drop)
        if req.allowed is not None:
            keep &= req.allowed[np.clip(items, 0, len(req.allowed) - 1)]
        items, relevance = items[keep], relevance[keep]
        if affinity is not None:
            affinity = np.asarray(affinity, np.float64)
            if affinity.shape != keep.shape:
                raise ConfigError("affinity needs one value per item")
            affinity = affinity[keep]
        t0 = time.perf_counter()
        personal = weight > 0 and len(req.history) > 0
        merged_all = self.candidates([req])[0] if personal else merge({})
        merged = merged_all.take(items, [s.name for s, _ in self.sources])
        spent["retrieval"] += time.perf_counter() - t0
        t1 = time.perf_counter()
        feats = None
        score = _percentile(relevance)
        mine = []
        if personal and len(items):
            feats = self.features.build(req, merged) if self.uses_ranker(req) else None
            mine.append(_percentile(self.rank(req, merged, feats)))
        if weight > 0 and affinity is not None and len(items):
            mine.append(_percentile(affinity))
        if mine:
            score = (1.0 - weight) * score + weight * np.mean(mine, axis=0)
        spent["ranking"] += time.perf_counter() - t1
        out = self._final_list(
            req,
            merged,
            score.astype(np.float32),
            feats,
            self._reranker(diversity, rules),
            k,
            offset,
            extra,
            lang,
            spent,
            reasons,
        )
        if timings is not None:
            for key, value in spent.items():
                timings[key] = timings.get(key, 0.0) + value
        return out

    def _serving_requests(
        self,
        users: Sequence[str],
        exclude: Sequence[str] | None,
        session_items: Sequence[Sequence[str]] | None,
        filters: ItemFilter | None,
        at: float | None,
        allowed: np.ndarray | None = None,
        available_at: float | None = None,
    ) -> tuple[list[Request], np.ndarray]:
        """Requests for ``users`` now (or at ``at``): history plus this session's plays, seen
        items and ``exclude`` left out, the filter's (and ``allowed``'s) mask, availability
        read at ``available_at`` (default: the request's time); and the excluded item
        indices."""
        _, item_vocab = self._check()
        batch = self.user_batch(list(users))
        hist = batch.history.tocsr()
        extra = item_vocab.index(list(exclude or []), missing="ignore")
        extra = extra[extra >= 0]
        seqs = batch.sequence_list()
        seen = [hist[i].indices for i in range(len(users))]
        if session_items is not None:
            if len(session_items) != len(users):
                raise ConfigError("session_items needs one list per user")
            for i, played in enumerate(session_items):
                idx = item_vocab.index(list(played), missing="ignore")
                idx = idx[idx >= 0]
                seqs[i] = np.concatenate([np.asarray(seqs[i], np.int64), idx])
                seen[i] = np.union1d(seen[i], idx)
        # what the caller excludes is excluded inside the sources, so they refill around it
        reqs = self._requests(batch.users, seqs, [np.union1d(s, extra) for s in seen])
        when = self.features.timeline.now if at is None else at
        mask = self.facts.mask(filters, when if available_at is None else available_at)
        if allowed is not None:
            mask = allowed if mask is None else (mask & allowed)
        for req in reqs:
            req.time, req.allowed = at, mask
        return reqs, extra

    def _reranker(self, diversity: float, rules: RerankRules | None) -> Reranker:
        vectors = self.features.vectors
        return Reranker(
            diversity, vectors if diversity > 0 else None, self.item_people_names, rules
        )

    def _final_list(
        self,
        req: Request,
        merged: Merged,
        scores: np.ndarray,
        feats: np.ndarray | None,
        reranker: Reranker,
        k: int,
        offset: int,
        extra: np.ndarray,
        lang: str,
        spent: dict[str, float],
        more: dict[int, list[Reason]] | None = None,
    ) -> ItemList:
        """Re-rank ``merged``'s candidates by ``scores`` and explain the page (``more``:
        reasons to add per item, such as what a query matched)."""
        assert self.items is not None
        t2 = time.perf_counter()
        items, rel = reranker.rerank(merged.items, scores, k, offset, extra)
        t3 = time.perf_counter()
        spent["reranking"] = spent.get("reranking", 0.0) + t3 - t2
        rows = {int(i): r for r, i in enumerate(merged.items)}
        contrib = None
        if feats is not None and len(items):
            contrib = self.ranker.contributions(feats[[rows[int(i)] for i in items]])
        counts = tag_counts(
            [self.item_tag_lists[h] for h in req.history if 0 <= h < len(self.titles)]
        )
        kinds = {
            s.name: (s.kind, getattr(getattr(s, "model", None), "name", None))
            for s, _ in self.sources
        }
        srcs, exps = [], []
        for j, item in enumerate(items):
            row = rows[int(item)]
            names = merged.provenance(row)
            srcs.append(names)
            exp = self._explain(req, merged, row, int(item), names, kinds, contrib, j, counts)
            if more and int(item) in more:
                exp.reasons[:0] = more[int(item)]
            exps.append(exp.to_dict(lang))
        spent["explaining"] = spent.get("explaining", 0.0) + time.perf_counter() - t3
        return ItemList(self.items.lookup(items), rel, {"sources": srcs, "explanation": exps})

    def playlist(
        self,
        seed: str | None = None,
        user: str | None = None,
        n: int = 20,
        flow: float = 0.3,
        filters: ItemFilter | None = None,
        at: float | None = None,
        max_per_group: int = 0,
        mood: str | None = None,
        mood_weight: float = 0.4,
    ) -> ItemList:
        """An ordered list of ``n`` items that flows from one to the next (autoplay).

        It starts at ``seed`` (kept first), else at the item that best matches ``mood`` (a
        text such as "relaxing piano for studying", matched against the items' analysed text
        with the multilingual e5 encoder), else at a ``user``'s top recommendation. Each next
        item is chosen with the previous ones played: the sources (a next-item model among
        them) and the ranker score candidates as if the list so far were the latest history;
        ``flow`` blends in the similarity to the previous item (content vectors, else the
        first collaborative source's item similarity), and with a mood ``mood_weight`` blends
        in the match to it (the best-matching items join the candidates). Items are never
        repeated, the user's history is left out, ``filters`` and availability at ``at``
        apply to every pick, and ``max_per_group`` caps items per creator. Fields:
        ``sources`` and ``after`` (the item each follows).

        Raises:
            ConfigError: no seed, user or mood; ``n`` < 1; ``flow`` or ``mood_weight`` outside
                [0, 1] or summing above 1; a mood without analysed text vectors.
            UnknownEntityError: ``seed`` is not in the catalogue.
        """
        _, item_vocab = self._check()
        if seed is None and user is None and not mood:
            raise ConfigError("a playlist needs a seed item, a user or a mood")
        w_mood = mood_weight if mood else 0.0
        if n < 1 or not 0.0 <= flow <= 1.0 or not 0.0 <= w_mood <= 1.0 or flow + w_mood > 1.0:
            raise ConfigError(
                f"need n >= 1, flow and mood_weight in [0, 1] summing to at most 1; got n={n}, "
                f"flow={flow}, mood_weight={mood_weight}"
            )
        mood_sim = self._mood_similarity(mood) if mood else None
        batch = self.user_batch([user] if user is not None else ["\0no user"])
        base = np.asarray(batch.sequence_list()[0], np.int64)
        seen = set(batch.history.tocsr()[0].indices.tolist())
        allowed = self.facts.mask(filters, self.features.timeline.now if at is None else at)
        picked: list[int] = []
        srcs: list[list[str]] = []
        values: list[float] = []
        if seed is not None:
            picked.append(int(item_vocab.index([seed])[0]))
            srcs.append(["seed"])
            values.append(1.0)
        counts: dict[str, int] = {}
        for p in picked:
            for g in self.item_people_names[p]:
                counts[g] = counts.get(g, 0) + 1
        while len(picked) < n:
            banned = seen | set(picked)
            hist = np.concatenate([base, np.asarray(picked, np.int64)])
            req = Request(
                int(batch.users[0]),
                hist,
                exclude=np.asarray(sorted(banned), np.int64),
                time=at,
                allowed=allowed,
            )
            merged = self.candidates([req])[0]
            items = merged.items
            rel = _unit(self.rank(req, merged).astype(np.float64)) if len(items) else items
            provenance = [merged.provenance(j) for j in range(len(items))]
            if mood_sim is not None:  # the items that best match the mood join the pool
                ok = np.isfinite(mood_sim)
                if allowed is not None:
                    ok &= allowed
                ok[list(banned)] = False
                ok[items] = False
                extra = np.flatnonzero(ok)
                if len(extra) > 50:
                    extra = extra[np.argpartition(-mood_sim[extra], 49)[:50]]
                extra = extra[np.lexsort((extra, -mood_sim[extra]))]
                items = np.concatenate([items, extra])
                rel = np.concatenate([rel, np.zeros(len(extra))])
                provenance += [["mood"]] * len(extra)
            if not len(items):
                break
            value = (1.0 - flow - w_mood) * rel
            if flow > 0:
                sim = self._flow_similarity(picked[-1], items) if picked else None
                if sim is not None:
                    value = value + flow * _unit(sim)
                else:
                    value = value + flow * rel  # nothing to flow from yet: relevance
            if mood_sim is not None:
                if not picked and user is None:  # nobody's taste to weigh: the mood opens
                    value = _unit(mood_sim[items])
                else:
                    value = value + w_mood * _unit(mood_sim[items])
            order = np.lexsort((items, -value))
            choice = None
            for j in order:
                keys = self.item_people_names[int(items[j])]
                if max_per_group and any(counts.get(g, 0) >= max_per_group for g in keys):
                    continue
                choice = int(j)
                break
            if choice is None:
                break
            item = int(items[choice])
            for g in self.item_people_names[item]:
                counts[g] = counts.get(g, 0) + 1
            picked.append(item)
            srcs.append(provenance[choice])
            values.append(float(value[choice]))
        ids = item_vocab.lookup(np.asarray(picked, np.int64))
        after = [None, *ids[:-1]]
        return ItemList(ids, np.asarray(values, np.float32), {"sources": srcs, "after": after})

    def _mood_similarity(self, mood: str) -> np.ndarray:
        """Cosine of every item's analysed text to the ``mood`` query (``-inf``: no text)."""
        tv = getattr(self, "text_vectors", None)
        if tv is None:
            raise ConfigError(
                "a mood playlist needs the items' text vectors: run avrec analyze, then train"
            )
        from avrec.features.text import E5TextEncoder

        q = E5TextEncoder().encode_queries([mood])[0]
        sims = tv @ q
        sims[np.linalg.norm(tv, axis=1) == 0] = -np.inf
        return sims

    def _flow_similarity(self, item: int, items: np.ndarray) -> np.ndarray | None:
        """Similarity of ``item`` to each of ``items`` for playlist flow."""
        v = self.features.vectors
        if v is not None:
            return v[items] @ v[item]
        for src, _ in self.sources:
            model = getattr(src, "model", None)
            if model is not None and model.name in ("itemknn", "ease", "als", "bpr", "mf"):
                row = model._item_similarity(np.asarray([item]))[0]
                return np.asarray(row, np.float64)[items]
        return None

    def _explain(self, req, merged, row, item, names, kinds, contrib, j, counts) -> Explanation:  # noqa: ANN001
        assert self.items is not None
        exp = Explanation(self.items.lookup([item])[0])
        labels = list(dict.fromkeys(source_label(*kinds[n]) for n in names))
        exp.reasons.append(Reason("source", labels))
        history = set(req.history.tolist())
        order = sorted(
            range(len(merged.sources)),
            key=lambda c: {"people": 0, "neighbours": 1, "interests": 2}.get(
                kinds[merged.sources[c]][0], 3
            ),
        )
        anchor = next(
            (
                int(merged.anchors[row, c])
                for c in order
                if merged.anchors[row, c] >= 0 and int(merged.anchors[row, c]) in history
            ),
            None,
        )
        if anchor is not None:
            exp.reasons.append(
                Reason(
                    "anchor",
                    {"id": self.items.lookup([anchor])[0], "title": self.titles[anchor]},
                )
            )
            anchor_people = set(self.item_people_names[anchor])
            anchor_tags = {x.lower() for x in self.item_tag_lists[anchor]}
            shared = [f"p:{p}" for p in self.item_people_names[item] if p in anchor_people]
            shared += [f"t:{t}" for t in self.item_tag_lists[item] if t.lower() in anchor_tags]
            if shared:
                exp.reasons.append(Reason("shared", shared))
        else:
            self._graph_reason(exp, req, item)
        tags = top_tags(counts, self.item_tag_lists[item])
        if tags:
            exp.reasons.append(Reason("tags", tags))
        if contrib is not None and self.ranker is not None:
            vals = contrib[j, :-1]
            top = [
                (self.ranker.feature_names[f], round(float(vals[f]), 4))
                for f in np.argsort(-vals)[:3]
                if vals[f] > 0
            ]
            if top:
                exp.reasons.append(Reason("features", top))
        return exp

    def _graph_reason(self, exp: Explanation, req: Request, item: int) -> None:
        """No source anchored the item: the knowledge graph's strongest path from the recent
        history through a person (or a series) gives one ("with Tom Hanks, like X")."""
        g = getattr(self, "graph", None)
        if g is None or not len(req.history):
            return
        if "graph_paths" not in req.memo:  # the history's edges, gathered once per page
            req.memo["graph_paths"] = g.paths_from(req.history[::-1][:50])
        for path in req.memo["graph_paths"](item, 5):
            kind = str(g.types[path.entity])
            if kind not in ("person", "series"):
                continue
            exp.reasons.append(
                Reason(
                    "anchor",
                    {"id": self.items.lookup([path.source])[0], "title": self.titles[path.source]},
                )
            )
            prefix = "p" if kind == "person" else "t"
            exp.reasons.append(Reason("shared", [f"{prefix}:{g.names[path.entity]}"]))
            return

    # -- bundles -------------------------------------------------------------------------------
    def forget_users(self, users: Sequence[str]) -> list[str]:
        """Remove ``users``' histories and per-user vectors from the pipeline and from every
        source's model (see :meth:`Recommender.forget_users`); returns what was cleared, by
        source. Item-side parameters learned from them stay until the next training."""
        cleared = super().forget_users(users)
        for source, _ in self.sources:
            model = getattr(source, "model", None)
            if model is not None and getattr(model, "is_fitted", False):
                cleared += [f"{source.name}: {c}" for c in model.forget_users(users)]
        return cleared

    def _state(self) -> dict[str, np.ndarray]:
        out = {f"f_{k}": v for k, v in self.features.state().items()}
        out["pipeline_format"] = np.asarray(BUNDLE_FORMAT)
        out.update({f"fx_{k}": v for k, v in self.facts.state().items()})
        if self.text_vectors is not None:
            out["text_vectors"] = self.text_vectors
        out["titles"] = np.asarray([t or "" for t in self.titles], dtype=str)
        out["tags"], out["tags_at"] = JsonRows.encode(self.item_tag_lists)
        out["people"], out["people_at"] = JsonRows.encode(self.item_people_names)
        if self.ranker is not None:
            out["ranker"] = np.frombuffer(self.ranker.to_string().encode(), dtype=np.uint8)
            out["ranker_names"] = np.asarray(self.ranker.feature_names, dtype=str)
            out["ranker_groups"] = np.asarray(self.ranker.groups)
            out["ranker_min_history"] = np.asarray(self.ranker_min_history)
        return out

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        if int(arrays.get("pipeline_format", 0)) != BUNDLE_FORMAT:
            raise DataError(
                "this pipeline bundle was written by another version of avrec (bundle format "
                f"{int(arrays.get('pipeline_format', 0))}, this one reads {BUNDLE_FORMAT}); "
                "train it again with avrec train"
            )
        feats = {k[2:]: v for k, v in arrays.items() if k.startswith("f_")}
        self.facts = ItemFacts().set_state(
            {k[3:]: v for k, v in arrays.items() if k.startswith("fx_")}
        )
        self.text_vectors = arrays.get("text_vectors")
        self.features = FeatureBuilder(self.config.feature).set_state(feats)
        self.titles = [t or None for t in arrays["titles"].tolist()]
        self.item_tag_lists = JsonRows(arrays["tags"], arrays["tags_at"])
        self.item_people_names = JsonRows(arrays["people"], arrays["people_at"])
        self.ranker = None
        if "ranker" in arrays:
            self.ranker = Ranker.from_string(
                arrays["ranker"].tobytes().decode(),
                arrays["ranker_names"].tolist(),
                int(arrays["ranker_groups"]),
            )
            self.ranker_min_history = int(arrays["ranker_min_history"])

    def save(self, path: str | Path) -> Path:
        """Write the bundle (manifest, weights, every source, the ranker) into a new folder.

        The folder is written beside its final name and renamed into place, so a reader never
        sees half a bundle; an existing bundle is never overwritten (bundles are versions).

        Raises:
            ConfigError: ``path`` exists already.
        """
        import shutil
        import tempfile

        path = Path(path)
        if path.exists():
            raise ConfigError(f"{path} exists: a bundle is written once (use a new version)")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
        try:
            super().save(tmp)
            for src, _ in self.sources:
                src.save(tmp / "sources" / src.name)
            if getattr(self, "search", None) is not None:
                self.search.save(tmp / "search")
            if getattr(self, "graph", None) is not None:
                self.graph.save(tmp / "graph")
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path) -> Pipeline:
        """Load a bundle written by :meth:`save`."""
        path = Path(path)
        p = super().load(path)
        p.sources = []
        for sc in p.config.sources:
            src = create_source(sc.kind, **({"name": sc.name} if sc.name else {}), **sc.params)
            src = src.load(path / "sources" / src.name)
            share = getattr(src, "share_index", None)
            if share is not None:  # one index in memory for sources over the same vectors
                shared = any(share(other) for other, _ in p.sources)
                if not shared and getattr(src, "shares_with", None) and src.index is None:
                    raise DataError(
                        f"bundle {path}: source {src.name!r} shares the index of "
                        f"{src.shares_with!r}, which it cannot use (train it again)"
                    )
            p.sources.append((src, sc.n))
        p._share_timeline()
        p.search = None
        if (path / "search").is_dir():
            from avrec.language.search import SearchIndex

            p.search = SearchIndex(**p.config.search_params).load(path / "search")
        p.graph = None
        if (path / "graph").is_dir():
            from avrec.language.graph import KnowledgeGraph

            p.graph = KnowledgeGraph().load(path / "graph")
        return p

    def _share_timeline(self) -> None:
        """Sources that count plays in time (trending, fresh) read the ranker's timeline
        (the same events) instead of a copy each: one in memory and one in the bundle."""
        for src, _ in self.sources:
            use = getattr(src, "use_timeline", None)
            if use is not None:
                use(self.features.timeline)


def _tail_mask(dataset: Dataset, n: int, keep: int = 3) -> np.ndarray:
    """True for each user's last ``n`` events, for users with more than ``n + keep`` of them
    (shorter histories are left whole, so the sources still learn from them)."""
    ptr = dataset.sequence_indptr
    lengths = np.diff(ptr)
    pos = np.arange(dataset.n_events) - np.repeat(ptr[:-1], lengths)  # position in the user
    from_end = np.repeat(lengths, lengths) - pos  # 1 for the last event
    return (from_end <= n) & (np.repeat(lengths, lengths) > n + keep)


def _targets(dataset: Dataset, tail: np.ndarray, valid: Dataset | None) -> sp.csr_matrix:
    """users x items, 1 for each user's held-out tail items and validation items."""
    m = sp.csr_matrix(
        (
            np.ones(int(tail.sum()), np.float32),
            (dataset.user_index[tail], dataset.item_index[tail]),
        ),
        shape=(dataset.n_users, dataset.n_items),
    )
    if valid is not None and valid.n_events:
        m = m + valid.seen.tocsr()
    m = m.tocsr()
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def _reorder(merged: Merged, order: np.ndarray) -> Merged:
    """The rows of ``merged`` in ``order``."""
    return Merged(
        merged.items[order],
        merged.scores[order],
        merged.ranks[order],
        merged.anchors[order],
        merged.sources,
    )


def _break_ties(scores: np.ndarray, by: np.ndarray) -> np.ndarray:
    """``scores`` (float32) with equal values ordered by ``by`` (higher first), the order of
    unequal ones kept. A ranker that early stopping cut to a few trees gives a few distinct
    scores for hundreds of candidates; left tied, their order would be arbitrary (and
    evaluation counts a tie against the target). Each tied score moves up by less than half
    the smallest gap between distinct scores (a tie stays one where that gap is below
    float32's resolution)."""
    s = scores.astype(np.float64)
    distinct = np.unique(s)
    if len(distinct) == len(s):
        return scores
    gap = float(np.diff(distinct).min()) if len(distinct) > 1 else 1.0
    b = np.asarray(by, np.float64)
    span = float(b.max() - b.min())
    nudge = (b - b.min()) / span if span > 0 else np.zeros(len(b))
    return (s + 0.45 * gap * nudge).astype(np.float32)


def _percentile(x: np.ndarray) -> np.ndarray:
    """Each value's rank among ``x`` scaled to [0, 1] (1: the highest; ties share the mean)."""
    from scipy.stats import rankdata

    x = np.where(np.isfinite(x), x, -np.inf)
    if len(x) < 2:
        return np.ones(len(x))
    return (rankdata(x) - 1.0) / (len(x) - 1.0)


def _unit(x: np.ndarray) -> np.ndarray:
    """Rescaled to [0, 1] (non-finite values to 0; a constant vector to ones)."""
    x = np.where(np.isfinite(x), x, np.nan)
    if np.isnan(x).all():
        return np.zeros(len(x))
    lo, hi = np.nanmin(x), np.nanmax(x)
    out = (x - lo) / (hi - lo) if hi > lo else np.ones(len(x))
    return np.nan_to_num(out, nan=0.0)
