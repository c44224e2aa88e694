"""Seeded, reproducible splits of a Dataset into training, validation and test events.

Every split keeps the full dataset's vocabularies, so a model fitted on the training part can
score every item and user. A split records, per stage, the target events and the history the user
has when that stage is evaluated: for validation the training events, for test the training plus
validation events (everything before the test items).
"""

from __future__ import annotations

import abc
import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import polars as pl
import scipy.sparse as sp

from avrec.data.dataset import Dataset
from avrec.errors import DataError

__all__ = [
    "ColdItemSplit",
    "ColdUserSplit",
    "FixedSplit",
    "LeaveOneOut",
    "RandomSplit",
    "Split",
    "SplitResult",
    "TemporalSplit",
    "make_split",
]

Stage = Literal["valid", "test"]


@dataclass
class SplitResult:
    """The outcome of splitting one dataset.

    Attributes:
        full: the dataset that was split.
        train: the training events, as a Dataset with the full vocabularies.
        masks: per-event booleans over ``full`` for ``train``, ``valid`` and ``test``.
    """

    name: str
    full: Dataset
    masks: dict[str, np.ndarray]
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        overlap = self.masks["train"].astype(int) + self.masks["valid"] + self.masks["test"]
        if (overlap > 1).any():
            raise DataError("split stages overlap")
        self.train = self.full.select(self.masks["train"], name=f"{self.full.name}:train")

    def _matrix(self, mask: np.ndarray) -> sp.csr_matrix:
        f = self.full
        m = sp.csr_matrix(
            (np.ones(int(mask.sum()), np.float32), (f.user_index[mask], f.item_index[mask])),
            shape=(f.n_users, f.n_items),
        )
        m.sum_duplicates()
        m.data[:] = 1.0
        return m

    def targets(self, stage: Stage) -> sp.csr_matrix:
        """users x items, 1 where the user has a target item in ``stage``."""
        return self._matrix(self.masks[stage])

    def history_mask(self, stage: Stage) -> np.ndarray:
        """The events a user has when ``stage`` is evaluated."""
        if stage == "valid":
            return self.masks["train"]
        return self.masks["train"] | self.masks["valid"]

    def history(self, stage: Stage) -> sp.csr_matrix:
        """users x items, 1 for every item in the user's history at ``stage``."""
        return self._matrix(self.history_mask(stage))

    def sequences(self, stage: Stage, users: np.ndarray) -> list[np.ndarray]:
        """Each user's history items at ``stage`` in time order."""
        f = self.full
        mask = self.history_mask(stage)
        ptr = f.sequence_indptr
        return [f.item_index[ptr[u] : ptr[u + 1]][mask[ptr[u] : ptr[u + 1]]] for u in users]

    def sequence_times(self, stage: Stage, users: np.ndarray) -> list[np.ndarray]:
        """The Unix times of :meth:`sequences`' events (same shapes)."""
        f = self.full
        mask = self.history_mask(stage)
        ptr = f.sequence_indptr
        return [f.ts[ptr[u] : ptr[u + 1]][mask[ptr[u] : ptr[u + 1]]] for u in users]

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"split": self.name, **self.params}
        for stage, mask in self.masks.items():
            out[f"{stage}_events"] = int(mask.sum())
            out[f"{stage}_users"] = int(np.unique(self.full.user_index[mask]).size)
            out[f"{stage}_items"] = int(np.unique(self.full.item_index[mask]).size)
        return out


class Split(abc.ABC):
    """A way of splitting a dataset."""

    name: str

    @abc.abstractmethod
    def split(self, dataset: Dataset) -> SplitResult:
        """Split ``dataset``."""


def _positions(ds: Dataset, order: str) -> tuple[np.ndarray, np.ndarray]:
    """Events sorted per user by ``order`` ("time" or "sequence"): (sorted event ids, position
    from the end of the user's list, 0 = last)."""
    if order == "time":
        idx = np.arange(ds.n_events)  # the Dataset is sorted by (user, time, input order)
    elif order == "sequence":
        idx = np.lexsort((ds.order, ds.user_index))
    else:
        raise DataError(f"order must be 'time' or 'sequence', got {order!r}")
    users = ds.user_index[idx]
    counts = np.bincount(users, minlength=ds.n_users)
    ends = np.cumsum(counts)
    from_end = ends[users] - 1 - np.arange(ds.n_events)
    return idx, from_end


@dataclass
class LeaveOneOut(Split):
    """Last item of each user for test, the one before for validation.

    Args:
        order: ``"time"`` (timestamp, ties in input order) or ``"sequence"`` (input order).
        valid: hold out a validation item too.
        min_events: users with fewer events stay entirely in training.
    """

    order: str = "time"
    valid: bool = True
    min_events: int = 3
    name: str = "loo"

    def split(self, dataset: Dataset) -> SplitResult:
        idx, from_end = _positions(dataset, self.order)
        counts = np.bincount(dataset.user_index, minlength=dataset.n_users)
        need = self.min_events if self.valid else max(self.min_events - 1, 2)
        eligible = counts[dataset.user_index[idx]] >= need
        test = np.zeros(dataset.n_events, bool)
        valid = np.zeros(dataset.n_events, bool)
        test[idx[eligible & (from_end == 0)]] = True
        if self.valid:
            valid[idx[eligible & (from_end == 1)]] = True
        return SplitResult(
            self.name,
            dataset,
            {"train": ~(test | valid), "valid": valid, "test": test},
            {"order": self.order, "min_events": self.min_events},
        )


def _rows(reader: Any, path: Path) -> Iterator[list[str]]:
    """``reader``'s rows; a line the csv module cannot read (a lone carriage return inside a
    field) is one DataError naming the file and the line, not csv.Error."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataError(f"{path}:{reader.line_num}: unreadable line ({exc})") from None
        yield row


@dataclass
class FixedSplit(Split):
    """A split file ``user_id<TAB>valid_item<TAB>test_item`` (header optional).

    For each listed user the last occurrence of ``test_item`` in time order is the test event and
    the last occurrence of ``valid_item`` before it the validation event; every other event is
    training. Users not in the file stay entirely in training.
    """

    path: str | Path
    name: str = "fixed"

    def split(self, dataset: Dataset) -> SplitResult:
        path = Path(self.path)
        if not path.is_file():
            raise DataError(f"split file not found: {path}")
        users, valids, tests, lines = [], [], [], []
        first: dict[str, int] = {}  # user -> the line that lists it
        try:
            fh = open(path, "rb")  # closed by the with below
        except OSError as exc:  # not readable by this user, say
            raise DataError(f"split file cannot be read: {path} ({exc.strerror})") from None
        with fh:
            reader = csv.reader(_text_lines(fh, path), delimiter="\t")
            rows = _rows(reader, path)
            for row in rows:
                line_no = reader.line_num
                if not row or (line_no == 1 and row[0] == "user_id"):
                    continue
                if len(row) != 3:
                    raise DataError(f"{path}:{line_no}: expected user_id, valid_item, test_item")
                if row[0] in first:
                    raise DataError(
                        f"{path}:{line_no}: user {row[0]!r} is listed twice "
                        f"(lines {first[row[0]]} and {line_no})"
                    )
                first[row[0]] = line_no
                users.append(row[0])
                valids.append(row[1])
                tests.append(row[2])
                lines.append(line_no)
        if not users:
            raise DataError(f"{path}: the split file has no rows")
        u = dataset.users.index(users, missing="ignore")
        vi = dataset.items.index(valids, missing="ignore")
        ti = dataset.items.index(tests, missing="ignore")
        for arr, what in ((u, "user"), (vi, "valid item"), (ti, "test item")):
            if (arr < 0).any():
                k = int(np.flatnonzero(arr < 0)[0])
                raise DataError(
                    f"{path}:{lines[k]}: unknown {what} in {users[k]!r} {valids[k]!r} {tests[k]!r}"
                )
        ev = pl.DataFrame(
            {"u": dataset.user_index, "i": dataset.item_index, "pos": np.arange(dataset.n_events)}
        )
        wanted = pl.DataFrame({"u": u, "vi": vi, "ti": ti, "line": lines})
        test_pos = (
            ev.join(wanted, left_on=["u", "i"], right_on=["u", "ti"])
            .group_by("u")
            .agg(pl.col("pos").max().alias("tpos"))
        )
        valid_pos = (
            ev.join(wanted, left_on=["u", "i"], right_on=["u", "vi"])
            .join(test_pos, on="u")
            .filter(pl.col("pos") < pl.col("tpos"))
            .group_by("u")
            .agg(pl.col("pos").max().alias("vpos"))
        )
        for found, what in ((test_pos, "test"), (valid_pos, "valid")):
            if found.height != len(set(u.tolist())):
                missing = set(u.tolist()) - set(found["u"].to_list())
                k = int(np.flatnonzero(np.isin(u, list(missing)))[0])
                raise DataError(
                    f"{path}:{lines[k]}: user {users[k]!r} has no {what} item "
                    f"{(valids if what == 'valid' else tests)[k]!r} in the data"
                )
        test = np.zeros(dataset.n_events, bool)
        valid = np.zeros(dataset.n_events, bool)
        test[test_pos["tpos"].to_numpy()] = True
        valid[valid_pos["vpos"].to_numpy()] = True
        return SplitResult(
            self.name,
            dataset,
            {"train": ~(test | valid), "valid": valid, "test": test},
            {"file": str(path)},
        )


def _text_lines(fh: BinaryIO, path: Path) -> Iterator[str]:
    """The lines of a split file opened in binary, as text; a byte that is not UTF-8 (a
    binary file, say) is a :class:`DataError` naming the line, not a ``UnicodeDecodeError``
    or a csv error."""
    for line_no, raw in enumerate(fh, start=1):
        if b"\0" in raw:
            raise DataError(f"{path}: not a text file (a NUL byte at line {line_no})")
        try:
            yield raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{path}: not a text file (invalid UTF-8 at line {line_no})") from None


@dataclass
class TemporalSplit(Split):
    """One global cutoff: events before ``valid_at`` train, then validation, from ``test_at``
    test. Cutoffs are Unix times, or quantiles of the event times when in (0, 1)."""

    valid_at: float = 0.8
    test_at: float = 0.9
    name: str = "temporal"

    def split(self, dataset: Dataset) -> SplitResult:
        def cut(x: float) -> float:
            return float(np.quantile(dataset.ts, x)) if 0 < x < 1 else float(x)

        v, t = cut(self.valid_at), cut(self.test_at)
        if v > t:
            raise DataError(f"valid cutoff {v} is after test cutoff {t}")
        test = dataset.ts >= t
        valid = (dataset.ts >= v) & ~test
        return SplitResult(
            self.name,
            dataset,
            {"train": ~(test | valid), "valid": valid, "test": test},
            {"valid_from": v, "test_from": t},
        )


@dataclass
class RandomSplit(Split):
    """Each user's events shuffled (seeded) and cut by ``ratios`` (train, valid, test)."""

    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    name: str = "random"

    def split(self, dataset: Dataset) -> SplitResult:
        r = np.asarray(self.ratios, dtype=float)
        if len(r) != 3 or (r < 0).any() or r.sum() <= 0:
            raise DataError(f"ratios must be three non-negative numbers, got {self.ratios}")
        r = r / r.sum()
        rng = np.random.default_rng(self.seed)
        key = rng.random(dataset.n_events)
        idx = np.lexsort((key, dataset.user_index))
        users = dataset.user_index[idx]
        counts = np.bincount(users, minlength=dataset.n_users)
        starts = np.cumsum(counts) - counts
        pos = np.arange(dataset.n_events) - starts[users]
        n = counts[users]
        n_test = np.floor(n * r[2] + 0.5).astype(int)
        n_valid = np.floor(n * r[1] + 0.5).astype(int)
        n_test = np.minimum(n_test, n - 1)  # keep at least one training event
        n_valid = np.minimum(n_valid, n - 1 - n_test)
        stage = np.where(pos >= n - n_test, 2, np.where(pos >= n - n_test - n_valid, 1, 0))
        test = np.zeros(dataset.n_events, bool)
        valid = np.zeros(dataset.n_events, bool)
        test[idx[stage == 2]] = True
        valid[idx[stage == 1]] = True
        return SplitResult(
            self.name,
            dataset,
            {"train": ~(test | valid), "valid": valid, "test": test},
            {"ratios": list(map(float, r)), "seed": self.seed},
        )


def _cold_masks(keys: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """Hold out a seeded ``fraction`` of the distinct ``keys`` (items or users): half of them
    for validation, half for test, with every event of a held-out key. Returns the masks and how
    many keys were held out."""
    rng = np.random.default_rng(seed)
    active = np.unique(keys)
    n = max(2, int(round(len(active) * fraction)))
    chosen = rng.permutation(active)[:n]
    valid = np.isin(keys, chosen[: n // 2])
    test = np.isin(keys, chosen[n // 2 :])
    return valid, test, n


@dataclass
class ColdItemSplit(Split):
    """A seeded set of items never seen in training: all their events are validation or test."""

    fraction: float = 0.1
    seed: int = 0
    name: str = "cold-items"

    def split(self, dataset: Dataset) -> SplitResult:
        valid, test, n = _cold_masks(dataset.item_index, self.fraction, self.seed)
        return SplitResult(
            self.name,
            dataset,
            {"train": ~(test | valid), "valid": valid, "test": test},
            {"fraction": self.fraction, "seed": self.seed, "cold_items": int(n)},
        )


@dataclass
class ColdUserSplit(Split):
    """A seeded set of users with no training events: all their events are validation or
    test, and their history when evaluated is empty."""

    fraction: float = 0.1
    seed: int = 0
    name: str = "cold-users"

    def split(self, dataset: Dataset) -> SplitResult:
        valid, test, n = _cold_masks(dataset.user_index, self.fraction, self.seed)
        return SplitResult(
            self.name,
            dataset,
            {"train": ~(test | valid), "valid": valid, "test": test},
            {"fraction": self.fraction, "seed": self.seed, "cold_users": int(n)},
        )


def make_split(kind: str, **params: Any) -> Split:
    """A split by name: ``loo``, ``fixed``, ``temporal``, ``random``, ``cold-items``,
    ``cold-users``."""
    kinds: dict[str, type[Split]] = {
        "loo": LeaveOneOut,
        "fixed": FixedSplit,
        "temporal": TemporalSplit,
        "random": RandomSplit,
        "cold-items": ColdItemSplit,
        "cold-users": ColdUserSplit,
    }
    if kind not in kinds:
        raise DataError(f"unknown split {kind!r}; known: {', '.join(kinds)}")
    return kinds[kind](**params)
