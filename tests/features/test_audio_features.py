from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avrec.errors import ConfigError
from avrec.features.audio import FEATURES, AudioDescription, AudioFeatures

SHARED = Path(__file__).resolve().parents[3] / "shared"
AUDIO = SHARED / "media/audio"
SR = 16_000
SPEECH = ["198-209-0000.ogg", "3436-172162-0000.ogg", "5703-47212-0000.ogg"]
MUSIC = [
    "Kevin_MacLeod_-_Vibe_Ace.ogg",
    "admiralbob77_-_Choice_-_Drum-bass.ogg",
    "Hungarian_Dance_number_5_-_Allegro_in_F_sharp_minor_(string_orchestra).ogg",
]


@pytest.fixture(scope="module")
def enc():
    return AudioFeatures()


def _clicks(bpm: float, seconds: float = 20.0, amplitude: float = 0.5) -> np.ndarray:
    """A click track: 20 ms 1 kHz Hann-windowed bursts every beat."""
    n = int(0.02 * SR)
    click = np.sin(2 * np.pi * 1000 * np.arange(n) / SR) * np.hanning(n) * amplitude
    y = np.zeros(int(seconds * SR), np.float32)
    for t in np.arange(0, seconds, 60.0 / bpm):
        i = int(t * SR)
        y[i : i + n] += click[: len(y) - i]
    return y


def _music_like(seconds: float = 6.0) -> np.ndarray:
    rng = np.random.default_rng(1)
    t = np.arange(int(seconds * SR)) / SR
    tones = sum(0.1 * np.sin(2 * np.pi * f * t) for f in (220, 277, 330))
    return (tones + 0.02 * rng.normal(size=len(t)) + _clicks(100, seconds, 0.3)).astype(np.float32)


def test_dims_unit_norm_and_determinism(enc):
    rng = np.random.default_rng(0)
    batch = [_music_like(), (0.1 * rng.normal(size=3 * SR)).astype(np.float32), _clicks(120, 5)]
    v = enc.encode(batch)
    assert v.shape == (3, enc.dim) and v.dtype == np.float32
    assert enc.dim == len(FEATURES) == 75
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(enc.encode(batch), v)
    np.testing.assert_allclose(enc.encode(batch[1:2])[0], v[1], atol=1e-6)  # batching
    assert enc.modality == "audio" and enc.name == "librosa-stats"


def test_empty_short_and_silent_audio_do_not_crash(enc):
    rng = np.random.default_rng(0)
    batch = [
        np.zeros(0, np.float32),
        (0.3 * rng.normal(size=800)).astype(np.float32),  # 50 ms: too short
        np.zeros(5 * SR, np.float32),  # digital silence
        (1e-4 * rng.normal(size=3 * SR)).astype(np.float32),  # near silence (-80 dBFS)
        np.full(SR, 0.5, np.float32),  # DC
    ]
    v = enc.encode(batch)
    assert np.isfinite(v).all()
    assert not v[:3].any()  # no information: zero vectors
    np.testing.assert_allclose(np.linalg.norm(v[3:], axis=1), 1.0, rtol=1e-5)
    for audio in batch:
        d = enc.describe(audio)
        assert isinstance(d, AudioDescription)
        values = [d.duration_s, d.tempo_bpm, d.loudness_db, d.energy, d.brightness]
        values += [d.percussiveness, d.silence_ratio, *d.vector]
        assert np.isfinite(values).all()
        assert 0 <= d.energy <= 1 and 0 <= d.silence_ratio <= 1 and 0 <= d.percussiveness <= 1
    silent = enc.describe(batch[2])
    assert silent.duration_s == 5.0 and silent.silence_ratio == 1.0 and silent.loudness_db == -100


def test_click_track_tempo(enc):
    d = enc.describe(_clicks(120))
    assert abs(d.tempo_bpm - 120) <= 0.05 * 120, d.tempo_bpm
    assert abs(enc.describe(_clicks(90)).tempo_bpm - 90) <= 0.05 * 90
    assert d.percussiveness > 0.5


def test_loudness_follows_gain(enc):
    y = _music_like()
    loud, quiet = enc.describe(y), enc.describe(0.1 * y)
    assert abs((loud.loudness_db - quiet.loudness_db) - 20.0) < 0.5
    assert -30 < loud.loudness_db < -10
    assert quiet.energy < loud.energy
    assert abs(loud.brightness - quiet.brightness) < 0.01 * loud.brightness
    assert abs(loud.tempo_bpm - quiet.tempo_bpm) < 1.0


def test_bad_settings():
    with pytest.raises(ConfigError):
        AudioFeatures(sample_rate=8000)
    with pytest.raises(ConfigError):
        AudioFeatures(max_seconds=0)


def test_long_audio_is_analysed_in_windows():
    enc = AudioFeatures(max_seconds=4)
    y = np.concatenate([np.zeros(10 * SR, np.float32), _music_like(10)])
    d = enc.describe(y)
    assert d.duration_s == 20.0
    # windows at the start, middle and end: half of them silent, not all (first 4 s) or none
    assert 0.25 < d.silence_ratio < 0.75


@pytest.mark.realdata
def test_speech_clips_resemble_each_other_more_than_music(enc):
    from avrec.media import audio_track

    if not AUDIO.is_dir():
        pytest.skip("../shared/media/audio not found")
    v = enc.encode([audio_track(AUDIO / name) for name in SPEECH + MUSIC])
    sims = v @ v.T
    k = len(SPEECH)
    within = sims[:k, :k][~np.eye(k, dtype=bool)].mean()
    across = sims[:k, k:].mean()
    print(f"\nspeech-speech cosine {within:.2f}, speech-music {across:.2f}")
    assert within > across + 0.2


@pytest.mark.realdata
def test_named_values_of_a_music_clip(enc):
    """Speed is measured in benchmarks/content_speed.py, not here."""
    from avrec.media import audio_track

    path = AUDIO / "Kevin_MacLeod_-_Vibe_Ace.ogg"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    d = enc.describe(audio_track(path))
    assert d.duration_s == pytest.approx(61.5, abs=0.5)
    assert 50 < d.tempo_bpm < 200
    assert -30 < d.loudness_db < -5
    assert d.silence_ratio < 0.1
