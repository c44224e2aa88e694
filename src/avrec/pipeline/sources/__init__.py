"""Candidate sources: each proposes items for a user, with scores and, where it can, the anchor
(the item in the user's history that led to the proposal), so that the pipeline can merge them
with provenance, rank them and explain them.

Every source has the same contract: ``fit(dataset)`` on training data, then
``retrieve(requests, n)`` gives up to ``n`` :class:`Candidates` per :class:`Request`, never an
item in ``request.exclude`` (the user's history and anything the caller excludes). Sources:

- ``model``: any recommender of the registry (collaborative, sequential, content), its top-n.
- ``factors``: ALS user factors folded in from the history, searched among the item factors
  (FAISS), for catalogues too large to score whole.
- ``neighbours``: items closest (content vectors, FAISS) to the user's most recent items.
- ``interests``: content vectors of the user's history clustered into a few interest centroids,
  recency- and event-weighted, each retrieved from (FAISS), so a person with two tastes gets both.
- ``people``: items sharing people (directors, cast, artists) or tags with what the user played.
- ``trending``: time-decayed popularity. ``fresh``: new items with little history yet.
- ``popular``: the fallback; answers anyone, including a person with no history at all.

The package's modules:

- ``base``: the contract (:class:`Request`, :class:`Candidates`, :class:`Source`), the registry
  (``SOURCES``, :func:`register_source`, :func:`create_source`) and the helpers sources share
  (top-n selection, the history as a sparse row, kept vector indexes).
- ``models``: ``model`` and ``factors``.
- ``vectors``: ``neighbours`` and ``interests``.
- ``people``: ``people``.
- ``timely``: ``popular``, ``trending`` and ``fresh``, and their timeline helpers.

Importing the package imports every module, so every source is in the registry.
"""

# isort: off
# modules in the order the sources used to be defined in, so that they register (SOURCES) in
# the same order: model, factors, neighbours, interests, people, popular, trending, fresh
from avrec.pipeline.sources.base import (
    SOURCES,
    Candidates,
    Request,
    Source,
    create_source,
    register_source,
    INDEX_FILE as INDEX_FILE,
    _history_matrix as _history_matrix,
    _top as _top,
)
from avrec.pipeline.sources.models import FactorSource as FactorSource
from avrec.pipeline.sources.models import ModelSource as ModelSource
from avrec.pipeline.sources.vectors import InterestSource as InterestSource
from avrec.pipeline.sources.vectors import NeighbourSource as NeighbourSource
from avrec.pipeline.sources.vectors import _VectorSource as _VectorSource
from avrec.pipeline.sources.people import PeopleSource as PeopleSource
from avrec.pipeline.sources.timely import FreshSource as FreshSource
from avrec.pipeline.sources.timely import PopularSource as PopularSource
from avrec.pipeline.sources.timely import TrendingSource as TrendingSource
from avrec.pipeline.sources.timely import _GlobalSource as _GlobalSource
# isort: on

__all__ = [
    "SOURCES",
    "Candidates",
    "Request",
    "Source",
    "create_source",
    "register_source",
]
