"""Content-based recommenders: items people have never played, recommended by what they are.

The item vectors come from ``avrec analyze`` (``Dataset.item_features``, usually ``"fused"``), so
a new item is recommendable the moment it is analysed.

- ``profile`` mode: a user's profile is the weight-averaged vector of the items in their history;
  items are scored by cosine similarity to it.
- ``projection`` mode (the learned fusion): an ALS model learns item factors from behaviour, a
  ridge regression (:class:`~avrec.content.fusion.ContentProjection`) learns to predict those
  factors from content, and items with too little behaviour are represented by their predicted
  factors. Users are scored in the ALS space, so content speaks the language of behaviour.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from avrec.content.fusion import ContentProjection
from avrec.data.dataset import Dataset
from avrec.errors import ConfigError
from avrec.features.base import l2_normalise
from avrec.models.base import ModelConfig, Recommender, UserBatch, cosine_rows, register_model

__all__ = ["ContentModel"]


class ContentConfig(ModelConfig):
    feature: str = Field("fused", description="which Dataset.item_features to use")
    mode: Literal["profile", "projection"] = "profile"
    # projection mode
    factors: int = Field(64, gt=0)
    regularization: float = Field(0.05, ge=0)
    alpha: float = Field(2.0, gt=0)
    iterations: int = Field(15, gt=0)
    ridge: float = Field(1.0, ge=0, description="ridge penalty of the content -> factors map")
    min_interactions: int = Field(
        5, ge=1, description="items with fewer training users use predicted factors"
    )
    seed: int = 0


@register_model
class ContentModel(Recommender):
    """Recommends by content vectors (profile) or content projected to ALS factors."""

    name = "content"
    Config = ContentConfig
    config: ContentConfig
    user_arrays = ("als.user_factors",)

    def _fit(self, dataset: Dataset, valid: Dataset | None) -> None:
        c = self.config
        if c.feature not in dataset.item_features:
            raise ConfigError(
                f"the dataset has no {c.feature!r} item features (have: "
                f"{sorted(dataset.item_features) or 'none'}); run avrec analyze first"
            )
        x = l2_normalise(np.asarray(dataset.item_features[c.feature], np.float32))
        self.item_vectors = x
        if c.mode == "profile":
            return
        from avrec.models.factors import ALS

        als = ALS(
            factors=c.factors,
            regularization=c.regularization,
            alpha=c.alpha,
            iterations=c.iterations,
            seed=c.seed,
        ).fit(dataset)
        counts = np.diff(dataset.binary().tocsc().indptr)
        warm = (counts >= c.min_interactions) & (np.linalg.norm(x, axis=1) > 0)
        if warm.sum() < 2:
            raise ConfigError("projection mode needs items with behaviour to learn from")
        proj = ContentProjection(c.ridge).fit(x[warm], als.item_factors[warm])
        predicted = proj.transform(x)
        self.item_factors = np.where(warm[:, None], als.item_factors, predicted).astype(np.float32)
        self.als = als
        self.als.item_factors = self.item_factors

    def _score_batch(self, batch: UserBatch) -> np.ndarray:
        if self.config.mode == "projection":
            return self.als._score_batch(batch)
        h = batch.history.astype(np.float32)
        profile = np.asarray(h @ self.item_vectors)
        return (l2_normalise(profile) @ self.item_vectors.T).astype(np.float32)

    def _item_similarity(self, items: np.ndarray) -> np.ndarray:
        return cosine_rows(self.item_vectors, items)

    def _state(self) -> dict[str, np.ndarray]:
        out = {"item_vectors": self.item_vectors}
        if self.config.mode == "projection":
            out["item_factors"] = self.item_factors
            out["user_factors"] = self.als.user_factors
        return out

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.item_vectors = arrays["item_vectors"]
        if self.config.mode == "projection":
            from avrec.models.factors import ALS

            c = self.config
            als = ALS(
                factors=c.factors, regularization=c.regularization, alpha=c.alpha, seed=c.seed
            )
            als.users, als.items = self.users, self.items
            als.user_factors = arrays["user_factors"]
            als.item_factors = arrays["item_factors"]
            als._outer = None
            self.item_factors = arrays["item_factors"]
            self.als = als
