from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avrec.features import create_encoder
from avrec.media import key_frames, load_image

SHARED = Path(__file__).resolve().parents[3] / "shared"
pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def enc():
    if not (SHARED / "media").is_dir():
        pytest.skip("../shared/media not found")
    return create_encoder("efficientnet-lite0", batch_size=2)


def test_cat_and_coffee_labels(enc):
    images = [load_image(SHARED / f"media/images/{n}.png").image for n in ("chelsea", "coffee")]
    out = enc.run(images)
    assert out.vectors.shape == (2, 1280)
    np.testing.assert_allclose(np.linalg.norm(out.vectors, axis=1), 1.0, rtol=1e-4)
    np.testing.assert_allclose(out.probabilities.sum(axis=1), 1.0, rtol=1e-4)
    labels = out.top_labels(3)
    assert "cat" in labels[0][0][0]  # Egyptian cat
    assert labels[1][0][0] == "espresso"


def test_similar_images_have_similar_vectors(enc):
    frames = key_frames(SHARED / "media/video/big_buck_bunny_0_30.webm", max_frames=6)
    cat = load_image(SHARED / "media/images/chelsea.png").image
    v = enc.encode([f.image for f in frames] + [cat])
    sims = v @ v.T
    within = sims[:-1, :-1][~np.eye(len(frames), dtype=bool)].mean()
    assert within > sims[-1, :-1].mean()  # frames of one film resemble each other more
