"""The pipeline: candidate sources -> merge with provenance -> learned ranker.

:class:`Pipeline` is a :class:`~avrec.models.base.Recommender`, so the evaluation measures it
exactly like a single model (full ranking; items no source proposed score ``-inf`` and count as
misses). ``fit(train, valid)`` fits the sources on the training split and the LambdaMART ranker
on the validation split's targets; without a validation split the candidates are ordered by
reciprocal-rank fusion of the sources (no training needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from avrec.data.dataset import Dataset
from avrec.errors import ConfigError
from avrec.models.base import ModelConfig, Recommender, UserBatch
from avrec.pipeline.ranker import FeatureBuilder, Merged, Ranker, merge
from avrec.pipeline.sources import Request, Source, create_source

__all__ = ["Pipeline", "PipelineConfig", "SourceConfig"]


class SourceConfig(BaseModel):
    """One candidate source: its kind, how many candidates it gives, its parameters."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    name: str | None = None
    n: int = Field(100, gt=0)
    params: dict[str, Any] = Field(default_factory=dict)


class PipelineConfig(ModelConfig):
    sources: list[SourceConfig] = Field(
        default_factory=lambda: [
            SourceConfig(kind="model", name="ease", params={"model": "ease", "l2": 300.0}),
            SourceConfig(kind="model", name="itemknn", params={"model": "itemknn"}),
            SourceConfig(kind="popular", n=50),
        ]
    )
    ranker: dict[str, Any] = Field(default_factory=dict, description="LightGBM parameters")
    feature: str = Field("fused", description="content vectors for similarity features")
    rrf_k: float = Field(60.0, gt=0, description="reciprocal-rank fusion constant (no ranker)")


class Pipeline(Recommender):
    """Several candidate sources, merged and ranked by LambdaMART."""

    name = "pipeline"
    Config = PipelineConfig
    config: PipelineConfig
    uses_sequences = True  # sources read the history in time order

    def _fit(self, dataset: Dataset, valid: Dataset | None) -> None:
        c = self.config
        if not c.sources:
            raise ConfigError("a pipeline needs at least one candidate source")
        self.sources: list[tuple[Source, int]] = []
        for sc in c.sources:
            params = dict(sc.params)
            src = create_source(sc.kind, **({"name": sc.name} if sc.name else {}), **params)
            self.sources.append((src.fit(dataset), sc.n))
        names = [s.name for s, _ in self.sources]
        if len(set(names)) != len(names):
            raise ConfigError(f"source names must differ: {names}")
        self.features = FeatureBuilder(c.feature).fit(dataset)
        self.ranker: Ranker | None = None
        self.train_history = dataset
        if valid is not None and valid.n_events:
            self._fit_ranker(dataset, valid)

    def _requests(self, users: np.ndarray, sequences: list[np.ndarray], exclude) -> list[Request]:  # noqa: ANN001
        return [
            Request(int(u), np.asarray(seq, np.int64), exclude=ex)
            for u, seq, ex in zip(users, sequences, exclude, strict=True)
        ]

    def candidates(self, requests: list[Request]) -> list[Merged]:
        """Merged candidates of every source for each request."""
        per = {s.name: s.retrieve(requests, n) for s, n in self.sources}
        return [merge({name: per[name][i] for name in per}) for i in range(len(requests))]

    def _fit_ranker(self, train: Dataset, valid: Dataset) -> None:
        ptr, seq = train.sequence_indptr, train.item_index
        vseen = valid.seen.tocsr()
        users = np.flatnonzero(np.diff(vseen.indptr) > 0)
        tseen = train.seen.tocsr()
        reqs = self._requests(
            users,
            [seq[ptr[u] : ptr[u + 1]] for u in users],
            [tseen[u].indices for u in users],
        )
        feats, labels = [], []
        step = 512
        for lo in range(0, len(reqs), step):
            part = reqs[lo : lo + step]
            for req, merged in zip(part, self.candidates(part), strict=True):
                targets = set(vseen[req.user].indices)
                feats.append(self.features.build(req, merged))
                labels.append(np.asarray([int(i) in targets for i in merged.items], np.int32))
        names = self.features.names([s.name for s, _ in self.sources])
        self.ranker = Ranker(**self.config.ranker).fit(feats, labels, names)
        self.ranker_groups = self.ranker.groups
        self.ranker_recall = float(
            np.mean([y.any() for y in labels]) if labels else 0.0
        )  # share of validation users with a target among the candidates

    def rank(self, req: Request, merged: Merged) -> np.ndarray:
        """A score per merged candidate (higher first)."""
        if not len(merged.items):
            return np.zeros(0, np.float32)
        if self.ranker is not None:
            return self.ranker.predict(self.features.build(req, merged))
        rr = 1.0 / (self.config.rrf_k + 1.0 + merged.ranks)
        return np.nansum(rr, axis=1).astype(np.float32)

    def _score_batch(self, batch: UserBatch) -> np.ndarray:
        n_items = len(self.items)
        seqs = batch.sequence_list()
        hist = batch.history.tocsr()
        reqs = self._requests(batch.users, seqs, [hist[i].indices for i in range(len(batch.users))])
        out = np.full((len(reqs), n_items), -np.inf, np.float32)
        for i, (req, merged) in enumerate(zip(reqs, self.candidates(reqs), strict=True)):
            if len(merged.items):
                out[i, merged.items] = self.rank(req, merged)
        return out

    def save(self, path: str | Path) -> Path:
        raise ConfigError(
            "saving a pipeline is not supported yet (pipeline bundles come with issue 6's "
            "bundle work); save its models individually"
        )
