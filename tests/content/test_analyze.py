"""``avrec analyze`` end to end on real media: what it understands, what it marks, what it skips."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from avrec.config import ContentConfig
from avrec.content.analyze import ContentAnalyzer, ItemInput
from avrec.content.store import ContentStore
from avrec.media.source import MediaSource

SHARED = Path(__file__).resolve().parents[3] / "shared"
MEDIA = SHARED / "media"
CLIPS = SHARED / "datasets" / "microlens-50k" / "videos"
pytestmark = pytest.mark.realdata
AVREC = shutil.which("avrec") or str(Path(sys.executable).parent / "avrec")


def _need_media() -> None:
    if not MEDIA.is_dir() or not CLIPS.is_dir():
        pytest.skip("../shared/media or the MicroLens clips not found")


def catalogue(tmp: Path) -> list[ItemInput]:
    truncated = tmp / "truncated.mp4"
    truncated.write_bytes((CLIPS / "10040.mp4").read_bytes()[:300_000])
    return [
        ItemInput(
            "bunny",
            title="Big Buck Bunny",
            description="A giant rabbit wakes up in the forest",
            tags=["animation"],
            media={"video": str(MEDIA / "video/big_buck_bunny_0_30.webm")},
        ),
        ItemInput(
            "clip", title="校园生活", tags=["funny"], media={"video": str(CLIPS / "1002.mp4")}
        ),
        ItemInput(
            "book",
            title="Chapter two",
            tags=["audiobook"],
            media={"audio": str(MEDIA / "audio/5703-47212-0000.ogg")},
            comments=["I love this narrator, wonderful voice", "great story"],
        ),
        ItemInput(
            "song",
            title="Vibe Ace",
            tags=["music"],
            people=[{"name": "Kevin MacLeod", "role": "artist"}],
            media={"audio": str(MEDIA / "audio/Kevin_MacLeod_-_Vibe_Ace.ogg")},
        ),
        ItemInput(
            "cat",
            title="Chelsea",
            description="Kevin MacLeod's cat on the sofa",
            tags=["cat"],
            media={"image": str(MEDIA / "images/chelsea.png")},
        ),
        ItemInput("broken", title="Broken upload", media={"video": str(truncated)}),
        ItemInput("gone", title="Missing file", media={"video": str(tmp / "nope.mp4")}),
        ItemInput("text", title="Relaxing piano music for studying", tags=["music"]),
    ]


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    _need_media()
    tmp = tmp_path_factory.mktemp("analyze")
    items = catalogue(tmp)
    store = ContentStore(tmp / "content.db")
    analyzer = ContentAnalyzer(ContentConfig(tag_min_items=1), store, MediaSource(), workers=1)
    stages: list[str] = []
    report = analyzer.run(items, progress=lambda s, d, t: stages.append(s))
    yield analyzer, items, report, store, stages, tmp
    store.close()


def info(store: ContentStore, item_id: str) -> dict:
    r = store.item(item_id)
    assert r is not None, item_id
    return r


def test_every_item_is_analysed_and_bad_files_only_mark_their_item(analysed):
    _, items, report, store, stages, _ = analysed
    assert report.total == report.analysed == len(items)
    assert {"media", "text", "assemble"} <= set(stages)
    status = {it.item_id: info(store, it.item_id)["status"] for it in items}
    assert status["broken"] == "partial"
    assert any("corrupt or truncated" in e for e in info(store, "broken")["errors"])
    assert status["gone"] == "error"
    assert any("not found" in e for e in info(store, "gone")["errors"])
    ok = {k for k, v in status.items() if v == "ok"}
    assert ok == {"bunny", "clip", "book", "song", "cat", "text"}
    assert set(report.errors) == {"broken", "gone"}


def test_what_avrec_understood(analysed):
    _, _, _, store, _, _ = analysed
    cat = info(store, "cat")
    assert "cat" in cat["info"]["labels"][0][0]
    assert cat["info"]["tags"][0]["tag"] == "cat"

    book = info(store, "book")["info"]
    assert "with her white paint" in book["transcript"].lower()
    assert book["speech_language"] == "en" and book["language"] == "en"
    assert book["speech_ratio"] > 0.5
    assert book["sentiment"]["count"] == 2 and book["sentiment"]["mean"] > 0.3

    song = info(store, "song")["info"]
    assert song["speech_ratio"] < 0.3
    assert song["audio"]["tempo_bpm"] > 40 and song["audio"]["loudness_db"] < 0
    assert song["frames"] == 0  # the MJPEG cover is not a video frame ...
    assert "visual" in info(store, "song")["vectors"]  # ... but it gives the song a picture

    clip = info(store, "clip")["info"]
    assert clip["frames"] >= 3 and clip["ocr_text"]  # HEVC key frames with Chinese captions
    assert clip["language"] == "zh" or clip["speech_language"] is not None

    # a known person is found in another item's description
    cat_people = info(store, "cat")["info"]["people"]
    assert [p["name"] for p in cat_people] == ["Kevin MacLeod"]
    assert cat_people[0]["credited"] is False and cat_people[0]["roles"] == ["artist"]


def test_vectors_and_fusion(analysed):
    _, items, _, store, _, _ = analysed
    ids = [it.item_id for it in items]
    fused = store.vectors("fused", ids)
    norms = np.linalg.norm(fused, axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-4)
    assert info(store, "bunny")["vectors"].keys() >= {"text", "visual", "audio", "audio_signal"}
    assert info(store, "text")["vectors"].keys() == {"text", "fused"}
    layout = info(store, "bunny")["info"]["fusion_layout"]
    assert [m for m, _, _ in layout] == ["text", "visual", "audio", "audio_signal"]
    assert layout[-1][2] == fused.shape[1]
    # fused cosine = weighted mean of the per-modality cosines (both items have every modality)
    a, b = info(store, "bunny")["vectors"], info(store, "clip")["vectors"]
    w = ContentConfig().fusion_weights
    expected = sum(w[m] * float(a[m] @ b[m]) for m in w) / sum(w.values())
    assert float(a["fused"] @ b["fused"]) == pytest.approx(expected, abs=1e-4)


def test_rerun_analyses_nothing_twice_and_only_what_changed(analysed):
    analyzer, items, _, store, _, _ = analysed
    again = analyzer.run(items)
    assert again.analysed == 0 and again.unchanged == len(items)
    assert again.media_analysed == 0 and again.segments_encoded == 0
    before = info(store, "book")["vectors"]["audio"]
    changed = [
        ItemInput(**{**it.__dict__, "title": "Chapter two, read aloud"})
        if it.item_id == "book"
        else it
        for it in items
    ]
    third = analyzer.run(changed)
    assert third.analysed == 1 and third.unchanged == len(items) - 1
    assert third.media_analysed == 0  # the audio was not analysed again
    np.testing.assert_array_equal(info(store, "book")["vectors"]["audio"], before)


def _media_rows(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=1) as c:
            return c.execute("SELECT COUNT(*) FROM media").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_killed_run_resumes_where_it_stopped(tmp_path):
    """SIGKILL during the media stage; the next run keeps what was committed."""
    _need_media()
    from avrec.workspace import Workspace

    ws = tmp_path / "ws"
    Workspace.init(ws).close()
    cfg = ws / "avrec.toml"
    posters_dir = SHARED / "datasets/movielens-100k/posters"
    cfg.write_text(
        cfg.read_text()
        .replace("speech = true", "speech = false")
        .replace("media_roots = []", f"media_roots = [{str(posters_dir)!r}]")
    )
    posters = sorted(posters_dir.glob("*.jpg"))[:12]
    rows = ["item_id,title,image"] + [f"p{p.stem},Poster {p.stem},{p}" for p in posters]
    (tmp_path / "items.csv").write_text("\n".join(rows) + "\n")
    env = {**os.environ, "COLUMNS": "200"}
    subprocess.run(
        [AVREC, "--workspace", str(ws), "ingest", "items", str(tmp_path / "items.csv")],
        check=True,
        capture_output=True,
        env=env,
    )
    proc = subprocess.Popen(
        [AVREC, "--workspace", str(ws), "analyze"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    db = ws / "content.db"
    deadline = time.time() + 240
    while _media_rows(db) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = _media_rows(db)
    assert 3 <= done_before < len(posters), "the run should have been killed mid-way"

    out = subprocess.run(
        [AVREC, "--workspace", str(ws), "analyze", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["media_cached"] == done_before
    assert report["media_analysed"] == len(posters) - done_before
    with ContentStore(db) as store:
        assert store.status_counts() == {"ok": len(posters)}


@pytest.mark.slow
def test_parallel_workers_give_the_same_results(tmp_path):
    _need_media()
    items = [
        ItemInput(f"p{i}", title=f"Poster {p.stem}", media={"image": str(p)})
        for i, p in enumerate(
            sorted((SHARED / "datasets/movielens-100k/posters").glob("*.jpg"))[:6]
        )
    ] + [ItemInput("bunny", media={"video": str(MEDIA / "video/big_buck_bunny_432_433.webm")})]
    cfg = ContentConfig(speech=False)
    results = {}
    for workers in (1, 2):
        with ContentStore(tmp_path / f"w{workers}.db") as store:
            rep = ContentAnalyzer(cfg, store, workers=workers).run(items)
            assert rep.media_analysed == len(items)
            ids = [it.item_id for it in items]
            results[workers] = (store.vectors("visual", ids), store.vectors("fused", ids))
    np.testing.assert_allclose(results[1][0], results[2][0], atol=1e-4)
    np.testing.assert_allclose(results[1][1], results[2][1], atol=1e-4)


def test_an_unexpected_failure_marks_only_its_item(tmp_path, monkeypatch):
    """A fault we cannot cause with a real file (a model crashing on one input) is injected."""
    _need_media()
    from avrec.content import analyze as mod

    real = mod.MediaAnalyzer.analyze

    def flaky(self, paths):
        if "coffee" in paths.get("image", ""):
            raise RuntimeError("onnxruntime exploded")
        return real(self, paths)

    monkeypatch.setattr(mod.MediaAnalyzer, "analyze", flaky)
    items = [
        ItemInput("cat", title="cat", media={"image": str(MEDIA / "images/chelsea.png")}),
        ItemInput("cup", title="cup", media={"image": str(MEDIA / "images/coffee.png")}),
    ]
    cfg = ContentConfig(speech=False, ocr=False, audio_features=False)
    with ContentStore(tmp_path / "c.db") as store:
        rep = ContentAnalyzer(cfg, store).run(items)
        assert rep.analysed == 2 and list(rep.errors) == ["cup"]
        cup = store.item("cup")
        assert cup["status"] == "error"
        assert cup["errors"] == ["analysis failed: RuntimeError: onnxruntime exploded"]
        assert "text" in cup["vectors"]  # its words are still understood
        assert store.item("cat")["status"] == "ok"


# -- the worker pool, retries and keys (no real models: the logic around them is under test) ----
def _fake_analyze(self, paths):
    """Stands in for the media models: a crash we cannot cause with a real file on demand (a
    decoder killing its process) for files named "crash", a trivial result otherwise."""
    path = next(iter(paths.values()))
    if "crash" in Path(path).name:
        os._exit(3)
    vec = np.zeros(1280, np.float32)
    vec[len(Path(path).name) % 1280] = 1.0
    return {"errors": [], "timings": {}, "media_seconds": 1.0, "status": "ok"}, {"visual": vec}


def _plain_init(config_json, threads):
    from avrec.content import media

    media._WORKER = media.MediaAnalyzer(ContentConfig.model_validate_json(config_json), threads)


@pytest.fixture
def fake_pool(monkeypatch):
    import multiprocessing as mp

    from avrec.content import analyze as mod

    monkeypatch.setattr(mod.MediaAnalyzer, "analyze", _fake_analyze)
    monkeypatch.setattr(mod, "init_worker", _plain_init)
    monkeypatch.setattr(mod, "spawn_context", lambda: mp.get_context("fork"))
    return mod


def _files(tmp_path, names):
    out = []
    for n in names:
        p = tmp_path / n
        p.write_bytes(n.encode() * 10)
        out.append(ItemInput(n, title=n, media={"image": str(p)}))
    return out


@pytest.mark.timeout(120)
def test_a_crashing_worker_marks_only_its_item_and_the_run_ends(tmp_path, fake_pool):
    items = _files(tmp_path, ["a.png", "b.png", "crash.png", "c.png", "d.png", "e.png"])
    cfg = ContentConfig(speech=False, ocr=False, audio_features=False)
    with ContentStore(tmp_path / "c.db") as store:
        rep = ContentAnalyzer(cfg, store, workers=2).run(items)
        assert rep.analysed == 6 and rep.media_analysed == 6
        assert list(rep.errors) == ["crash.png"]
        assert "crashed" in store.item("crash.png")["errors"][0]
        assert {store.item(i.item_id)["status"] for i in items if i.item_id != "crash.png"} == {
            "ok"
        }
        # the crash is not cached: the next run tries that item again (and only that one)
        again = ContentAnalyzer(cfg, store, workers=2).run(items)
        assert again.media_analysed == 1 and again.media_cached == 5
        assert again.analysed == 1 and again.unchanged == 5


def test_a_transient_failure_is_retried_next_run(tmp_path, monkeypatch):
    from avrec.content import analyze as mod

    items = _files(tmp_path, ["x.png"])
    cfg = ContentConfig(speech=False, ocr=False, audio_features=False)

    def flaky(self, paths):
        raise RuntimeError("out of file handles")

    with ContentStore(tmp_path / "c.db") as store:
        monkeypatch.setattr(mod.MediaAnalyzer, "analyze", flaky)
        first = ContentAnalyzer(cfg, store).run(items)
        assert store.item("x.png")["status"] == "error" and first.media_analysed == 1
        monkeypatch.setattr(mod.MediaAnalyzer, "analyze", _fake_analyze)
        second = ContentAnalyzer(cfg, store).run(items)
        assert second.media_analysed == 1 and second.analysed == 1
        assert store.item("x.png")["status"] == "ok"


def test_environment_failures_stop_the_run(tmp_path, monkeypatch):
    from avrec.content import analyze as mod
    from avrec.errors import ConfigError

    def missing(self, paths):
        raise ConfigError("Whisper model parts not installed")

    monkeypatch.setattr(mod.MediaAnalyzer, "analyze", missing)
    cfg = ContentConfig(speech=False, ocr=False, audio_features=False)
    with ContentStore(tmp_path / "c.db") as store, pytest.raises(ConfigError):
        ContentAnalyzer(cfg, store).run(_files(tmp_path, ["y.png"]))


def test_item_keys_cover_every_input_and_the_catalogue(tmp_path):
    cfg = ContentConfig(speech=False, ocr=False, audio_features=False, tag_min_items=1)
    base = [
        ItemInput("h", title="a haunted house", tags=["comedy"], comments=["ok"] * 50),
        ItemInput("j", title="a jazz night", tags=["jazz"]),
    ]
    with ContentStore(tmp_path / "c.db") as store:
        an = ContentAnalyzer(cfg, store)
        assert an.run(base).analysed == 2
        assert an.run(base).unchanged == 2
        changed = [ItemInput(**{**base[0].__dict__, "language": "fr"}), base[1]]
        rep = an.run(changed)
        assert rep.analysed == 1 and store.item("h")["info"]["language"] == "fr"
        more = [
            ItemInput(**{**changed[0].__dict__, "comments": ["ok"] * 50 + ["awful, hated it"]}),
            base[1],
        ]
        rep = an.run(more)
        assert rep.analysed == 1 and store.item("h")["info"]["sentiment"]["count"] == 51
        # a new catalogue item brings a new tag: the others are reassembled, nothing re-encoded
        before = store.item("h")["updated_at"]
        grown = [*more, ItemInput("k", title="ghosts and screams", tags=["horror"])]
        rep = an.run(grown)
        assert rep.analysed == 3 and rep.reassembled == 2
        assert store.item("k")["info"]["tags"][0]["tag"] == "horror"  # the new word is in use
        assert store.item("h")["updated_at"] > before  # and the old items were re-tagged
        assert rep.segments_encoded <= 2  # only the new item's texts and its tag
