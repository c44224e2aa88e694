"""On-screen text: OCR of key frames and covers with RapidOCR (PP-OCRv4 ONNX models, Apache-2.0).

Titles, captions and subtitles burnt into a video say a lot about it, in Chinese as often as in
English. :class:`TextReader` runs the PP-OCRv4 text detector and the Chinese + English recogniser
that ship inside the ``rapidocr-onnxruntime`` wheel (no download). Frames are downscaled so that
their longer side is at most ``max_side`` pixels before detection (a 1280 x 720 frame takes about
0.2 s on 2 cores at 960), and the detector is told not to upscale them again. The text-angle
classifier is skipped: text in video frames is upright, and the classifier can flip it wrongly.

Detected boxes are put in reading order (rows top to bottom, boxes in a row left to right);
``OCRResult.text`` joins the boxes of a row with a space and rows with newlines.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from avrec.errors import DataError

__all__ = ["OCRLine", "OCRResult", "TextReader"]

_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class OCRLine:
    """One detected text box: its text, recognition confidence (0..1) and corners.

    ``box`` holds the four corners ``(x, y)`` in pixels of the image as given (clockwise from
    the top left).
    """

    text: str
    score: float
    box: tuple[tuple[float, float], ...]


@dataclass
class OCRResult:
    """The text of one image (or of one video's frames), in reading order."""

    text: str
    lines: list[OCRLine] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.text)


def normalise_text(text: str) -> str:
    """Whitespace runs collapsed to one space, ends stripped."""
    return _SPACE.sub(" ", text).strip()


def _to_bgr(img: np.ndarray) -> np.ndarray:
    """Any grayscale / RGB / RGBA array as contiguous BGR ``uint8`` (what RapidOCR reads)."""
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (2, 3, 4)):
        raise DataError(f"not an image: array of shape {a.shape}")
    if a.dtype != np.uint8:
        a = a.astype(np.float32)
        if a.size and np.issubdtype(img.dtype, np.floating) and float(a.max()) <= 1.0:
            a = a * 255.0  # floats in 0..1
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.ndim == 2:
        rgb = np.repeat(a[:, :, None], 3, axis=2)
    elif a.shape[2] in (2, 4):  # gray + alpha, RGBA: composite onto a contrasting background
        colour = a[:, :, :-1].astype(np.float32)
        if colour.shape[2] == 1:
            colour = np.repeat(colour, 3, axis=2)
        alpha = a[:, :, -1:].astype(np.float32) / 255.0
        opaque = alpha[:, :, 0] > 0.5
        bright = float(colour[opaque].mean()) if opaque.any() else 0.0
        background = 0.0 if bright > 127 else 255.0  # light text on black, dark text on white
        rgb = (colour * alpha + background * (1.0 - alpha)).round().astype(np.uint8)
    else:
        rgb = a
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _rows(lines: list[OCRLine]) -> list[list[OCRLine]]:
    """Boxes grouped into rows (vertical overlap with the row), rows top to bottom."""

    def top(ln: OCRLine) -> float:
        return min(p[1] for p in ln.box)

    def bottom(ln: OCRLine) -> float:
        return max(p[1] for p in ln.box)

    rows: list[list[OCRLine]] = []
    for ln in sorted(lines, key=lambda ln: (top(ln) + bottom(ln)) / 2):
        centre = (top(ln) + bottom(ln)) / 2
        if rows:
            row = rows[-1]
            r_top = min(top(x) for x in row)
            r_bottom = max(bottom(x) for x in row)
            if r_top <= centre <= r_bottom:
                row.append(ln)
                continue
        rows.append([ln])
    return [sorted(row, key=lambda ln: min(p[0] for p in ln.box)) for row in rows]


def _result(lines: list[OCRLine]) -> OCRResult:
    rows = _rows(lines)
    text = "\n".join(" ".join(ln.text for ln in row) for row in rows)
    return OCRResult(text, [ln for row in rows for ln in row])


class TextReader:
    """OCR of on-screen text (Chinese and English) in frames and cover images.

    Args:
        threads: ONNX Runtime intra-op threads (default: the cores this process may use).
        min_score: recognised boxes below this confidence are dropped.
        max_side: larger images are downscaled to this longer side before OCR.
    """

    name: ClassVar[str] = "rapidocr"
    version: str = "rapidocr-onnxruntime-1.4.4/ch-PP-OCRv4-det-rec/no-cls"

    def __init__(
        self, threads: int | None = None, min_score: float = 0.5, max_side: int = 960
    ) -> None:
        self.threads = threads or max(1, len(os.sched_getaffinity(0)))
        self.min_score = float(min_score)
        self.max_side = int(max_side)
        # The settings change what is read, so they are part of an instance's version.
        self.version = f"{type(self).version}/max-side-{self.max_side}/min-score-{self.min_score:g}"
        self._ocr: Any = None

    def __repr__(self) -> str:
        return f"TextReader({self.name}, version={self.version})"

    def _engine(self) -> Any:
        if self._ocr is None:
            from rapidocr_onnxruntime import RapidOCR

            _no_spinning()

            # RapidOCR ignores thread counts above os.cpu_count().
            threads = min(self.threads, os.cpu_count() or 1)
            self._ocr = RapidOCR(
                text_score=self.min_score,
                use_cls=False,
                intra_op_num_threads=threads,
                inter_op_num_threads=1,
                # "max": the detector never upscales; with large max_side it caps at 1500-2000.
                det_limit_type="max",
                det_limit_side_len=self.max_side,
            )
        return self._ocr

    def read_one(self, image: np.ndarray) -> OCRResult:
        """The text of one image (grayscale, RGB or RGBA array; ``uint8`` or floats in 0..1).

        Raises:
            DataError: the array is not an image.
        """
        import cv2

        bgr = _to_bgr(image)
        h, w = bgr.shape[:2]
        if h < 4 or w < 4:
            return OCRResult("", [])
        scale = 1.0
        if max(h, w) > self.max_side:
            scale = self.max_side / max(h, w)
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
        found, _ = self._engine()(bgr, use_cls=False)
        lines = []
        for box, text, score in found or []:
            text = normalise_text(str(text))
            if not text or float(score) < self.min_score:
                continue
            corners = tuple((float(x) / scale, float(y) / scale) for x, y in box)
            lines.append(OCRLine(text, float(score), corners))
        return _result(lines)

    def read(self, images: Sequence[np.ndarray]) -> list[OCRResult]:
        """One :class:`OCRResult` per image; an image without text gives an empty result."""
        return [self.read_one(im) for im in images]

    def read_frames(self, images: Sequence[np.ndarray]) -> OCRResult:
        """The text of several frames of one video, each row of text kept once.

        A caption or logo shown on many frames appears once, at its first occurrence (frames in
        the order given, rows in reading order within a frame). Rows (the boxes side by side on
        one line) are compared after collapsing whitespace and ignoring case; of repeated rows
        the reading with the best mean confidence is kept.
        """
        order: list[str] = []
        best: dict[str, tuple[float, str, list[OCRLine]]] = {}
        for result in self.read(images):
            for row in _rows(result.lines):
                text = normalise_text(" ".join(ln.text for ln in row))
                key = text.casefold()
                score = float(np.mean([ln.score for ln in row]))
                if key not in best:
                    order.append(key)
                    best[key] = (score, text, row)
                elif score > best[key][0]:
                    best[key] = (score, text, row)
        text = "\n".join(best[k][1] for k in order)
        return OCRResult(text, [ln for k in order for ln in best[k][2]])


def _no_spinning() -> None:
    """Make RapidOCR's onnxruntime sessions sleep instead of spin between calls.

    onnxruntime's worker threads busy-wait after each run by default, taking the CPU from the
    next model in the pipeline (Whisper, the image model); measured on 2 cores it costs a few
    percent of every other stage. RapidOCR builds its session options itself, so the hook wraps
    that builder once.
    """
    try:
        from rapidocr_onnxruntime.utils import infer_engine
    except ImportError:  # a RapidOCR layout without it: keep its defaults
        return
    cls = getattr(infer_engine, "OrtInferSession", None)
    build = getattr(cls, "_init_sess_opts", None)
    if build is None or getattr(build, "_avrec_no_spin", False):
        return

    def init_sess_opts(config):  # noqa: ANN001, ANN202
        opts = build(config)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return opts

    init_sess_opts._avrec_no_spin = True  # type: ignore[attr-defined]
    cls._init_sess_opts = staticmethod(init_sess_opts)
