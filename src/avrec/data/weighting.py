"""Event weighting: how each event type and value becomes implicit preference.

Gorse users ask for this most: a like should count more than a play, a half-watched video less than
a finished one, a dislike or an early skip against the item. The rules are configuration
(``[weighting]`` in ``avrec.toml``) and apply vectorised to millions of events.

For one event of type ``t`` with value ``v`` and rule ``r = rules[t]``:

- ``value = "ignore"``: ``w = r.weight``
- ``value = "scale"``: ``w = r.weight * v`` (``v`` missing: ``r.weight``)
- ``value = "completion"``: ``w = r.weight * clip(v, 0, 1)``; completion ratios (``v`` missing:
  ``r.weight``)
- ``value = "log1p"``: ``w = r.weight * log1p(max(v, 0))``; watch seconds or play counts
- ``value = "rating"``: ``w = r.weight * (v - r.center) / r.spread``; ratings, so a low rating is
  negative

then, if ``r.negative_below`` is set and ``v < r.negative_below``, ``w = r.negative_weight`` (an
early skip of a play). The weights of one user-item pair are combined by ``aggregate`` (sum, max or
last) and clipped to ``clip``. Pairs above ``positive_threshold`` are positives; pairs below zero
are negatives (kept apart, e.g. to never recommend a disliked item).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from avrec.errors import ConfigError

__all__ = ["EventRule", "EventWeighting", "default_rules"]

ValueMode = Literal["ignore", "scale", "completion", "log1p", "rating"]


class EventRule(BaseModel):
    """How one event type turns into a preference weight."""

    model_config = ConfigDict(extra="forbid")

    weight: float = Field(1.0, description="base weight of the event type")
    value: ValueMode = Field("ignore", description="how the event value modulates the weight")
    center: float = Field(3.0, description="rating mode: the neutral rating")
    spread: float = Field(1.0, gt=0, description="rating mode: rating points per unit of weight")
    negative_below: float | None = Field(
        None, description="value below which the event counts as negative (early skip)"
    )
    negative_weight: float = Field(-1.0, description="weight used below negative_below")


def default_rules() -> dict[str, EventRule]:
    """Default rules for the built-in event types."""
    return {
        "play": EventRule(
            weight=1.0, value="completion", negative_below=0.05, negative_weight=-0.5
        ),
        "view": EventRule(weight=0.5),
        "like": EventRule(weight=3.0),
        "dislike": EventRule(weight=-3.0),
        "comment": EventRule(weight=2.0),
        "share": EventRule(weight=3.0),
        "search": EventRule(weight=0.0),
        "skip": EventRule(weight=-1.0),
        "rate": EventRule(weight=1.0, value="rating", center=3.0, spread=1.0),
        "complete": EventRule(weight=2.0),
    }


class EventWeighting(BaseModel):
    """The weighting configuration (``[weighting]`` in ``avrec.toml``)."""

    model_config = ConfigDict(extra="forbid")

    rules: dict[str, EventRule] = Field(default_factory=default_rules)
    default: EventRule | None = Field(
        EventRule(weight=1.0), description="rule for types with no rule; None makes them an error"
    )
    aggregate: Literal["sum", "max", "last"] = "sum"
    clip: tuple[float, float] = (-10.0, 10.0)
    positive_threshold: float = 0.0

    @model_validator(mode="after")
    def _check(self) -> EventWeighting:
        if self.clip[0] > self.clip[1]:
            raise ValueError(f"clip lower bound {self.clip[0]} is above upper {self.clip[1]}")
        return self

    @classmethod
    def binary(cls) -> EventWeighting:
        """Every event is a positive of weight 1 (the standard research protocol)."""
        return cls(rules={}, default=EventRule(weight=1.0), aggregate="max")

    def rule(self, event_type: str) -> EventRule:
        """The rule for ``event_type``.

        Raises:
            ConfigError: the type has no rule and no default rule is set.
        """
        rule = self.rules.get(event_type, self.default)
        if rule is None:
            raise ConfigError(f"no weighting rule for event type {event_type!r}")
        return rule

    def weights(self, types: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Vectorised per-event weights.

        Args:
            types: event type names (strings), one per event.
            values: event values as float, ``nan`` where missing.

        Returns:
            float32 weights, one per event.
        """
        types = np.asarray(types)
        values = np.asarray(values, dtype=np.float64)
        if types.shape != values.shape:
            raise ValueError(f"types {types.shape} and values {values.shape} differ in shape")
        out = np.zeros(len(types), dtype=np.float64)
        if len(types) == 0:
            return out.astype(np.float32)
        uniq, inverse = np.unique(types, return_inverse=True)
        for code, name in enumerate(uniq):
            mask = inverse == code
            out[mask] = self._apply(self.rule(str(name)), values[mask])
        return out.astype(np.float32)

    @staticmethod
    def _apply(rule: EventRule, v: np.ndarray) -> np.ndarray:
        missing = np.isnan(v)
        vv = np.where(missing, 0.0, v)
        if rule.value == "ignore":
            w = np.full(len(v), rule.weight)
        elif rule.value == "scale":
            w = np.where(missing, rule.weight, rule.weight * vv)
        elif rule.value == "completion":
            w = np.where(missing, rule.weight, rule.weight * np.clip(vv, 0.0, 1.0))
        elif rule.value == "log1p":
            w = np.where(missing, rule.weight, rule.weight * np.log1p(np.maximum(vv, 0.0)))
        else:  # rating
            w = np.where(missing, 0.0, rule.weight * (vv - rule.center) / rule.spread)
        if rule.negative_below is not None:
            w = np.where(~missing & (v < rule.negative_below), rule.negative_weight, w)
        return w

    def aggregate_pairs(
        self, users: np.ndarray, items: np.ndarray, weights: np.ndarray, order: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Combine the weights of repeated user-item pairs.

        Args:
            users, items: integer indices, one per event.
            weights: per-event weights.
            order: a sort key giving time order (used by ``aggregate="last"``).

        Returns:
            unique (users, items, weights), clipped.
        """
        n_items = int(items.max()) + 1 if len(items) else 1
        key = users.astype(np.int64) * n_items + items.astype(np.int64)
        if self.aggregate == "last":
            idx = np.lexsort((order, key))
            key_s, w_s = key[idx], weights[idx]
            last = np.r_[key_s[1:] != key_s[:-1], True]
            ukey, agg = key_s[last], w_s[last]
        else:
            ukey, inverse = np.unique(key, return_inverse=True)
            if self.aggregate == "sum":
                agg = np.bincount(inverse, weights=weights, minlength=len(ukey))
            else:
                agg = np.full(len(ukey), -np.inf)
                np.maximum.at(agg, inverse, weights)
        agg = np.clip(agg, self.clip[0], self.clip[1]).astype(np.float32)
        return (ukey // n_items).astype(np.int64), (ukey % n_items).astype(np.int64), agg
