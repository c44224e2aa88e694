"""CLIP encoder, run offline on a tiny randomly initialised CLIP built by the test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

from avrec.errors import ConfigError, MediaError  # noqa: E402
from avrec.features.clip import CLIPEncoder, save_tiny_clip  # noqa: E402

SIZES = [(50, 80), (224, 224), (300, 120)]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("tiny-clip"), seed=0)


@pytest.fixture(scope="module")
def enc(ckpt: Path) -> CLIPEncoder:
    return CLIPEncoder(str(ckpt), batch_size=16, threads=1, local_files_only=True)


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES]


def _smooth(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = [yy * 255 // h, xx * 255 // w, (xx + yy) * 255 // (h + w)]
    return np.stack(rgb, axis=-1).astype(np.uint8)


def _unit(x: np.ndarray) -> None:
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


def test_encode_images(enc: CLIPEncoder, ckpt: Path, images: list[np.ndarray]) -> None:
    v = enc.encode(images)
    assert v.shape == (3, enc.dim) and v.dtype == np.float32
    _unit(v)
    np.testing.assert_array_equal(v, enc.encode(images))
    fresh = CLIPEncoder(str(ckpt), threads=1, local_files_only=True)
    np.testing.assert_allclose(fresh.encode(images), v, atol=1e-6)
    assert not np.allclose(v[0], v[1])
    assert enc.encode([]).shape == (0, enc.dim)


def test_encode_text(enc: CLIPEncoder) -> None:
    t = enc.encode_text(["a cat", "a dog"])
    assert t.shape == (2, enc.dim) and t.dtype == np.float32
    _unit(t)
    assert not np.allclose(t[0], t[1])
    np.testing.assert_array_equal(enc.encode_queries(["a cat", "a dog"]), t)
    both = enc.encode_text(["a cat", "", "a dog"])
    np.testing.assert_allclose(both[[0, 2]], t, atol=1e-6)
    assert not both[1].any()  # no text, no direction


def test_one_space_and_zero_shot(enc: CLIPEncoder, images: list[np.ndarray]) -> None:
    labels = ["cat", "dog", "car", "tree"]
    img = enc.encode(images)
    txt = enc.encode_text([f"a photo of a {lb}." for lb in labels])
    assert img.shape[1] == txt.shape[1] == enc.dim
    scores = img @ txt.T
    assert scores.shape == (3, 4) and np.all(np.abs(scores) <= 1 + 1e-5)
    best = scores.argmax(axis=1)
    assert all(0 <= b < len(labels) for b in best)
    tags = enc.tag(images, labels, k=2)
    assert [t[0][0] for t in tags] == [labels[b] for b in best]
    for row in tags:
        assert len(row) == 2 and row[0][1] >= row[1][1] > 0
    with pytest.raises(ConfigError):
        enc.tag(images, [])


def test_batches_equal_single_items(ckpt: Path, images: list[np.ndarray]) -> None:
    one = CLIPEncoder(str(ckpt), batch_size=1, threads=1, local_files_only=True)
    two = CLIPEncoder(str(ckpt), batch_size=2, threads=1, local_files_only=True)
    np.testing.assert_allclose(one.encode(images), two.encode(images), atol=1e-5)
    texts = ["a cat", "the photo of a dog on the grass", "x"]
    np.testing.assert_allclose(one.encode_text(texts), two.encode_text(texts), atol=1e-5)


def test_matches_transformers_forward(enc: CLIPEncoder, ckpt: Path, images: list) -> None:
    import torch
    from transformers import AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(str(ckpt), local_files_only=True).eval()

    def feats(out: object) -> np.ndarray:  # a tensor in transformers 4.x, an output object in 5.x
        t = out if isinstance(out, torch.Tensor) else out.pooler_output
        return t.detach().numpy()

    pixels = torch.from_numpy(enc.preprocess(images))
    assert tuple(pixels.shape) == (3, 3, 32, 32)
    with torch.no_grad():
        ref = feats(model.get_image_features(pixel_values=pixels))
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(enc.encode(images), ref, atol=1e-5)

    texts = ["a cat", "a dog playing"]
    tok = AutoTokenizer.from_pretrained(str(ckpt), local_files_only=True)
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = feats(model.get_text_features(**batch))
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(enc.encode_text(texts), ref, atol=1e-5)


def test_preprocessing_matches_clip_processor(enc: CLIPEncoder) -> None:
    pil = pytest.importorskip("PIL.Image")
    try:
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    except ImportError:
        pytest.skip("no PIL image processor in this transformers")
    proc = CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, resample=3
    )
    rng = np.random.default_rng(1)

    def ref(img: np.ndarray) -> np.ndarray:
        return proc(images=[pil.fromarray(img)], return_tensors="np")["pixel_values"]

    # Crop only (shortest side already the size): identical.
    for h, w in [(32, 48), (57, 32), (32, 32)]:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        np.testing.assert_allclose(enc.preprocess([img]), ref(img), atol=1e-6)
    # Resizing: swscale's bicubic vs PIL's agree to about one grey level on smooth images.
    for h, w in SIZES:
        img = _smooth(h, w)
        assert np.abs(enc.preprocess([img]) - ref(img)).max() < 0.05


def test_dim_and_version_read_only_the_config(ckpt: Path) -> None:
    e = CLIPEncoder(str(ckpt), local_files_only=True)
    assert e.dim == 16
    assert e.version.startswith(f"clip:{ckpt}@cfg") and "crop32" in e.version
    assert e._net is None  # weights not loaded


def test_version_changes_with_checkpoint(ckpt: Path, tmp_path: Path) -> None:
    other = save_tiny_clip(tmp_path / "other", seed=0, projection_dim=8)
    a = CLIPEncoder(str(ckpt), local_files_only=True)
    b = CLIPEncoder(str(other), local_files_only=True)
    assert b.dim == 8
    assert a.version.split("@")[1] != b.version.split("@")[1]
    assert a.version == CLIPEncoder(str(ckpt), local_files_only=True).version


def test_unloadable_checkpoints_raise_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="save_pretrained"):
        CLIPEncoder(str(tmp_path / "missing"), local_files_only=True).encode([])
    with pytest.raises(ConfigError, match="config.json"):
        _ = CLIPEncoder(str(tmp_path), local_files_only=True).dim
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ConfigError, match="not 'clip'"):
        _ = CLIPEncoder(str(tmp_path), local_files_only=True).dim
    hub = CLIPEncoder("avrec-test/no-such-clip-model", local_files_only=True)
    with pytest.raises(ConfigError, match="network"):
        hub.encode_text(["a cat"])


def test_bad_images_raise_media_error(enc: CLIPEncoder) -> None:
    with pytest.raises(MediaError):
        enc.encode([np.zeros((10, 10, 2), np.uint8)])
    with pytest.raises(MediaError):
        enc.encode([np.zeros((10, 10, 3), np.float32)])
    gray = enc.encode([np.full((40, 60), 128, np.uint8)])
    assert gray.shape == (1, enc.dim)


def test_offline_default_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("AVREC_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(k, raising=False)
    assert CLIPEncoder("openai/clip-vit-base-patch32").local_files_only is False
    monkeypatch.setenv("AVREC_OFFLINE", "true")
    assert CLIPEncoder("openai/clip-vit-base-patch32").local_files_only is True
    monkeypatch.delenv("AVREC_OFFLINE")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert CLIPEncoder("openai/clip-vit-base-patch32").local_files_only is True
    assert CLIPEncoder("x/y", local_files_only=False).local_files_only is False
