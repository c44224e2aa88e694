"""ZeroShotTagger: scoring, source attribution, limits, vocabulary handling."""

from __future__ import annotations

import numpy as np
import pytest

from avrec.content.tags import Tag, ZeroShotTagger

WORDS = ["cat", "dog", "car", "music"]


class FakeEncoder:
    """A deterministic stand-in for a text encoder.

    The thing under test is the tagger's scoring (softmax, weighting, source attribution,
    filtering), not the encoder, so each known word maps to its own orthogonal unit vector and a
    text to the normalised sum of its words' vectors; unknown words contribute nothing.
    """

    dim = len(WORDS)

    def __init__(self) -> None:
        self.query_calls: list[list[str]] = []
        self.passage_calls: list[list[str]] = []

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, np.float32)
        for w in text.lower().split():
            if w in WORDS:
                v[WORDS.index(w)] += 1.0
        n = np.linalg.norm(v)
        return v / n if n else v

    def encode(self, batch):
        self.passage_calls.append(list(batch))
        return np.stack([self._vec(t) for t in batch]) if batch else np.zeros((0, self.dim))

    def encode_queries(self, batch):
        self.query_calls.append(list(batch))
        return np.stack([self._vec(t) for t in batch]) if batch else np.zeros((0, self.dim))


def _softmax(sims: np.ndarray, t: float) -> np.ndarray:
    e = np.exp((sims - sims.max()) / t)
    return e / e.sum()


@pytest.fixture
def enc() -> FakeEncoder:
    return FakeEncoder()


def _tagger(enc, **kw) -> ZeroShotTagger:
    kw = {"temperature": 0.1, "max_tags": 4, "min_score": 0.0, **kw}
    return ZeroShotTagger(enc, WORDS, **kw)


def test_right_tag_wins_per_item(enc):
    tagger = _tagger(enc, min_score=0.15)
    assert enc.query_calls == [WORDS]  # tags encoded once, on the query side
    assert enc.passage_calls == []
    vecs = enc.encode(["cat", "dog dog", "music"])
    tags = tagger.tag({"text": vecs})
    assert [t[0].tag for t in tags] == ["cat", "dog", "music"]
    assert all(t[0].source == "text" for t in tags)
    expected = _softmax(np.array([1.0, 0.0, 0.0, 0.0]), 0.1)[0]
    assert tags[0][0].score == pytest.approx(expected, rel=1e-5)


def test_probabilities_softmax_and_zero_rows(enc):
    tagger = _tagger(enc, temperature=0.5)
    v = enc.encode(["cat dog", "unknown words"])
    p = tagger.probabilities(v)
    assert p.shape == (2, 4)
    np.testing.assert_allclose(p[0], _softmax(v[0] @ tagger.tag_vectors.T, 0.5), rtol=1e-5)
    assert p[0].sum() == pytest.approx(1.0)
    np.testing.assert_array_equal(p[1], 0.0)


def test_source_with_highest_probability_recorded(enc):
    tagger = _tagger(enc)
    text = enc.encode(["cat"])  # only cat
    ocr = enc.encode(["cat dog"])  # cat and dog equally
    tags = {t.tag: t for t in tagger.tag({"text": text, "ocr": ocr})[0]}
    p_text = _softmax(text[0] @ tagger.tag_vectors.T, 0.1)
    p_ocr = _softmax(ocr[0] @ tagger.tag_vectors.T, 0.1)
    assert tags["cat"].source == "text"
    assert tags["dog"].source == "ocr"
    # score: mean over the two sources the item has
    assert tags["cat"].score == pytest.approx((p_text[0] + p_ocr[0]) / 2, rel=1e-5)
    assert tags["dog"].score == pytest.approx((p_text[1] + p_ocr[1]) / 2, rel=1e-5)
    order = [t.tag for t in tagger.tag({"text": text, "ocr": ocr})[0]]
    assert order[:2] == ["cat", "dog"]


def test_source_weights(enc):
    tagger = _tagger(enc)
    text = enc.encode(["cat"])
    ocr = enc.encode(["cat dog"])
    w = {"text": 1.0, "ocr": 3.0}
    tags = {t.tag: t for t in tagger.tag({"text": text, "ocr": ocr}, weights=w)[0]}
    p_text = _softmax(text[0] @ tagger.tag_vectors.T, 0.1)
    p_ocr = _softmax(ocr[0] @ tagger.tag_vectors.T, 0.1)
    assert tags["cat"].score == pytest.approx((p_text[0] + 3 * p_ocr[0]) / 4, rel=1e-5)
    # ocr's weighted share of "cat" (3 x 0.5) now exceeds text's (1 x 1.0)
    assert tags["cat"].source == "ocr"


def test_absent_source_not_averaged_in(enc):
    tagger = _tagger(enc)
    text = enc.encode(["cat", "cat"])
    ocr = enc.encode(["dog", "nothing known"])  # item 1 has no ocr
    tags = tagger.tag({"text": text, "ocr": ocr})
    alone = tagger.tag({"text": text[1:]})[0]
    assert tags[1][0].tag == "cat"
    assert tags[1][0].score == pytest.approx(alone[0].score, rel=1e-6)
    assert tags[1][0].score > 0.99
    # item 0 splits its evidence between cat and dog
    assert tags[0][0].score == pytest.approx(tags[0][1].score, rel=1e-5)
    assert {tags[0][0].tag, tags[0][1].tag} == {"cat", "dog"}


def test_min_score_and_max_tags(enc):
    v = enc.encode(["cat dog", "cat"])
    top1 = _tagger(enc, max_tags=1).tag({"text": v})
    assert [len(t) for t in top1] == [1, 1]
    both = _tagger(enc, max_tags=3, min_score=0.3).tag({"text": v})
    assert sorted(t.tag for t in both[0]) == ["cat", "dog"]  # ~0.5 each; the rest ~0
    assert [t.tag for t in both[1]] == ["cat"]
    assert all(t.score >= 0.3 for row in both for t in row)
    none = _tagger(enc, min_score=0.6).tag({"text": v})
    assert none[0] == [] and [t.tag for t in none[1]] == ["cat"]
    assert _tagger(enc, max_tags=0).tag({"text": v}) == [[], []]


def test_vocabulary_deduplicated_case_insensitively(enc):
    tagger = ZeroShotTagger(enc, ["Cat", "cat ", "  ", "", None, "CAT", "dog", "Dog"])
    assert tagger.vocabulary == ["Cat", "dog"]  # first spelling kept
    assert enc.query_calls == [["Cat", "dog"]]
    assert tagger.tag_vectors.shape == (2, 4)


def test_zero_rows_give_no_tags(enc):
    tagger = _tagger(enc, min_score=0.0)  # even with no threshold
    v = np.zeros((2, 4), np.float32)
    v[1] = enc.encode(["car"])[0]
    tags = tagger.tag({"text": v, "ocr": np.zeros((2, 4), np.float32)})
    assert tags[0] == []
    assert tags[1][0].tag == "car" and tags[1][0].source == "text"
    assert all(t.score > 0 for t in tags[1])


def test_empty_vocabulary_and_no_sources(enc):
    tagger = ZeroShotTagger(enc, ["", "  "])
    assert tagger.vocabulary == []
    assert enc.query_calls == []  # nothing to encode
    assert tagger.tag_vectors.shape == (0, 4)
    v = enc.encode(["cat", "dog", "car"])
    assert tagger.tag({"text": v}) == [[], [], []]
    assert tagger.probabilities(v).shape == (3, 0)
    assert _tagger(enc).tag({}) == []


def test_custom_encode_function_used(enc):
    calls = []

    def encode(tags):
        calls.append(list(tags))
        return enc.encode_queries(tags)

    ZeroShotTagger(enc, ["cat"], encode=encode)
    assert calls == [["cat"]]


def test_calibration_removes_a_tag_close_to_everything(enc):
    tagger = _tagger(enc)
    # every passage leans to "music"; half are also about cat, half about dog
    rows = [
        np.array([0.8 if i % 2 == 0 else 0.0, 0.0 if i % 2 == 0 else 0.8, 0.0, 1.0])
        for i in range(20)
    ]
    v = np.stack(rows).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    assert [t[0].tag for t in tagger.tag({"text": v[:2]})] == ["music", "music"]
    assert not tagger.calibrate("text", v[:19])  # fewer than min_items rows
    assert not tagger.calibrate("text", np.vstack([v[:19], np.zeros((5, 4))]))  # zeros skipped
    assert tagger.calibrate("text", v)
    np.testing.assert_allclose(tagger.offsets["text"], (v @ tagger.tag_vectors.T).mean(0))
    assert [t[0].tag for t in tagger.tag({"text": v[:2]})] == ["cat", "dog"]
    # other sources are not calibrated
    assert [t[0].tag for t in tagger.tag({"ocr": v[:2]})] == ["music", "music"]


def test_tag_to_dict():
    assert Tag("cat", 0.123456, "text").to_dict() == {
        "tag": "cat",
        "score": 0.1235,
        "source": "text",
    }


def test_real_e5_encoder_tags_match():
    from avrec.features.text import E5TextEncoder

    enc = E5TextEncoder()
    tagger = ZeroShotTagger(enc, ["cat", "piano music", "football"], min_score=0.0)
    passages = enc.encode(
        [
            "a tabby cat sleeping on the sofa",
            "a relaxing piano piece for studying",
            "the striker scored a goal in the final",
        ]
    )
    tags = tagger.tag({"text": passages})
    assert [t[0].tag for t in tags] == ["cat", "piano music", "football"]
    assert all(t[0].score > 0.5 for t in tags)


def test_calibrated_tags_need_more_than_the_catalogue_usually_has(enc):
    """An item about none of the tags gets no tags once the tagger is calibrated."""
    tagger = _tagger(enc)
    catalogue = enc.encode(["cat", "dog", "car", "music", "cat dog", "car music"] * 4)
    assert tagger.calibrate("text", catalogue)
    items = enc.encode(["cat", "cat"])
    # the second item is only faintly related to every tag, less than catalogue items are
    items[1] = np.full(len(WORDS), 0.1, np.float32)
    tags = tagger.tag({"text": items})
    assert tags[0] and tags[0][0].tag == "cat"
    assert tags[1] == []
