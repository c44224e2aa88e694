"""Loaders for public datasets, found by name in a registry."""

from __future__ import annotations

from pathlib import Path

from avrec.data.dataset import Dataset
from avrec.data.loaders.base import DatasetFile, PublicData, PublicDataset
from avrec.data.loaders.kuairec import KuaiRecCaptions
from avrec.data.loaders.lastfm import LastFM2K
from avrec.data.loaders.microlens import MicroLens50K
from avrec.data.loaders.movielens import MovieLens100K
from avrec.data.weighting import EventWeighting
from avrec.errors import ConfigError

__all__ = [
    "DATASETS",
    "DatasetFile",
    "PublicData",
    "PublicDataset",
    "get_loader",
    "load_dataset",
    "load_public_data",
    "register_dataset",
]

DATASETS: dict[str, PublicDataset] = {}


def register_dataset(loader: PublicDataset) -> None:
    """Make a loader available by its ``name``."""
    DATASETS[loader.name] = loader


for _loader in (MovieLens100K(), MicroLens50K(), LastFM2K(), KuaiRecCaptions()):
    register_dataset(_loader)


def get_loader(name: str) -> PublicDataset:
    """The loader registered as ``name``.

    Raises:
        ConfigError: no such dataset.
    """
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}"
        ) from None


def load_public_data(name: str, settings=None) -> PublicData:  # noqa: ANN001
    """Load a public dataset's files as :class:`PublicData` (locations from ``settings``)."""
    from avrec.config import Settings

    settings = settings or Settings()
    return get_loader(name).load(settings.data_dir, settings.cache_dir, settings.offline)


def load_dataset(
    name: str,
    weighting: EventWeighting | None = None,
    settings=None,  # noqa: ANN001
) -> Dataset:
    """A public dataset as a :class:`Dataset`, ready for models.

    Args:
        weighting: defaults to the dataset's own (all interactions positive for MovieLens and
            MicroLens, log play counts for Last.fm).
    """
    data = load_public_data(name, settings)
    return Dataset.from_events(
        data.events,
        data.items,
        weighting or data.weighting,
        name=name,
        meta={**data.meta, "notes": data.notes},
    )


def data_dir_hint() -> Path | None:
    """The data folder avrec would use now."""
    from avrec.config import Settings

    return Settings().data_dir
