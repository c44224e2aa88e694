"""Features: encoders by modality behind one contract, found by name.

Heavy libraries (torch, ctranslate2, onnxruntime, librosa, transformers) load on first use, so
importing this package is cheap.
"""

from avrec.features.audio import AudioDescription, AudioFeatures
from avrec.features.base import ENCODERS, Encoder, create_encoder, l2_normalise, register_encoder
from avrec.features.clip import CLIPEncoder
from avrec.features.image import EfficientNetLite0, ImageOutput, imagenet_label
from avrec.features.ocr import OCRResult, TextReader
from avrec.features.speech import SpeechResult, WhisperSpeech
from avrec.features.text import E5TextEncoder

__all__ = [
    "ENCODERS",
    "AudioDescription",
    "AudioFeatures",
    "CLIPEncoder",
    "E5TextEncoder",
    "EfficientNetLite0",
    "Encoder",
    "ImageOutput",
    "OCRResult",
    "SpeechResult",
    "TextReader",
    "WhisperSpeech",
    "create_encoder",
    "imagenet_label",
    "l2_normalise",
    "register_encoder",
]
