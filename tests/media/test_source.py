"""Media references resolved to local files: faults of the file system (issue #16)."""

from __future__ import annotations

import pytest

from avrec.errors import MediaError
from avrec.media.source import MediaSource


def test_a_symlink_loop_is_a_media_error(tmp_path):
    """Bug #16: ``Path.resolve`` raised ``RuntimeError: Symlink loop`` for a loop inside a
    media root, which is no MediaError, so ``avrec analyze`` stopped for every item. The
    message names the reference as given, not the paths the resolution went through."""
    (tmp_path / "a.png").symlink_to(tmp_path / "b.png")
    (tmp_path / "b.png").symlink_to(tmp_path / "a.png")
    src = MediaSource(roots=[tmp_path], base_dir=tmp_path)
    refs = ("a.png", str(tmp_path / "b.png"), "a.png/in.png", f"file://{tmp_path / 'a.png'}")
    for ref in refs:
        for call in (src.check, src.resolve):
            with pytest.raises(MediaError) as got:
                call(ref)
            assert str(got.value) == f"{ref.removeprefix('file://')}: symlink loop"


def test_a_root_that_loops_is_a_media_error(tmp_path):
    (tmp_path / "root").symlink_to(tmp_path / "root")
    (tmp_path / "ok.png").write_bytes(b"x")
    src = MediaSource(roots=[tmp_path / "root"])
    with pytest.raises(MediaError, match="symlink loop"):
        src.resolve(str(tmp_path / "ok.png"))


def test_a_name_too_long_is_a_media_error(tmp_path):
    """ENAMETOOLONG (already a MediaError) names no server path either."""
    src = MediaSource(roots=[tmp_path], base_dir=tmp_path)
    ref = "x" * 300 + ".png"
    with pytest.raises(MediaError) as got:
        src.resolve(ref)
    assert str(got.value).startswith(f"{ref}: ") and str(tmp_path) not in str(got.value)
