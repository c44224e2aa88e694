"""Vocabulary: external ids <-> dense integer indices.

Public methods across avrec take and return external ids (strings); integer indices stay inside
models and matrices. A Vocabulary is immutable; :meth:`extend` returns a new one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from avrec.errors import DataError, UnknownEntityError

__all__ = ["Vocabulary"]


class Vocabulary:
    """An ordered set of external ids.

    Args:
        ids: unique ids; their order defines the indices.
        name: what the ids are (``"user"``, ``"item"``), used in error messages.

    Raises:
        DataError: ``ids`` has duplicates.
    """

    def __init__(self, ids: Iterable[str], name: str = "id") -> None:
        self._ids = np.asarray([str(i) for i in ids], dtype=object)
        self._index = {v: i for i, v in enumerate(self._ids)}
        self.name = name
        if len(self._index) != len(self._ids):
            raise DataError(f"{name} vocabulary has duplicate ids")

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __iter__(self):
        return iter(self._ids)

    def __repr__(self) -> str:
        return f"Vocabulary({self.name}, {len(self)} ids)"

    @property
    def ids(self) -> np.ndarray:
        """All ids, in index order (object array)."""
        return self._ids

    def index(self, ids: str | Sequence[str], missing: str = "raise") -> np.ndarray:
        """Indices of ``ids``.

        Args:
            missing: ``"raise"`` for an unknown id, or ``"ignore"`` to give -1.

        Raises:
            UnknownEntityError: an id is unknown and ``missing="raise"``.
        """
        single = isinstance(ids, str)
        keys = [ids] if single else list(ids)
        out = np.fromiter(
            (self._index.get(str(k), -1) for k in keys), dtype=np.int64, count=len(keys)
        )
        if missing == "raise" and (out < 0).any():
            bad = [k for k, i in zip(keys, out, strict=True) if i < 0][:5]
            raise UnknownEntityError(f"unknown {self.name} id(s): {bad}")
        return out

    def id(self, index: int) -> str:
        """The id at ``index``."""
        return str(self._ids[index])

    def lookup(self, indices: Sequence[int] | np.ndarray) -> list[str]:
        """Ids of ``indices``."""
        return [str(x) for x in self._ids[np.asarray(indices, dtype=np.int64)]]

    def extend(self, ids: Iterable[str]) -> Vocabulary:
        """A new vocabulary with ``ids`` not yet present appended at the end."""
        new = [str(i) for i in ids if str(i) not in self._index]
        seen: dict[str, None] = dict.fromkeys(new)
        return Vocabulary([*self._ids, *seen], self.name)
