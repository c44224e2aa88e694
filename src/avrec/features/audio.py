"""Audio descriptors with librosa: timbre, harmony, spectral shape, loudness and rhythm.

No model and no training: a clip's 16 kHz mono waveform becomes a fixed vector of frame
statistics plus a few named values a person can read (tempo, loudness, brightness...).

One magnitude STFT (1024-sample window, 512 hop: 64 ms frames every 32 ms) is computed once and
every spectral feature is derived from it (and a 64-band mel spectrogram from it), so a clip is
analysed at several hundred times real time on 2 cores. Long clips are not analysed whole:
``max_seconds`` of audio are taken as four evenly spaced windows (start, middle, end), which
describes a track better than its first two minutes.

The raw vector (``AudioDescription.vector``, :data:`FEATURES` names its entries):

==========================  ==  ===================================================
MFCC 1-20 mean / std        40  timbre (from the log mel spectrogram)
chroma mean                 12  pitch-class profile (tuning fixed at A440)
centroid, bandwidth,         8  spectral shape, mean and std of each (Hz, Hz, Hz, 0..1)
rolloff, flatness
spectral contrast mean       7  peak/valley dB per octave band from 100 Hz
zero-crossing rate           2  mean, std
RMS                          2  mean, std (linear)
tempo                        1  BPM (autocorrelation tempogram, refined)
onset strength mean          1  spectral flux of the log mel spectrogram
percussive ratio             1  share of mel energy that median-filter HPSS calls percussive
silence ratio                1  share of frames that are silent
==========================  ==  ===================================================

``encode`` scales this without fitting anything: each entry is centred and divided by a fixed,
documented typical range for speech and music at 16 kHz (:data:`_CENTRE`, :data:`_SCALE`; RMS,
flatness and tempo are taken in log), clipped to +-4 so no entry can dominate, and each group is
weighted by ``1 / sqrt(group size)`` so that, say, the 20 MFCC means together count as much as
the tempo rather than twenty times as much. The result is L2-normalised; empty, too short
(< 0.1 s) or digitally silent audio gives a zero vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from avrec.errors import ConfigError
from avrec.features.base import Encoder, l2_normalise, register_encoder

__all__ = ["FEATURES", "AudioDescription", "AudioFeatures"]

N_FFT = 1024
HOP = 512
N_MELS = 64
N_MFCC = 20
N_BANDS = 6  # spectral contrast: 7 values (6 octave bands from 100 Hz + the rest)
MIN_SECONDS = 0.1
WINDOWS = 4  # evenly spaced analysis windows for clips longer than max_seconds
SILENCE_DB = -60.0  # a frame quieter than this (dBFS) is silent ...
SILENCE_BELOW_PEAK_DB = 40.0  # ... and so is one this far below the clip's loud frames
FLOOR_DB = -100.0  # loudness of digital silence

_CHROMA = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
_SPECTRAL = ["centroid", "bandwidth", "rolloff", "flatness"]

FEATURES: list[str] = (
    [f"mfcc{i}_mean" for i in range(1, N_MFCC + 1)]
    + [f"mfcc{i}_std" for i in range(1, N_MFCC + 1)]
    + [f"chroma_{c}" for c in _CHROMA]
    + [f"{s}_{stat}" for s in _SPECTRAL for stat in ("mean", "std")]
    + [f"contrast{i}" for i in range(1, N_BANDS + 2)]
    + ["zcr_mean", "zcr_std", "rms_mean", "rms_std", "tempo", "onset_mean"]
    + ["percussive_ratio", "silence_ratio"]
)
"""Names of the entries of the raw vector, in order."""

_GROUPS: list[tuple[str, int]] = [
    ("mfcc_mean", N_MFCC),
    ("mfcc_std", N_MFCC),
    ("chroma", 12),
    ("spectral", 8),
    ("contrast", N_BANDS + 1),
    ("zcr", 2),
    ("rms", 2),
    ("tempo", 1),
    ("onset", 1),
    ("percussive", 1),
    ("silence", 1),
]


def _typical() -> tuple[np.ndarray, np.ndarray]:
    """Centre and scale of each raw entry: typical values of speech and music at 16 kHz.

    MFCCs of the log mel spectrogram (dB, orthonormal DCT): c1 is the overall log energy
    (about -600 for quiet, -100 for loud audio), higher coefficients shrink roughly as 1/i.
    Chroma is centred on the clip's own mean (in :meth:`AudioFeatures.standardise`), so only
    its shape counts. Flatness is compared in log10, RMS and tempo in log2 (octaves).
    """
    centre: list[float] = []
    scale: list[float] = []
    # MFCC means: c1 is log energy; c2 the spectral tilt; higher ones shrink with the index.
    centre += [-300.0, 50.0] + [0.0] * (N_MFCC - 2)
    scale += [100.0, 50.0] + [max(40.0 / (i - 1), 6.0) for i in range(3, N_MFCC + 1)]
    # MFCC stds: spread over time; c1 (loudness) varies the most.
    centre += [60.0, 25.0] + [10.0] * (N_MFCC - 2)
    scale += [40.0, 12.0] + [5.0] * (N_MFCC - 2)
    # chroma (after subtracting the clip's mean over pitch classes)
    centre += [0.0] * 12
    scale += [0.1] * 12
    # centroid, bandwidth, rolloff (Hz) mean and std; flatness mean and std as log10
    centre += [1500.0, 600.0, 1500.0, 400.0, 3000.0, 1500.0, -2.0, -1.5]
    scale += [800.0, 400.0, 400.0, 200.0, 1500.0, 700.0, 0.7, 0.5]
    # spectral contrast (dB) per band, low to high
    centre += [15.0, 10.0, 15.0, 18.0, 22.0, 24.0, 30.0]
    scale += [5.0] * N_BANDS + [10.0]
    # zcr mean, std
    centre += [0.1, 0.07]
    scale += [0.06, 0.05]
    # rms mean, std: log2 of the linear values; 0.05 ~ -26 dBFS
    centre += [np.log2(0.05), np.log2(0.02)]
    scale += [2.0, 2.0]
    # tempo: log2(bpm / 110), one octave per unit
    centre += [0.0]
    scale += [1.0]
    # onset strength mean, percussive ratio, silence ratio
    centre += [2.2, 0.35, 0.1]
    scale += [1.0, 0.2, 0.2]
    return np.array(centre, np.float64), np.array(scale, np.float64)


_CENTRE, _SCALE = _typical()
_WEIGHT = np.concatenate([np.full(n, 1.0 / np.sqrt(n)) for _, n in _GROUPS])
assert len(_CENTRE) == len(_SCALE) == len(_WEIGHT) == len(FEATURES)


@dataclass
class AudioDescription:
    """Named, human-readable values of a clip, and its raw feature vector.

    Attributes:
        duration_s: length of the whole clip in seconds (not only the analysed part).
        tempo_bpm: estimated tempo (0 when it cannot be estimated; speech gets a number too).
        loudness_db: RMS level of the analysed audio in dBFS (0 = full-scale square wave, a
            loud master is about -10, speech recordings -20 to -30, silence -100).
        energy: 0..1; the mean of three parts: loudness (-50..-5 dBFS mapped to 0..1), onset
            strength (1..3.5 mapped to 0..1: how much and how sharply the sound changes) and
            brightness (centroid 500..3500 Hz mapped to 0..1). Loud, busy, bright music is near
            1, a quiet solo instrument near 0.
        brightness: mean spectral centroid in Hz.
        percussiveness: 0..1, share of the energy that harmonic/percussive separation (median
            filters over the mel spectrogram) assigns to percussive sounds.
        silence_ratio: 0..1, share of frames quieter than -60 dBFS or 40 dB below the clip's
            loud (95th percentile) frames.
        vector: the raw features, not normalised (:data:`FEATURES` names them).
    """

    duration_s: float
    tempo_bpm: float
    loudness_db: float
    energy: float
    brightness: float
    percussiveness: float
    silence_ratio: float
    vector: np.ndarray


def _windows(audio: np.ndarray, limit: int | None) -> list[np.ndarray]:
    size = max(limit // WINDOWS, 4 * N_FFT) if limit else 0
    if limit is None or len(audio) <= max(limit, WINDOWS * size):
        return [audio]
    starts = np.linspace(0, len(audio) - size, WINDOWS).astype(int)
    return [audio[s : s + size] for s in starts]


def _refine_tempo(onset: np.ndarray, bpm: float, frame_rate: float) -> float:
    """``bpm`` made finer than the frame grid: parabolic interpolation of the onset envelope's
    autocorrelation around the lag that ``bpm`` corresponds to (at 31 frames/s, 120 BPM lies
    between the lags of 117 and 125 BPM)."""
    lag = int(round(60.0 * frame_rate / bpm))
    x = onset - onset.mean()
    if lag < 2 or lag + 1 >= len(x):
        return bpm
    n = len(x)
    spec = np.fft.rfft(x, 2 * n)
    ac = np.fft.irfft(np.abs(spec) ** 2)[: lag + 2]
    a, b, c = ac[lag - 1], ac[lag], ac[lag + 1]
    curve = a - 2 * b + c
    if curve >= 0 or b < max(a, c):  # not a peak: keep the grid value
        return bpm
    offset = 0.5 * (a - c) / curve
    return float(60.0 * frame_rate / (lag + offset))


def _clip01(x: float) -> float:
    return float(min(max(x, 0.0), 1.0))


@register_encoder
class AudioFeatures(Encoder):
    """Hand-made audio descriptors: ``describe(audio)`` and ``encode(batch)`` of waveforms.

    Args:
        max_seconds: analyse at most this much audio, as four evenly spaced windows (``None``:
            all of it).
        sample_rate: sample rate of the waveforms passed in (mono float32 in [-1, 1]); at least
            14 kHz, as the top contrast band reaches 6.4 kHz.

    Raises:
        ConfigError: a sample rate below 14 kHz, or ``max_seconds`` not positive.
    """

    name = "librosa-stats"
    modality = "audio"
    dim = len(FEATURES)
    version = "librosa-stats-1/stft1024-hop512-mel64/typical-range-scaling"

    def __init__(self, max_seconds: float | None = 120, sample_rate: int = 16_000) -> None:
        if sample_rate < 14_000:
            raise ConfigError(f"sample_rate must be at least 14000 Hz, not {sample_rate}")
        if max_seconds is not None and max_seconds <= 0:
            raise ConfigError(f"max_seconds must be positive or None, not {max_seconds}")
        self.max_seconds = max_seconds
        self.sample_rate = int(sample_rate)

    def _empty(self, duration: float) -> AudioDescription:
        return AudioDescription(duration, 0.0, FLOOR_DB, 0.0, 0.0, 0.0, 1.0, np.zeros(self.dim))

    def describe(self, audio: np.ndarray) -> AudioDescription:
        """Named values and the raw vector of one mono waveform.

        Audio shorter than 0.1 s, and digital silence, give zeros (silence ratio 1, loudness
        -100 dBFS).
        """
        import librosa

        sr = self.sample_rate
        y = np.nan_to_num(np.asarray(audio, dtype=np.float32).reshape(-1))
        duration = len(y) / sr
        if len(y) < MIN_SECONDS * sr or float(np.abs(y).max()) < 1e-5:
            return self._empty(duration)  # too short, or digital silence
        limit = int(self.max_seconds * sr) if self.max_seconds else None
        parts = _windows(y, limit)

        # One STFT per window, frames side by side; everything spectral derives from it.
        S = np.hstack(
            [np.abs(librosa.stft(p, n_fft=N_FFT, hop_length=HOP, center=True)) for p in parts]
        )
        power = S**2
        mel = librosa.feature.melspectrogram(S=power, sr=sr, n_fft=N_FFT, n_mels=N_MELS)
        log_mel = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)
        mfcc = librosa.feature.mfcc(S=log_mel, n_mfcc=N_MFCC)
        chroma = librosa.feature.chroma_stft(S=power, sr=sr, n_fft=N_FFT, tuning=0.0)
        spectral = [
            librosa.feature.spectral_centroid(S=S, sr=sr, n_fft=N_FFT),
            librosa.feature.spectral_bandwidth(S=S, sr=sr, n_fft=N_FFT),
            librosa.feature.spectral_rolloff(S=S, sr=sr, n_fft=N_FFT),
            librosa.feature.spectral_flatness(S=S),
        ]
        contrast = librosa.feature.spectral_contrast(
            S=S, sr=sr, n_fft=N_FFT, fmin=100.0, n_bands=N_BANDS
        )
        zcr = np.hstack(
            [
                librosa.feature.zero_crossing_rate(p, frame_length=N_FFT, hop_length=HOP)
                for p in parts
            ]
        )
        rms = librosa.feature.rms(S=S, frame_length=N_FFT)[0]
        onset = librosa.onset.onset_strength(S=log_mel, sr=sr, hop_length=HOP)
        tempo = 0.0
        if len(onset) > 8 and float(onset.max()) > 0:
            tempo = float(librosa.feature.tempo(onset_envelope=onset, sr=sr, hop_length=HOP)[0])
            tempo = _refine_tempo(onset, tempo, sr / HOP) if tempo > 0 else 0.0
        harmonic, percussive = librosa.decompose.hpss(mel, kernel_size=17)
        total = float(harmonic.sum() + percussive.sum())
        percussive_ratio = float(percussive.sum()) / total if total > 0 else 0.0

        rms_db = 20 * np.log10(np.maximum(rms, 1e-5))
        loud = float(np.percentile(rms_db, 95))
        silent = (rms_db < SILENCE_DB) | (rms_db < loud - SILENCE_BELOW_PEAK_DB)
        silence_ratio = float(silent.mean())

        vector = np.concatenate(
            [
                mfcc.mean(axis=1),
                mfcc.std(axis=1),
                chroma.mean(axis=1),
                np.array([f(s) for s in spectral for f in (np.mean, np.std)]),
                contrast.mean(axis=1),
                [zcr.mean(), zcr.std(), rms.mean(), rms.std(), tempo, onset.mean()],
                [percussive_ratio, silence_ratio],
            ]
        ).astype(np.float64)
        vector = np.nan_to_num(vector, nan=0.0, posinf=0.0, neginf=0.0)

        analysed = np.concatenate(parts)
        mean_square = float(np.mean(analysed.astype(np.float64) ** 2))
        loudness = max(10 * np.log10(mean_square), FLOOR_DB) if mean_square > 0 else FLOOR_DB
        brightness = float(vector[FEATURES.index("centroid_mean")])
        onset_mean = float(vector[FEATURES.index("onset_mean")])
        energy = (
            _clip01((loudness + 50.0) / 45.0)
            + _clip01((onset_mean - 1.0) / 2.5)
            + _clip01((brightness - 500.0) / 3000.0)
        ) / 3.0
        return AudioDescription(
            duration_s=float(duration),
            tempo_bpm=tempo,
            loudness_db=float(loudness),
            energy=float(energy),
            brightness=brightness,
            percussiveness=percussive_ratio,
            silence_ratio=silence_ratio,
            vector=vector,
        )

    @staticmethod
    def standardise(vector: np.ndarray) -> np.ndarray:
        """A raw vector scaled by fixed typical ranges and group weights (not normalised)."""
        x = np.asarray(vector, dtype=np.float64).copy()
        if not x.any():
            return np.zeros(len(FEATURES), np.float32)
        chroma = slice(2 * N_MFCC, 2 * N_MFCC + 12)
        x[chroma] -= x[chroma].mean()
        for name in ("rms_mean", "rms_std"):
            i = FEATURES.index(name)
            x[i] = np.log2(max(x[i], 1e-5))
        for name in ("flatness_mean", "flatness_std"):
            i = FEATURES.index(name)
            x[i] = np.log10(max(x[i], 1e-6))
        i = FEATURES.index("tempo")
        x[i] = np.log2(x[i] / 110.0) if x[i] > 0 else 0.0
        z = np.clip((x - _CENTRE) / _SCALE, -4.0, 4.0) * _WEIGHT
        return z.astype(np.float32)

    def encode(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        """``len(batch) x dim`` float32, L2-normalised (zero rows for empty or too short audio)."""
        out = np.zeros((len(batch), self.dim), np.float32)
        for k, audio in enumerate(batch):
            out[k] = self.standardise(self.describe(audio).vector)
        return l2_normalise(out)
