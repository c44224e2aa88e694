"""What every public-dataset loader shares: locating files, checking counts, downloading."""

from __future__ import annotations

import abc
import logging
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from avrec.data.weighting import EventWeighting
from avrec.errors import DataError, DatasetNotFoundError

__all__ = ["DatasetFile", "PublicData", "PublicDataset", "count_lines"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetFile:
    """A file of a public dataset and the number of data rows it must have.

    Attributes:
        path: relative to the dataset folder.
        rows: expected data rows (``None``: not checked); a header line is not counted.
        required: whether the dataset can load without it.
        header: whether the first line is a header.
    """

    path: str
    rows: int | None = None
    required: bool = True
    header: bool = False


@dataclass
class PublicData:
    """A public dataset in avrec's data model (canonical columns, typed).

    ``events``: user_id, item_id, event, value, ts. ``items``: item_id and canonical fields, list
    fields as JSON text. ``users``: user_id, attributes (JSON text).
    """

    name: str
    items: pl.DataFrame
    events: pl.DataFrame
    users: pl.DataFrame
    weighting: EventWeighting
    meta: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: folders of the dataset's own media (posters, clips): loading it into a workspace
    #: makes them media roots there
    media_roots: list[Path] = field(default_factory=list)


def count_lines(path: Path, header: bool = False) -> int:
    """Non-empty lines of a file (minus the header)."""
    n = 0
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                n += 1
    return n - int(header and n > 0)


class PublicDataset(abc.ABC):
    """A loader: where the files are, what they must contain, how to convert them."""

    name: str
    description: str
    homepage: str
    download_url: str | None = None
    folder: str
    files: tuple[DatasetFile, ...]
    terms: str

    def locate(
        self, data_dir: Path | None, cache_dir: Path | None = None, offline: bool = True
    ) -> Path:
        """The folder holding the dataset, downloading it when allowed and possible.

        Raises:
            DatasetNotFoundError: the required files are nowhere, naming the file and the URL.
        """
        candidates = []
        if data_dir is not None:
            candidates.append(Path(data_dir) / self.folder)
        if cache_dir is not None:
            candidates.append(Path(cache_dir) / "datasets" / self.folder)
        for folder in candidates:
            if self._missing(folder) == []:
                return folder
        if not offline and self.download_url and cache_dir is not None:
            target = Path(cache_dir) / "datasets" / self.folder
            try:
                self.download(target)
            except OSError as exc:
                log.warning("download of %s failed: %s", self.name, exc)
            else:
                if not self._missing(target):
                    return target
        where = candidates[0] if candidates else Path(self.folder)
        missing = self._missing(where)
        raise DatasetNotFoundError(
            f"dataset {self.name!r} not found: {where / missing[0]} is missing. "
            f"Download it from {self.download_url or self.homepage} and unpack it into "
            f"{where}, or set AVREC_DATA_DIR to the folder that holds {self.folder}/"
        )

    def _missing(self, folder: Path) -> list[str]:
        return [f.path for f in self.files if f.required and not (folder / f.path).is_file()]

    def check(self, folder: Path) -> dict[str, int]:
        """Verify row counts of every present file.

        Raises:
            DataError: a file's count differs from the published one (names file and counts).
        """
        counts = {}
        for f in self.files:
            p = folder / f.path
            if not p.is_file() or f.rows is None:
                continue
            n = count_lines(p, f.header)
            if n != f.rows:
                raise DataError(
                    f"{p}: expected {f.rows:,} rows for {self.name}, found {n:,}; the copy is "
                    f"incomplete or a different version (get it from {self.homepage})"
                )
            counts[f.path] = n
        return counts

    def download(self, target: Path) -> None:
        """Fetch the official archive into ``target`` (used where there is internet)."""
        assert self.download_url
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            archive = Path(tmp) / "data.zip"
            log.info("downloading %s from %s", self.name, self.download_url)
            with (
                urllib.request.urlopen(self.download_url, timeout=60) as resp,
                open(archive, "wb") as out,
            ):
                shutil.copyfileobj(resp, out)
            with zipfile.ZipFile(archive) as zf:
                for member in zf.infolist():
                    if member.is_dir():
                        continue
                    name = Path(member.filename).name
                    if ".." in Path(member.filename).parts:
                        continue
                    with zf.open(member) as src, open(target / name, "wb") as dst:
                        shutil.copyfileobj(src, dst)

    def load(
        self, data_dir: Path | None = None, cache_dir: Path | None = None, offline: bool = True
    ) -> PublicData:
        """Locate, check and convert the dataset."""
        folder = self.locate(data_dir, cache_dir, offline)
        counts = self.check(folder)
        data = self.convert(folder, data_dir)
        data.meta.setdefault("files", counts)
        data.meta.setdefault("source", str(folder))
        data.meta.setdefault("terms", self.terms)
        return data

    @abc.abstractmethod
    def convert(self, folder: Path, data_dir: Path | None) -> PublicData:
        """Turn the files into :class:`PublicData`."""
