"""Recommenders: the shared contract, popularity, neighbours, EASE."""

from avrec.models.base import (
    MODELS,
    ItemList,
    Recommender,
    UserBatch,
    create_model,
    load_model,
    register_model,
)
from avrec.models.ease import EASE
from avrec.models.factors import ALS, BPR
from avrec.models.fedmf import FederatedMF
from avrec.models.knn import ItemKNN
from avrec.models.markov import Markov
from avrec.models.mf import BiasedMF
from avrec.models.popularity import Popularity
from avrec.models.sasrec import SASRec

__all__ = [
    "ALS",
    "BPR",
    "BiasedMF",
    "EASE",
    "FederatedMF",
    "MODELS",
    "ItemKNN",
    "ItemList",
    "Markov",
    "Popularity",
    "Recommender",
    "SASRec",
    "UserBatch",
    "create_model",
    "load_model",
    "register_model",
]
