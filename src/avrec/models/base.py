"""The recommender contract every model follows.

implicit's ``RecommenderBase`` shows how small the contract can be; Cornac adds that public methods
take and return external ids while integer indices stay inside. A model:

- ``fit(dataset, valid=None)`` learns from a :class:`~avrec.data.Dataset`;
- ``score(users, items=None)`` gives a dense users x items score matrix;
- ``recommend(users, k, exclude_seen, exclude, candidates)`` gives one :class:`ItemList` per user;
- ``similar_items(items, k)`` gives neighbours of items;
- ``save(path)`` / ``load(path)`` write a folder with ``manifest.json`` and ``weights.npz``
  (never pickle).

Models implement ``_fit`` and ``_score_batch``: the latter scores a batch of users from their
interaction history (a CSR matrix over items), which is what lets evaluation score a user with the
history they have at test time (training plus validation items) through the same code the
service uses.
"""

from __future__ import annotations

import abc
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict

from avrec.data.dataset import Dataset
from avrec.data.vocab import Vocabulary
from avrec.errors import ConfigError, DataError, NotFittedError
from avrec.storage.artifacts import atomic_write_bytes

__all__ = [
    "MODELS",
    "ItemList",
    "ModelConfig",
    "Recommender",
    "UserBatch",
    "create_model",
    "load_model",
    "register_model",
]

FORMAT_VERSION = 1


class ModelConfig(BaseModel):
    """Base of every model's configuration (pydantic, documented defaults)."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class ItemList:
    """Items with scores, in rank order, plus optional per-item fields (LensKit's ItemList)."""

    ids: list[str]
    scores: np.ndarray
    fields: dict[str, list[Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def to_records(self) -> list[dict[str, Any]]:
        out = []
        for i, (item, score) in enumerate(zip(self.ids, self.scores.tolist(), strict=True)):
            rec = {"item_id": item, "score": score, "rank": i + 1}
            rec.update({k: v[i] for k, v in self.fields.items()})
            out.append(rec)
        return out


@dataclass
class UserBatch:
    """A batch of users as models see them when scoring.

    Attributes:
        users: user indices in the training vocabulary (-1: a user the model never saw).
        history: batch x n_items interaction weights to score from.
        sequences: each user's item indices in time order (for sequential models); built on
            demand by :meth:`sequence_list` when ``None``.
        times: the Unix time of each sequence event (same shapes as ``sequences``), for models
            that read the request time (``uses_times``); ``None`` when not known.
        request_times: when each user's request is made (default: after their last event,
            or now without ``times``).
    """

    users: np.ndarray
    history: sp.csr_matrix
    sequences: list[np.ndarray] | None = None
    times: list[np.ndarray] | None = None
    request_times: np.ndarray | None = None

    def sequence_list(self) -> list[np.ndarray]:
        if self.sequences is None:
            h = self.history
            self.sequences = [h.indices[h.indptr[i] : h.indptr[i + 1]] for i in range(h.shape[0])]
        return self.sequences


MODELS: dict[str, type[Recommender]] = {}


def register_model(cls: type[Recommender]) -> type[Recommender]:
    """Class decorator: make a model available by its ``name``."""
    MODELS[cls.name] = cls
    return cls


def create_model(name: str, **params: Any) -> Recommender:
    """A new model by registry name, with config parameters.

    Raises:
        ConfigError: unknown name or invalid parameters.
    """
    _load_builtin()
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    try:
        return MODELS[name](**params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model {name!r}: {exc}") from None


def load_model(path: str | Path) -> Recommender:
    """Load any saved model, picking the class from its manifest."""
    _load_builtin()
    manifest = _read_manifest(Path(path))
    kind = manifest["kind"]
    if kind not in MODELS:
        raise DataError(f"{path}: model kind {kind!r} is not known to this avrec")
    return MODELS[kind].load(path)


def _load_builtin() -> None:
    from avrec.models import (  # noqa: F401  (they register themselves)
        content,
        ease,
        factors,
        fedmf,
        knn,
        markov,
        mf,
        popularity,
        sasrec,
    )
    from avrec.pipeline import pipeline  # noqa: F401


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path} is not a saved avrec model (no manifest.json)") from None


class Recommender(abc.ABC):
    """Base class of all recommenders. Subclasses set ``name`` and ``Config``."""

    name: ClassVar[str]
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    #: the model reads each user's time-ordered sequence (``UserBatch.sequences``)
    uses_sequences: ClassVar[bool] = False
    #: the model reads event times (``UserBatch.times``): the request happens after them
    uses_times: ClassVar[bool] = False

    #: attributes (dotted paths) of learned arrays with one row per user, cleared by
    #: :meth:`forget_users`
    user_arrays: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **params: Any) -> None:
        self.config = self.Config(**params)
        self.users: Vocabulary | None = None
        self.items: Vocabulary | None = None
        self._seen: sp.csr_matrix | None = None
        self._seq_indptr: np.ndarray | None = None
        self._seq_items: np.ndarray | None = None
        self.fit_seconds: float | None = None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.model_dump().items())
        return f"{type(self).__name__}({args})"

    # -- fitting ------------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return self.items is not None

    def fit(self, dataset: Dataset, valid: Dataset | None = None) -> Self:
        """Learn from ``dataset`` (``valid`` is used by models that stop early)."""
        if dataset.n_items == 0:
            raise DataError("cannot fit on a dataset with no items")
        start = time.perf_counter()
        self.users, self.items = dataset.users, dataset.items
        self._seen = dataset.seen
        if self.uses_sequences:
            self._seq_indptr = dataset.sequence_indptr.copy()
            self._seq_items = dataset.item_index.copy()
        self._fit(dataset, valid)
        self.fit_seconds = time.perf_counter() - start
        return self

    @abc.abstractmethod
    def _fit(self, dataset: Dataset, valid: Dataset | None) -> None:
        """Learn parameters; vocabularies and ``_seen`` are already set."""

    @abc.abstractmethod
    def _score_batch(self, batch: UserBatch) -> np.ndarray:
        """Scores (len(batch.users) x n_items, float32) for a batch of users."""

    def _check(self) -> tuple[Vocabulary, Vocabulary]:
        if self.users is None or self.items is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit(dataset) first")
        return self.users, self.items

    # -- public surface: external ids ----------------------------------------------------------
    def user_batch(self, users: Sequence[str]) -> UserBatch:
        """Build a batch from training histories; unknown users get an empty history."""
        user_vocab, _ = self._check()
        assert self._seen is not None
        idx = user_vocab.index(list(users), missing="ignore")
        if self._seen.shape[0] == 0:  # trained on a catalogue without events: all strangers
            history = sp.csr_matrix((len(idx), self._seen.shape[1]), dtype=self._seen.dtype)
        else:
            history = self._seen[np.where(idx >= 0, idx, 0)].tocsr()
        if (idx < 0).any():
            mask = sp.diags((idx >= 0).astype(np.float32))
            history = (mask @ history).tocsr()
            history.eliminate_zeros()
        sequences = None
        if self.uses_sequences and self._seq_indptr is not None:
            ptr, items = self._seq_indptr, self._seq_items
            empty = np.zeros(0, np.int64)
            sequences = [items[ptr[u] : ptr[u + 1]] if u >= 0 else empty for u in idx]
        # no times: a request served now is made now (evaluation passes each user's times)
        return UserBatch(idx, history, sequences)

    def score(self, users: Sequence[str], items: Sequence[str] | None = None) -> np.ndarray:
        """Scores of ``items`` (default: all, in vocabulary order) for each user."""
        _, item_vocab = self._check()
        scores = self._score_batch(self.user_batch(users))
        if items is not None:
            scores = scores[:, item_vocab.index(list(items))]
        return scores

    def recommend(
        self,
        users: Sequence[str],
        k: int = 10,
        exclude_seen: bool = True,
        exclude: Sequence[str] | None = None,
        candidates: Sequence[str] | None = None,
    ) -> list[ItemList]:
        """Top-``k`` items for each user.

        Args:
            exclude_seen: leave out items the user interacted with in training.
            exclude: item ids to leave out for every user.
            candidates: rank only these item ids.

        Raises:
            ValueError: ``k`` is not positive.
        """
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        _, item_vocab = self._check()
        batch = self.user_batch(users)
        scores = self._score_batch(batch).astype(np.float32, copy=True)
        if exclude_seen:
            mask_rows(scores, batch.history)
        if exclude:
            idx = item_vocab.index(list(exclude), missing="ignore")
            scores[:, idx[idx >= 0]] = -np.inf
        if candidates is not None:
            allowed = np.zeros(scores.shape[1], dtype=bool)
            idx = item_vocab.index(list(candidates), missing="ignore")
            allowed[idx[idx >= 0]] = True
            scores[:, ~allowed] = -np.inf
        top, top_scores = topk(scores, k)
        out = []
        for row, srow in zip(top, top_scores, strict=True):
            keep = np.isfinite(srow)
            out.append(ItemList(item_vocab.lookup(row[keep]), srow[keep]))
        return out

    def similar_items(self, items: Sequence[str], k: int = 10) -> list[ItemList]:
        """The ``k`` items most similar to each of ``items`` (the item itself left out)."""
        _, item_vocab = self._check()
        idx = item_vocab.index(list(items))
        sims = self._item_similarity(idx).astype(np.float32, copy=True)
        sims[np.arange(len(idx)), idx] = -np.inf
        top, top_scores = topk(sims, k)
        return [
            ItemList(item_vocab.lookup(r[np.isfinite(s)]), s[np.isfinite(s)])
            for r, s in zip(top, top_scores, strict=True)
        ]

    def _item_similarity(self, items: np.ndarray) -> np.ndarray:
        """Similarity of ``items`` to every item; default: the scores of a one-item history."""
        _, item_vocab = self._check()
        n = len(item_vocab)
        rows = sp.csr_matrix(
            (np.ones(len(items), np.float32), (np.arange(len(items)), items)),
            shape=(len(items), n),
        )
        return self._score_batch(UserBatch(np.full(len(items), -1), rows))

    # -- erasure -------------------------------------------------------------------------------
    def forget_users(self, users: Sequence[str]) -> list[str]:
        """Remove what this fitted model holds of ``users`` alone: their history (seen items
        and sequence) and their rows of learned per-user arrays (:attr:`user_arrays`). They
        are served as unknown users afterwards. What the items' parameters learned from them
        stays until the next fit. Returns the names of what was cleared."""
        user_vocab, _ = self._check()
        idx = user_vocab.index(list(users), missing="ignore")
        idx = np.unique(idx[idx >= 0])
        if not len(idx):
            return []
        cleared = []
        if self._seen is not None:
            keep = np.ones(self._seen.shape[0], np.float32)
            keep[idx] = 0.0
            seen = (sp.diags(keep) @ self._seen).tocsr()
            seen.eliminate_zeros()
            self._seen = seen
            cleared.append("history")
        if self._seq_indptr is not None and self._seq_items is not None:
            ptr = self._seq_indptr
            lengths = np.diff(ptr)
            drop = np.zeros(len(self._seq_items), bool)
            for u in idx.tolist():
                drop[ptr[u] : ptr[u + 1]] = True
            lengths[idx] = 0
            self._seq_items = self._seq_items[~drop]
            self._seq_indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(ptr.dtype)
            cleared.append("sequence")
        for path in self.user_arrays:
            owner: Any = self
            *parents, attr = path.split(".")
            for p in parents:
                owner = getattr(owner, p, None)
            arr = getattr(owner, attr, None) if owner is not None else None
            if isinstance(arr, np.ndarray) and len(arr) == len(user_vocab):
                arr = np.array(arr)  # a loaded bundle's arrays may be read-only
                arr[idx] = 0
                setattr(owner, attr, arr)
                cleared.append(f"{self.name}.{attr}")
        return cleared

    # -- persistence --------------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        """Learned arrays to save (besides vocabularies and seen items)."""
        return {}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:  # noqa: B027 - optional hook
        """Restore what :meth:`_state` returned."""

    def save(self, path: str | Path) -> Path:
        """Write ``manifest.json`` and ``weights.npz`` into the folder ``path``."""
        user_vocab, item_vocab = self._check()
        assert self._seen is not None
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        seen = self._seen.tocsr()
        arrays = {
            "__users": np.asarray(user_vocab.ids, dtype=str),
            "__items": np.asarray(item_vocab.ids, dtype=str),
            "__seen_indptr": seen.indptr,
            "__seen_indices": seen.indices,
            "__seen_data": seen.data,
            **(
                {"__seq_indptr": self._seq_indptr, "__seq_items": self._seq_items}
                if self._seq_indptr is not None
                else {}
            ),
            **self._state(),
        }
        import io

        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(path / "weights.npz", buf.getvalue())
        manifest = {
            "kind": self.name,
            "format": FORMAT_VERSION,
            "config": self.config.model_dump(),
            "tuned": getattr(self, "tuned_", None),
            "fit_seconds": self.fit_seconds,
            # the differential privacy of the learned weights (avrec.privacy.training)
            "privacy": getattr(self, "privacy", None),
            "n_users": len(user_vocab),
            "n_items": len(item_vocab),
            "saved_at": time.time(),
        }
        atomic_write_bytes(path / "manifest.json", json.dumps(manifest, indent=2).encode())
        return path

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Load a model saved by :meth:`save`.

        Raises:
            DataError: the folder is not a saved model of this kind.
        """
        path = Path(path)
        manifest = _read_manifest(path)
        if manifest.get("kind") != cls.name:
            raise DataError(f"{path} holds a {manifest.get('kind')!r} model, not {cls.name!r}")
        model = cls(**manifest["config"])
        with np.load(path / "weights.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        model.users = Vocabulary(arrays.pop("__users").tolist(), "user")
        model.items = Vocabulary(arrays.pop("__items").tolist(), "item")
        model._seen = sp.csr_matrix(
            (arrays.pop("__seen_data"), arrays.pop("__seen_indices"), arrays.pop("__seen_indptr")),
            shape=(len(model.users), len(model.items)),
        )
        if "__seq_indptr" in arrays:
            model._seq_indptr = arrays.pop("__seq_indptr")
            model._seq_items = arrays.pop("__seq_items")
        model.fit_seconds = manifest.get("fit_seconds")
        if manifest.get("privacy"):
            model.privacy = manifest["privacy"]
        if manifest.get("tuned"):
            model.tuned_ = manifest["tuned"]
        model._set_state(arrays)
        return model


def cosine_rows(vectors: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Cosine similarity of the rows ``items`` of ``vectors`` to every row."""
    f = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return f[items] @ f.T


def mask_rows(scores: np.ndarray, mask: sp.csr_matrix) -> None:
    """Set ``scores[i, j] = -inf`` wherever ``mask[i, j]`` is stored (in place)."""
    coo = mask.tocoo()
    scores[coo.row, coo.col] = -np.inf


def topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-``k`` indices and scores, best first; ties by lower index.

    ``argpartition`` finds the ``k``-th score; only rows where that score is tied across the
    cut are repaired (the lowest-indexed of the tied items are taken), then the ``k`` winners are
    sorted.
    """
    n = scores.shape[1]
    k = min(k, n)
    if k == n:
        part = np.tile(np.arange(n), (scores.shape[0], 1))
    else:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        kth = np.take_along_axis(scores, part, axis=1).min(axis=1)
        above = (scores > kth[:, None]).sum(axis=1)
        tied = (scores == kth[:, None]).sum(axis=1)
        bad = np.flatnonzero(above + tied > k)
        if len(bad):  # ties straddle the cut: keep the lowest-indexed tied items, in O(n)
            sub = scores[bad]
            tied_mask = sub == kth[bad, None]
            need = (k - above[bad])[:, None]
            chosen = (sub > kth[bad, None]) | (tied_mask & (np.cumsum(tied_mask, axis=1) <= need))
            part[bad] = np.nonzero(chosen)[1].reshape(len(bad), k)
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    top = np.take_along_axis(part, order, axis=1)
    return top, np.take_along_axis(scores, top, axis=1)
