"""Federated matrix factorisation (issue 20): ALS's objective, trained by clients that keep
their own events and factors; the server sees only the sums of their updates.

The rounds are :mod:`avrec.privacy.federated`'s; ``engine="flower"`` runs them as a Flower
simulation on Ray (:mod:`avrec.privacy.flower`), one virtual client per person. What is
learned centrally is the item factors alone: scoring solves a person's factors from their
own history, the step their device takes (:func:`avrec.models.factors.als_fold_in`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from pydantic import Field

from avrec.data.dataset import Dataset
from avrec.errors import ConfigError
from avrec.models.base import ModelConfig, register_model
from avrec.models.factors import ALS

__all__ = ["FederatedMF"]

#: called after each round with the round's number, the item factors and its log entry
OnRound = Callable[[int, np.ndarray, dict[str, Any]], None]


class FederatedMFConfig(ModelConfig):
    factors: int = Field(64, gt=0)
    regularization: float = Field(0.05, ge=0)
    alpha: float = Field(2.0, gt=0, description="confidence of observed pairs = alpha * weight")
    binary: bool = Field(False, description="ignore event weights (every pair weight 1)")
    rounds: int = Field(20, gt=0, description="server rounds")
    fraction: float = Field(
        1.0, gt=0, le=1, description="clients taking part in a round (a Poisson sample)"
    )
    learning_rate: float = Field(1.0, gt=0, le=2, description="the server step's damping")
    engine: Literal["flower", "inprocess"] = Field(
        "flower",
        description="flower: a Flower simulation on Ray, one virtual client per person; "
        "inprocess: the same client code called in a loop",
    )
    dp_epsilon: float | None = Field(
        None,
        gt=0,
        description="user-level (epsilon, dp_delta)-DP for the item factors by DP-FedAvg: "
        "each update clipped to dp_clip, Gaussian noise on the sum calibrated for the rounds "
        "and the sampling rate; None: no DP",
    )
    dp_clip: float = Field(
        1.0, gt=0, description="each update's L2 bound, under DP-FedAvg or secure aggregation"
    )
    secure_aggregation: bool = Field(
        False,
        description="engine flower: the server learns only each round's sum, by Flower's "
        "SecAgg+ (updates clipped to dp_clip and quantised); inprocess: the same clipping",
    )
    dp_delta: float = Field(1e-6, gt=0, lt=1, description="the delta the epsilon is stated at")
    seed: int = 0


@register_model
class FederatedMF(ALS):
    """Implicit-feedback MF trained federatedly: clients solve their factors, the server
    aggregates item updates and takes a damped Newton step (see the module)."""

    name = "fedmf"
    Config = FederatedMFConfig  # type: ignore[assignment]
    config: FederatedMFConfig  # type: ignore[assignment]
    user_arrays = ()  # a person's factors never leave their device

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.rounds_log: list[dict[str, Any]] = []
        self.on_round: OnRound | None = None

    def _fit(self, dataset: Dataset, valid: Dataset | None) -> None:
        from avrec.privacy import federated

        c = self.config
        x = (dataset.binary() if c.binary else dataset.interactions).astype(np.float32).tocsr()
        x.eliminate_zeros()
        if x.nnz == 0:
            raise ConfigError("federated training needs events: every client is empty")
        if c.engine == "flower":
            from avrec.privacy.flower import run_flower

            y, log = run_flower(x, c, on_round=self.on_round)
        else:
            y, log = federated.train_inprocess(x, c, on_round=self.on_round)
        self.item_factors = y
        self.user_factors = np.zeros((0, c.factors), np.float32)
        self.rounds_log = log
        self._outer = None
        if c.dp_epsilon is not None:
            self.privacy = federated.privacy_record(c)

    def _state(self) -> dict[str, np.ndarray]:
        return {"item_factors": self.item_factors}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.item_factors = arrays["item_factors"]
        self.user_factors = np.zeros((0, self.item_factors.shape[1]), np.float32)
        self._outer = None
