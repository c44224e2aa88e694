from __future__ import annotations

import difflib
import subprocess
from pathlib import Path

import numpy as np
import pytest

from avrec.features.ocr import OCRResult, TextReader

SHARED = Path(__file__).resolve().parents[3] / "shared"
KNOWN_CJK_FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
CHINESE = "我喜欢节奏感强的电子音乐"
ENGLISH = "Relaxing Piano Music"


def _cjk_font() -> str | None:
    # fc-list, not fc-match: fc-match always answers, with a Latin font if no CJK one exists.
    try:
        out = subprocess.run(
            ["fc-list", ":lang=zh", "file"], capture_output=True, text=True, timeout=10
        ).stdout
        files = sorted(line.strip().rstrip(":") for line in out.splitlines() if line.strip())
    except (OSError, subprocess.SubprocessError):
        files = []
    if files:
        return files[0]
    return str(KNOWN_CJK_FONT) if KNOWN_CJK_FONT.is_file() else None


@pytest.fixture(scope="module")
def font():
    from PIL import ImageFont

    path = _cjk_font()
    if path is None:
        pytest.skip("no CJK font installed (fc-list :lang=zh is empty; apt: fonts-wqy-microhei)")
    return lambda size: ImageFont.truetype(path, size)


@pytest.fixture(scope="module")
def reader():
    return TextReader()


def _frame(font, lines, size=(1280, 720), bg=(30, 60, 90), fg=(255, 255, 255)) -> np.ndarray:
    """A frame with text drawn at ``(x, y, text)`` positions (40 px font)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", size, bg)
    draw = ImageDraw.Draw(img)
    for x, y, text in lines:
        draw.text((x, y), text, font=font(40), fill=fg)
    return np.asarray(img)


def _similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b).ratio()


def _chinese_ok(text: str) -> bool:
    return any(_similarity(line.replace(" ", ""), CHINESE) >= 0.85 for line in text.splitlines())


def test_reads_chinese_and_english_caption(reader, font):
    frame = _frame(font, [(100, 500, CHINESE), (100, 580, ENGLISH)])
    (result,) = reader.read([frame])
    assert isinstance(result, OCRResult)
    assert _chinese_ok(result.text), result.text
    assert all(w in result.text.lower() for w in ENGLISH.lower().split()), result.text
    lines = result.text.splitlines()
    assert len(lines) == 2 and "piano" in lines[1].lower()  # top to bottom
    assert len(result.lines) == 2
    for line in result.lines:
        assert line.score >= reader.min_score
        xs = [p[0] for p in line.box]
        ys = [p[1] for p in line.box]
        # boxes are in the coordinates of the full-size frame, not the downscaled one
        assert 60 <= min(xs) <= 140 and 460 <= min(ys) <= 640 and max(xs) <= 1280


def test_reading_order_rows_then_left_to_right(reader, font):
    frame = _frame(font, [(700, 100, "Second"), (100, 100, "First"), (100, 300, "Third")])
    result = reader.read_one(frame)
    assert result.text.lower().split() == ["first", "second", "third"]
    assert result.text.count("\n") == 1  # two rows


def test_grayscale_rgba_and_float_inputs(reader, font):
    from PIL import Image, ImageDraw

    frame = _frame(font, [(50, 80, ENGLISH)], size=(640, 240))
    gray = np.asarray(Image.fromarray(frame).convert("L"))
    assert "piano" in reader.read_one(gray).text.lower()
    assert "piano" in reader.read_one(gray[:, :, None]).text.lower()
    assert "piano" in reader.read_one(frame.astype(np.float32) / 255).text.lower()
    for fill in ((0, 0, 0, 255), (255, 255, 255, 255)):  # dark or light text on transparency
        rgba = Image.new("RGBA", (640, 240), (0, 0, 0, 0))
        ImageDraw.Draw(rgba).text((50, 80), ENGLISH, font=font(40), fill=fill)
        assert "piano" in reader.read_one(np.asarray(rgba)).text.lower()


def test_images_without_text_give_empty_results(reader):
    rng = np.random.default_rng(0)
    images = [
        np.zeros((720, 1280, 3), np.uint8),
        np.full((50, 50, 3), 200, np.uint8),
        np.zeros((1, 1, 3), np.uint8),
        np.zeros((0, 0, 3), np.uint8),
        np.zeros((3, 600), np.uint8),
        rng.integers(0, 255, (360, 640, 3), dtype=np.uint8),
    ]
    results = reader.read(images)
    assert len(results) == len(images)
    assert all(r.text == "" and r.lines == [] and not r for r in results)


def test_read_frames_keeps_each_caption_once(reader, font):
    caption = (100, 600, "Relaxing   Piano Music")
    frames = [
        _frame(font, [caption]),
        _frame(font, [caption], bg=(60, 30, 30)),
        _frame(font, [(100, 100, "Chapter One"), caption]),
        _frame(font, [caption]),
    ]
    result = reader.read_frames(frames)
    lines = result.text.splitlines()
    assert sum("piano" in ln.lower() for ln in lines) == 1, result.text
    assert sum("chapter" in ln.lower() for ln in lines) == 1, result.text
    assert len(lines) == 2
    assert lines[0].lower() == "relaxing piano music"  # whitespace normalised, first seen first
    assert reader.read_frames([]).text == ""


def test_a_720p_frame_with_a_caption(reader, font):
    """Speed is measured in benchmarks/content_speed.py, not here."""
    frame = _frame(font, [(100, 560, CHINESE), (100, 630, ENGLISH)])
    result = reader.read_one(frame)
    assert _chinese_ok(result.text)
    assert all(0 <= x <= 1280 and 0 <= y <= 720 for ln in result.lines for x, y in ln.box)


@pytest.mark.realdata
def test_photo_without_text(reader):
    from avrec.media import load_image

    path = SHARED / "media/images/chelsea.png"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    (result,) = reader.read([load_image(path).image])
    assert len(result.text) <= 10, result.text  # the cat: little or no text
