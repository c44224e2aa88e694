"""The media stage of ``avrec analyze``: key frames, covers, the audio track and what the
models make of them, one item at a time, in whichever process runs it (this one, a local
process pool, or a Ray actor: each keeps one :class:`MediaAnalyzer`, so models load once)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from avrec.config import ContentConfig
from avrec.errors import ConfigError, MediaError, StoreError
from avrec.features.base import create_encoder, l2_normalise

__all__ = [
    "ANALYZER_VERSION",
    "MEDIA_KINDS",
    "MediaAnalyzer",
    "analyze_isolated",
    "cores",
    "crash_result",
    "init_worker",
    "run_in_worker",
    "spawn_context",
    "stable_hash",
]

log = logging.getLogger(__name__)

#: the analyser's own version: part of every cache key
ANALYZER_VERSION = "1"
MEDIA_KINDS = ("video", "audio", "image")


def stable_hash(*parts: object) -> str:
    """A short hash of JSON-able parts (cache keys)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, ensure_ascii=False, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def cores() -> int:
    return max(1, len(os.sched_getaffinity(0)))


class MediaAnalyzer:
    """The media stage: models load on first use, once per process.

    Args:
        config: the ``[content]`` settings.
        threads: CPU threads for the models (default: all cores).
    """

    def __init__(self, config: ContentConfig, threads: int | None = None) -> None:
        self.config = config
        self.threads = threads or cores()
        self._image = None
        self._ocr = None
        self._speech = None
        self._audio = None

    # Versions are read from the classes so that checking the cache loads no model.
    @property
    def version(self) -> str:
        c = self.config
        parts: list[object] = [ANALYZER_VERSION, self.image_encoder.version, c.max_frames]
        parts.append(c.ocr_frames if c.ocr else None)
        parts.append(c.max_audio_seconds)
        if c.ocr:
            from avrec.features.ocr import TextReader

            parts.append(TextReader.version)
        if c.speech:
            from avrec.features.speech import WhisperSpeech

            parts.append(WhisperSpeech.version)
        if c.audio_features:
            from avrec.features.audio import AudioFeatures

            parts.append(AudioFeatures.version)
        return stable_hash(*parts)

    @property
    def image_encoder(self):  # noqa: ANN201
        if self._image is None:
            self._image = create_encoder(self.config.image_encoder, threads=self.threads)
        return self._image

    @property
    def ocr(self):  # noqa: ANN201
        if self._ocr is None:
            from avrec.features.ocr import TextReader

            self._ocr = TextReader(threads=self.threads)
        return self._ocr

    @property
    def speech(self):  # noqa: ANN201
        if self._speech is None:
            from avrec.features.speech import WhisperSpeech

            self._speech = WhisperSpeech(threads=self.threads)
        return self._speech

    @property
    def audio_features(self):  # noqa: ANN201
        if self._audio is None:
            from avrec.features.audio import AudioFeatures

            self._audio = AudioFeatures(max_seconds=self.config.max_audio_seconds)
        return self._audio

    def analyze(self, paths: dict[str, str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Analyse one item's local media files (``video``/``audio``/``image`` -> path).

        Never raises for a bad file: the reason goes to ``result["errors"]``.
        """
        from avrec.media.decode import audio_track, cover_image, key_frames, load_image, probe

        c = self.config
        res: dict[str, Any] = {"errors": [], "timings": {}, "media_seconds": 0.0}
        vectors: dict[str, np.ndarray] = {}
        frames: list[np.ndarray] = []
        covers: list[np.ndarray] = []
        audio: np.ndarray | None = None
        damage: list[str] = []  # decoding that went on past damage in the file
        timings = res["timings"]

        def timed(stage: str, fn: Callable[[], Any]) -> Any:
            t0 = time.perf_counter()
            try:
                return fn()
            finally:
                timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t0

        if "video" in paths:
            path = paths["video"]
            info = None
            try:
                info = timed("decode", lambda: probe(path))
            except MediaError as exc:
                res["errors"].append(f"video: {exc}")
            if info is not None:
                res["duration"] = info.duration
                res["media_seconds"] += info.duration or 0.0
                # each stream on its own: a broken picture must not cost the sound, or back
                if info.has_video:
                    try:
                        kf = timed(
                            "decode",
                            lambda: key_frames(
                                path, max_frames=c.max_frames, size=960, problems=damage
                            ),
                        )
                        frames += [f.image for f in kf]
                    except MediaError as exc:
                        res["errors"].append(f"video: {exc}")
                if info.has_cover:
                    try:
                        cov = timed("decode", lambda: cover_image(path, size=960))
                        if cov is not None:
                            covers.append(cov.image)
                    except MediaError as exc:
                        res["errors"].append(f"cover: {exc}")
                if info.has_audio and "audio" not in paths and (c.speech or c.audio_features):
                    try:
                        audio = timed(
                            "decode",
                            lambda: audio_track(
                                path, max_seconds=c.max_audio_seconds, problems=damage
                            ),
                        )
                    except MediaError as exc:
                        res["errors"].append(f"video: {exc}")
            res["errors"] += [f"video: {path}: corrupt or truncated: {d}" for d in damage]
            damage.clear()
        if "audio" in paths:
            path = paths["audio"]
            try:
                info = timed("decode", lambda: probe(path))
                res.setdefault("duration", info.duration)
                if "video" not in paths:
                    res["media_seconds"] += info.duration or 0.0
                if info.has_cover:
                    cov = timed("decode", lambda: cover_image(path, size=960))
                    if cov is not None:
                        covers.append(cov.image)
                audio = timed(
                    "decode",
                    lambda: audio_track(path, max_seconds=c.max_audio_seconds, problems=damage),
                )
            except MediaError as exc:
                res["errors"].append(f"audio: {exc}")
            res["errors"] += [f"audio: {path}: corrupt or truncated: {d}" for d in damage]
        if "image" in paths:
            try:
                covers.append(timed("decode", lambda: load_image(paths["image"], size=960).image))
            except MediaError as exc:
                res["errors"].append(f"image: {exc}")
        res["frames"] = len(frames)
        res["covers"] = len(covers)

        images = frames + covers
        if images:
            self._images(images, len(frames), res, vectors, timed)
        if audio is not None and len(audio):
            self._audio_stage(audio, res, vectors, timed)
        res["status"] = "ok" if not res["errors"] else ("partial" if vectors else "error")
        return res, vectors

    def _images(self, images, n_frames, res, vectors, timed) -> None:  # noqa: ANN001
        enc = self.image_encoder
        if hasattr(enc, "run"):
            out = timed("image", lambda: enc.run(images))
            vecs, probs = out.vectors, out.probabilities
            mean_p = probs.mean(axis=0)
            top = np.argsort(-mean_p)[:5]
            from avrec.features.image import imagenet_label

            res["labels"] = [
                [imagenet_label(int(i)), round(float(mean_p[i]), 4)]
                for i in top
                if mean_p[i] >= 0.02
            ]
        else:
            vecs = timed("image", lambda: enc.encode(images))
            res["labels"] = []
        parts = []
        if n_frames:
            parts.append(l2_normalise(vecs[:n_frames].mean(axis=0)))
        if len(images) > n_frames:  # a cover or poster weighs as much as all frames together
            parts.append(l2_normalise(vecs[n_frames:].mean(axis=0)))
        vectors["visual"] = l2_normalise(np.sum(parts, axis=0))
        if self.config.ocr:
            picks = _spread(n_frames, self.config.ocr_frames)
            chosen = [images[i] for i in picks] + images[n_frames:]
            if chosen:
                ocr = timed("ocr", lambda: self.ocr.read_frames(chosen))
                res["ocr_text"] = ocr.text

    def _audio_stage(self, audio, res, vectors, timed) -> None:  # noqa: ANN001
        c = self.config
        if c.speech:
            sp = timed("speech", lambda: self.speech.analyze(audio))
            res["transcript"] = sp.transcript
            res["language"] = sp.language
            res["language_probability"] = round(float(sp.language_probability), 4)
            res["speech_ratio"] = round(float(sp.speech_ratio), 4)
            res["speech_segments"] = [
                [round(float(s), 2), round(float(e), 2), t] for s, e, t in sp.segments
            ]
            vectors["audio"] = np.asarray(sp.embedding, np.float32)
        if c.audio_features:
            af = self.audio_features
            desc = timed("audio_features", lambda: af.describe(audio))
            res["audio"] = {
                k: round(float(v), 4)
                for k, v in desc.__dict__.items()
                if k != "vector" and isinstance(v, int | float)
            }
            vectors["audio_signal"] = l2_normalise(af.standardise(desc.vector))


def _spread(n: int, k: int) -> list[int]:
    """``min(n, k)`` indices evenly spread over ``range(n)``."""
    if k <= 0 or n <= 0:
        return []
    if k >= n:
        return list(range(n))
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, num=k)})


# Worker processes keep one MediaAnalyzer each.
_WORKER: MediaAnalyzer | None = None


def init_worker(config_json: str, threads: int) -> None:
    global _WORKER
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    # numpy/librosa BLAS and OpenMP pools too, or N workers oversubscribe the cores
    init_worker.limits = threadpool_limits(threads)  # type: ignore[attr-defined]
    _WORKER = MediaAnalyzer(ContentConfig.model_validate_json(config_json), threads=threads)


def run_in_worker(key: str, paths: dict[str, str]) -> tuple[str, dict[str, Any], dict]:
    assert _WORKER is not None
    res, vecs = analyze_isolated(_WORKER, paths)
    return key, res, vecs


def analyze_isolated(
    media: MediaAnalyzer, paths: dict[str, str]
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """One item's media analysis; a failure on this item marks the item only.

    Failures of the environment (a missing package or model, no memory, a broken store) stop
    the run instead: every item would fail the same way.
    """
    try:
        return media.analyze(paths)
    except (ImportError, MemoryError, ConfigError, StoreError):
        raise
    except Exception as exc:  # noqa: BLE001 - one item's failure must not stop the run
        log.exception("media analysis failed for %s", paths)
        reason = f"analysis failed: {type(exc).__name__}: {exc}"
        return {"errors": [reason], "status": "error", "timings": {}, "retry": True}, {}


def crash_result() -> dict[str, Any]:
    return {
        "errors": ["analysis: the worker process crashed on this item"],
        "status": "error",
        "timings": {},
        "retry": True,
    }


def spawn_context():  # noqa: ANN202
    import multiprocessing as mp

    return mp.get_context("spawn")
