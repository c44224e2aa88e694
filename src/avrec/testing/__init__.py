"""Shared test helpers: a synthetic dataset with a known answer and the recommender contract
tests every model inherits (implicit's RecommenderBaseTestMixin, LensKit's ScorerTests)."""

from avrec.testing.contract import RecommenderContract, toy_dataset

__all__ = ["RecommenderContract", "toy_dataset"]
