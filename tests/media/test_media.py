"""Decoding real media from ../shared/media and the MicroLens clips."""

from __future__ import annotations

import http.server
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from avrec.errors import MediaError
from avrec.media import MediaSource, audio_track, cover_image, key_frames, load_image, probe

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def media() -> Path:
    here = Path(__file__).resolve().parents[3] / "shared"
    if not (here / "media").is_dir():
        pytest.skip("../shared/media not found")
    return here


def test_probe_codecs(media):
    clip = probe(media / "datasets/microlens-50k/videos/1002.mp4")
    assert clip.has_video and clip.has_audio and abs(clip.duration - 16.37) < 0.05
    assert {s.codec for s in clip.streams} == {"hevc", "aac"}
    web = probe(media / "media/video/big_buck_bunny_0_30.webm")
    assert {s.codec for s in web.streams} == {"vp8", "vorbis"} and abs(web.duration - 30.0) < 0.1
    song = probe(media / "media/audio/Kevin_MacLeod_-_Vibe_Ace.ogg")
    assert song.has_audio and song.has_cover and not song.has_video


@pytest.mark.parametrize(
    "name",
    [
        "datasets/microlens-50k/videos/1002.mp4",
        "datasets/microlens-50k/videos/10034.mp4",
        "media/video/big_buck_bunny_0_30.webm",
    ],
)
def test_key_frames(media, name):
    frames = key_frames(media / name, max_frames=8, size=224)
    assert 3 <= len(frames) <= 8
    times = [f.time for f in frames]
    assert times == sorted(times) and len(set(times)) == len(times)
    for f in frames:
        assert f.image.dtype == np.uint8 and f.image.ndim == 3 and max(f.image.shape[:2]) == 224
    assert frames[0].reason == "shot"
    # frames from different moments of a real clip differ
    assert np.abs(frames[0].image.astype(int) - frames[-1].image.astype(int)).mean() > 5


def test_audio_track_is_16k_mono(media):
    clip = media / "media/audio/198-209-0000.ogg"
    info = probe(clip)
    audio = audio_track(clip)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) / 16_000 - info.duration) < 0.1
    assert 0.01 < float(np.abs(audio).max()) <= 1.0
    aac = audio_track(media / "datasets/microlens-50k/videos/10040.mp4", max_seconds=5)
    assert len(aac) == 5 * 16_000


def test_cover_art_and_images(media):
    cover = cover_image(media / "media/audio/Kevin_MacLeod_-_Vibe_Ace.ogg", size=256)
    assert cover is not None and cover.reason == "cover" and max(cover.image.shape[:2]) == 256
    assert cover_image(media / "media/audio/198-209-0000.ogg") is None
    cat = load_image(media / "media/images/chelsea.png")
    assert cat.image.shape == (300, 451, 3)


def test_corrupt_and_missing_files(media, tmp_path):
    bad = tmp_path / "truncated.mp4"
    data = (media / "datasets/microlens-50k/videos/1002.mp4").read_bytes()
    bad.write_bytes(data[: len(data) // 10])
    with pytest.raises(MediaError, match="truncated.mp4"):
        key_frames(bad)
    junk = tmp_path / "junk.webm"
    junk.write_bytes(b"not a video at all" * 100)
    with pytest.raises(MediaError, match="junk.webm"):
        probe(junk)
    with pytest.raises(MediaError, match="not found"):
        audio_track(tmp_path / "nope.ogg")
    with pytest.raises(MediaError, match="no audio stream"):
        audio_track(media / "media/images/coffee.png")


def test_media_source_roots_and_schemes(media, tmp_path):
    src = MediaSource(roots=[media / "media"])
    assert src.resolve(str(media / "media/images/coffee.png")).name == "coffee.png"
    assert src.resolve(f"file://{media / 'media/images/coffee.png'}").is_file()
    with pytest.raises(MediaError, match="outside the allowed media roots"):
        src.resolve(str(media / "media" / ".." / "STYLE.md"))
    with pytest.raises(MediaError, match="unsupported media URL scheme"):
        src.resolve("ftp://example.org/x.mp4")


def test_media_source_downloads_over_http_with_limits(media, tmp_path):
    served = tmp_path / "www"
    served.mkdir()
    shutil.copy(media / "media/video/big_buck_bunny_432_433.webm", served / "clip.webm")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(served), **kw)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/clip.webm"
        # loopback is internal: allowed here by name, as a platform names its media store
        src = MediaSource(cache_dir=tmp_path / "cache", allowed_hosts=["127.0.0.1"])
        local = src.resolve(url)
        assert local.read_bytes() == (served / "clip.webm").read_bytes()
        assert probe(local).has_video
        assert src.resolve(url) == local  # cached: no second download
        small = MediaSource(
            cache_dir=tmp_path / "cache2", max_bytes=1000, allowed_hosts=["127.0.0.0/8"]
        )
        with pytest.raises(MediaError, match="over the limit"):
            small.resolve(url)
        with pytest.raises(MediaError, match="download failed"):
            src.resolve(f"http://127.0.0.1:{server.server_address[1]}/missing.webm")
    finally:
        server.shutdown()


def test_check_vets_a_reference_without_reading_it(tmp_path):
    """What the API accepts for an item's media: the same rules as the analysis, before the
    file exists, and a null byte is a MediaError, not a ValueError from the OS layer."""
    src = MediaSource(roots=[tmp_path], base_dir=tmp_path)
    assert src.check("later/clip.mp4") == (tmp_path / "later" / "clip.mp4").resolve()
    assert src.check("https://example.org/a.png") is None
    for bad, why in (("/etc/passwd", "outside"), ("ftp://h/a.png", "scheme"),
                     ("a\x00b.png", "control")):  # fmt: skip
        with pytest.raises(MediaError, match=why):
            src.check(bad)
    with pytest.raises(MediaError, match="not found"):
        src.resolve("later/clip.mp4")


class _Handler(http.server.BaseHTTPRequestHandler):
    """Redirects (``/to?<url>``), a slow trickle (``/slow``), a small body (anything else)."""

    def do_GET(self):  # noqa: N802 - the stdlib's name
        if self.path.startswith("/to?"):
            self.send_response(302)
            self.send_header("Location", self.path[4:])
            self.end_headers()
        elif self.path == "/slow":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                for _ in range(1000):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass
        else:
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"hello")

    def log_message(self, *args):
        pass


@pytest.fixture()
def web():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def test_downloads_refuse_internal_addresses(web, tmp_path):
    """Server-side request forgery: a media URL must not reach loopback, private,
    link-local or multicast addresses, by name or by number, unless the host is allowed."""
    src = MediaSource(cache_dir=tmp_path / "c")
    for url in (f"http://127.0.0.1:{web}/a.png", f"http://localhost:{web}/a.png",
                f"http://[::1]:{web}/a.png", "http://169.254.169.254/latest/meta-data/",
                "http://10.0.0.1/a.png", "http://192.168.1.1/a.png", "http://224.0.0.1/a",
                "http://0.0.0.0/a.png", f"http://[::ffff:127.0.0.1]:{web}/a.png"):  # fmt: skip
        with pytest.raises(MediaError, match="not a public address"):
            src.resolve(url)
    assert not any((tmp_path / "c").iterdir())
    allowed = MediaSource(cache_dir=tmp_path / "c", allowed_hosts=["localhost"])
    assert allowed.resolve(f"http://localhost:{web}/a.png").read_bytes() == b"hello"


def test_redirects_are_vetted_on_every_hop(web, tmp_path):
    src = MediaSource(cache_dir=tmp_path / "c", allowed_hosts=["localhost"])
    # to another scheme: refused (urllib would follow ftp://)
    with pytest.raises(MediaError, match="redirected to ftp"):
        src.resolve(f"http://localhost:{web}/to?ftp://localhost/etc/passwd")
    with pytest.raises(MediaError, match="redirected to file"):
        src.resolve(f"http://localhost:{web}/to?file:///etc/passwd")
    # from an allowed host to one that is not: refused at the hop
    with pytest.raises(MediaError, match="not a public address"):
        src.resolve(f"http://localhost:{web}/to?http://127.0.0.1:{web}/a.png")
    # to an allowed one: followed
    assert (
        src.resolve(f"http://localhost:{web}/to?http://localhost:{web}/b.png").read_bytes()
        == b"hello"
    )


def test_a_download_stops_at_its_total_time(web, tmp_path):
    """Each read is quick (a byte every 50 ms), so only a limit on the whole download stops
    a server that trickles forever."""
    src = MediaSource(cache_dir=tmp_path / "c", allowed_hosts=["127.0.0.1"], timeout_s=5,
                      total_s=1.0)  # fmt: skip
    t = time.monotonic()
    with pytest.raises(MediaError, match="over the limit of 1 s"):
        src.resolve(f"http://127.0.0.1:{web}/slow")
    assert time.monotonic() - t < 3.0
    assert not list((tmp_path / "c").glob("*"))
