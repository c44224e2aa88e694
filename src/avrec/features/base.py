"""The encoder contract and registry.

An encoder turns a batch of inputs of one modality (texts, RGB images, 16 kHz audio) into
L2-normalised float32 vectors. Encoders are found by name (``create_encoder("e5-small")``), so
adding one is adding a module that calls :func:`register_encoder`. ``version`` names the weights
and preprocessing; cached vectors are keyed by it, so a new version re-encodes.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from avrec.errors import ConfigError

__all__ = ["ENCODERS", "Encoder", "create_encoder", "l2_normalise", "register_encoder"]


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class Encoder(abc.ABC):
    """Base class of encoders."""

    name: ClassVar[str]
    modality: ClassVar[str]  # "text", "image", "audio"
    dim: int
    version: str

    @abc.abstractmethod
    def encode(self, batch: Sequence[Any]) -> np.ndarray:
        """``len(batch) x dim`` float32, rows L2-normalised."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}, dim={self.dim}, version={self.version})"


ENCODERS: dict[str, type[Encoder]] = {}


def register_encoder(cls: type[Encoder]) -> type[Encoder]:
    """Class decorator: make an encoder available by its ``name``."""
    ENCODERS[cls.name] = cls
    return cls


def create_encoder(name: str, **params: Any) -> Encoder:
    """An encoder by registry name.

    Raises:
        ConfigError: unknown name.
    """
    from avrec.features import audio, clip, image, speech, text  # noqa: F401  (self-registering)

    if name not in ENCODERS:
        raise ConfigError(f"unknown encoder {name!r}; known: {', '.join(sorted(ENCODERS))}")
    return ENCODERS[name](**params)
