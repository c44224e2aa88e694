from __future__ import annotations

import numpy as np
import pytest

from avrec.errors import ConfigError
from avrec.features import create_encoder


@pytest.fixture(scope="module")
def enc():
    return create_encoder("e5-small", batch_size=3)


def test_vectors_are_normalised_and_batched(enc):
    texts = [f"video number {k} about cats" for k in range(7)] + [""]
    v = enc.encode(texts)
    assert v.shape == (8, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v[:7], axis=1), 1.0, rtol=1e-4)
    assert not v[7].any()  # empty text: zero vector
    one = enc.encode(texts[2:3])
    np.testing.assert_allclose(one[0], v[2], atol=1e-5)  # batching does not change vectors


def test_queries_find_matching_items_in_english_and_chinese(enc):
    items = enc.encode(
        [
            "Calm solo piano pieces, soft and slow, for reading and studying",
            "Heavy electronic dance music with a pounding beat and synthesizers",
            "A kitten chases a laser pointer and falls off the sofa",
        ]
    )
    q = enc.encode_queries(
        ["relaxing piano music for studying", "我喜欢节奏感强的电子音乐", "funny cat video"]
    )
    best = (q @ items.T).argmax(axis=1)
    assert best.tolist() == [0, 1, 2]


def test_unknown_encoder():
    with pytest.raises(ConfigError, match="e5-small"):
        create_encoder("clip-huge")
