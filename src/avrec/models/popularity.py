"""Popularity: overall, or time-decayed (trending)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from avrec.data.dataset import Dataset
from avrec.models.base import ModelConfig, Recommender, UserBatch, register_model

__all__ = ["Popularity"]


class PopularityConfig(ModelConfig):
    count: Literal["events", "users", "weight"] = Field(
        "events", description="count every event, distinct users, or summed preference weight"
    )
    half_life_days: float | None = Field(
        None, gt=0, description="time decay (trending); None counts all time equally"
    )


@register_model
class Popularity(Recommender):
    """Scores every item by how much it was consumed in training (the same list for everyone).

    Every interaction counts, repeats included (RecBole's popularity under-counts repeats within
    a batch). With ``half_life_days`` an event's count decays with its age relative to the
    newest event.
    """

    name = "pop"
    Config = PopularityConfig
    config: PopularityConfig

    def _fit(self, dataset: Dataset, valid: Dataset | None) -> None:
        n = dataset.n_items
        if self.config.count == "users":
            counts = np.asarray((dataset.seen > 0).sum(axis=0)).ravel().astype(np.float64)
        else:
            w = (
                np.ones(dataset.n_events)
                if self.config.count == "events"
                else dataset.weight.astype(np.float64)
            )
            if self.config.half_life_days is not None and dataset.n_events:
                age_days = (dataset.ts.max() - dataset.ts) / 86400.0
                w = w * np.power(0.5, age_days / self.config.half_life_days)
            counts = np.bincount(dataset.item_index, weights=w, minlength=n)
        self.counts = counts.astype(np.float32)

    def _score_batch(self, batch: UserBatch) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(batch.users), len(self.counts))).copy()

    def _item_similarity(self, items: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(items), len(self.counts))).copy()

    def _state(self) -> dict[str, np.ndarray]:
        return {"counts": self.counts}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.counts = arrays["counts"]
