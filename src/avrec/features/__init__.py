"""Features: encoders by modality behind one contract, found by name."""

from avrec.features.base import ENCODERS, Encoder, create_encoder, l2_normalise, register_encoder
from avrec.features.image import EfficientNetLite0, ImageOutput
from avrec.features.text import E5TextEncoder

__all__ = [
    "ENCODERS",
    "E5TextEncoder",
    "EfficientNetLite0",
    "Encoder",
    "ImageOutput",
    "create_encoder",
    "l2_normalise",
    "register_encoder",
]
