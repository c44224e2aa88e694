"""How fast does ``avrec analyze`` understand items, and what does avrec add over the bare models?

Three measurements, each side by side with the bare model on the same inputs in the same run:

1. Text-only items (MicroLens-50k titles, Chinese and English): items/s of the whole analyser
   (segments, text vectors, keywords, tags, fusion, SQLite writes) against the bare text encoder
   encoding the same texts; then a second run over the same items (everything cached).
2. Media, per stage: seconds of media processed per second of wall time for decoding, the image
   model, OCR, speech and audio features, and for the whole media stage, over real clips, songs,
   speech and an image from ``../shared``; next to the bare image model (forward pass on the
   same frames), the bare OCR engine (same frames) and bare faster-whisper transcription (same
   audio, same settings), so avrec's overhead over each model is visible.
3. The media stage with one process against two (throughput on 2 cores).

    python -m benchmarks.content_speed [--text-items 2000]

Writes ``benchmarks/results/content-speed.json`` and the table between the ``content-speed``
markers in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from avrec.config import ContentConfig, Settings
from avrec.content.analyze import ContentAnalyzer, ItemInput
from avrec.content.media import _spread
from avrec.content.store import ContentStore
from avrec.media import audio_track, key_frames, load_image
from benchmarks._markdown import replace_block

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHARED = ROOT.parent / "shared"


def _machine() -> str:
    cores = len(os.sched_getaffinity(0))
    return f"{platform.machine()}, {cores} cores, Python {platform.python_version()}"


def media_items() -> list[ItemInput]:
    clips = SHARED / "datasets" / "microlens-50k" / "videos"
    audio = SHARED / "media" / "audio"
    out = [
        ItemInput(f"clip-{p.stem}", title=f"clip {p.stem}", media={"video": str(p)})
        for p in sorted(clips.glob("*.mp4"))
    ]
    out.append(
        ItemInput("bunny", media={"video": str(SHARED / "media/video/big_buck_bunny_0_30.webm")})
    )
    for name in (
        "5703-47212-0000",
        "198-209-0000",
        "3436-172162-0000",
        "Kevin_MacLeod_-_Vibe_Ace",
        "Hungarian_Dance_number_5_-_Allegro_in_F_sharp_minor_(string_orchestra)",
        "admiralbob77_-_Choice_-_Drum-bass",
    ):
        out.append(ItemInput(name[:24], media={"audio": str(audio / f"{name}.ogg")}))
    out.append(ItemInput("cat", media={"image": str(SHARED / "media/images/chelsea.png")}))
    return out


def text_items(n: int) -> list[ItemInput]:
    from avrec.data.loaders import load_public_data

    data = load_public_data("microlens-50k")
    rows = data.items.head(n)
    from avrec.content.analyze import items_from_frame

    return [
        ItemInput(it.item_id, title=it.title, tags=it.tags, description=it.description)
        for it in items_from_frame(rows.drop([c for c in ("video",) if c in rows.columns]))
    ]


def bench_text(n: int) -> dict:
    """Bare encoder and avrec alternate twice (a fresh store each time), so that a change in
    machine load during the run affects both sides alike; the figures are the means."""
    from avrec.features.text import E5TextEncoder

    items = text_items(n)
    cfg = ContentConfig()
    t_bare, t_ours = [], []
    with tempfile.TemporaryDirectory() as tmp:
        analyzer = ContentAnalyzer(cfg, ContentStore(Path(tmp) / "warm.db"))
        texts = [analyzer._segments(it, {}, [])["primary"] for it in items]
        bare = E5TextEncoder()
        bare.encode(texts[:64])  # load and warm up both
        analyzer.text_encoder.encode(texts[:64])
        for k in range(2):
            t = time.perf_counter()
            bare.encode(texts)
            t_bare.append(time.perf_counter() - t)
            analyzer.store.close()
            analyzer.store = ContentStore(Path(tmp) / f"pass{k}.db")
            t = time.perf_counter()
            rep = analyzer.run(items)
            t_ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        again = analyzer.run(items)
        t_again = time.perf_counter() - t
        analyzer.store.close()
    assert rep.analysed == len(items) and again.unchanged == len(items)
    tb, to = float(np.mean(t_bare)), float(np.mean(t_ours))
    out = {
        "items": len(items),
        "bare_seconds": t_bare,
        "avrec_seconds": t_ours,
        "bare_encoder_items_per_s": len(items) / tb,
        "avrec_items_per_s": len(items) / to,
        "overhead": to / tb - 1.0,
        "stage_seconds": rep.stage_seconds,
        "rerun_items_per_s": len(items) / t_again,
    }
    print(
        f"text-only: {len(items)} items | bare e5 {out['bare_encoder_items_per_s']:.1f}/s | "
        f"avrec analyze {out['avrec_items_per_s']:.1f}/s (overhead {out['overhead']:+.1%}) | "
        f"re-run {out['rerun_items_per_s']:.0f}/s"
    )
    return out


def bench_bare_models(items: list[ItemInput], cfg: ContentConfig) -> dict:
    """The bare models on the inputs avrec feeds them (decoding done beforehand, not timed)."""
    import cv2
    import torch

    from avrec.features.image import EfficientNetLite0, _square
    from avrec.features.ocr import TextReader
    from avrec.features.speech import WhisperSpeech

    frames_per_item, audios = [], []
    for it in items:
        imgs: list[np.ndarray] = []
        n_frames = 0
        if "video" in it.media:
            imgs = [f.image for f in key_frames(it.media["video"], cfg.max_frames, size=960)]
            n_frames = len(imgs)
            audios.append(audio_track(it.media["video"], max_seconds=cfg.max_audio_seconds))
        if "audio" in it.media:
            audios.append(audio_track(it.media["audio"], max_seconds=cfg.max_audio_seconds))
        if "image" in it.media:
            imgs.append(load_image(it.media["image"], size=960).image)
        frames_per_item.append((imgs, n_frames))

    out: dict[str, float] = {}
    # image model: its own input preparation (center crop, resize to 224, scaling) and the
    # forward pass, per item batch, as the model's reference usage does
    enc = EfficientNetLite0()
    net = enc._model()
    torch.set_num_threads(enc.threads)
    with torch.no_grad():
        for _ in range(2):  # the first pass warms up every batch shape; the second is timed
            t = time.perf_counter()
            for imgs, _ in frames_per_item:
                if imgs:
                    b = np.stack([_square(im) for im in imgs]).astype(np.float32)
                    x = torch.from_numpy((b - 127.0) / 128.0).permute(0, 3, 1, 2)
                    net._fc(net.extract_features(x).mean(dim=(2, 3)))
            out["image"] = time.perf_counter() - t

    # OCR engine on the same frames avrec reads
    reader = TextReader()
    engine = reader._engine()
    ocr_inputs = []
    for imgs, n_frames in frames_per_item:
        picks = [imgs[i] for i in _spread(n_frames, cfg.ocr_frames)] + imgs[n_frames:]
        ocr_inputs += [cv2.cvtColor(im, cv2.COLOR_RGB2BGR) for im in picks]
    for _ in range(2):
        t = time.perf_counter()
        for im in ocr_inputs:
            engine(im, use_cls=False)
        out["ocr"] = time.perf_counter() - t

    # faster-whisper transcription with the same model and settings (VAD on, greedy)
    speech = WhisperSpeech()
    model = speech._model() if hasattr(speech, "_model") else None
    if model is None:
        raise RuntimeError("WhisperSpeech has no _model(); update the benchmark")
    for _ in range(2):
        t = time.perf_counter()
        for a in audios:
            segments, _ = model.transcribe(
                a, beam_size=1, vad_filter=True, condition_on_previous_text=False
            )
            list(segments)
        out["speech_transcribe"] = time.perf_counter() - t
        t = time.perf_counter()
        speech.encode(audios)
        out["speech_embedding"] = time.perf_counter() - t
    return out


def bench_media(workers: int, cfg: ContentConfig) -> dict:
    """One process: a first pass over the items warms every model on every input shape (as a
    long run is warm), then a second pass into a fresh store is timed. Worker pools are timed
    from scratch: their start-up and model loading are part of the figure."""
    items = media_items()
    passes = 2 if workers == 1 else 1
    with tempfile.TemporaryDirectory() as tmp:
        analyzer = ContentAnalyzer(cfg, ContentStore(Path(tmp) / "warm.db"), workers=workers)
        for k in range(passes):
            analyzer.store.close()
            analyzer.store = ContentStore(Path(tmp) / f"pass{k}.db")
            t = time.perf_counter()
            rep = analyzer.run(items)
            wall = time.perf_counter() - t
        analyzer.store.close()
    return {
        "workers": workers,
        "items": len(items),
        "media_seconds": rep.media_seconds,
        "wall_seconds": wall,
        "x_real_time": rep.media_seconds / wall,
        "stage_seconds": rep.stage_seconds,
        "errors": rep.errors,
    }


def run(n_text: int) -> dict:
    cfg = ContentConfig()
    results: dict = {"machine": _machine(), "date": time.strftime("%Y-%m-%d")}
    results["text"] = bench_text(n_text)
    media = bench_media(1, cfg)
    results["media"] = media
    m = media["media_seconds"]
    st = media["stage_seconds"]
    print(f"media: {media['items']} items, {m:.1f} s of media, {media['wall_seconds']:.1f} s wall")
    for stage in ("decode", "image", "ocr", "speech", "audio_features"):
        if stage in st:
            print(f"  {stage:15s} {st[stage]:7.2f} s  {m / st[stage]:7.1f}x real time")
    no_asr = sum(st.get(s, 0.0) for s in ("decode", "image", "ocr", "audio_features"))
    results["media"]["x_real_time_without_speech"] = m / no_asr
    print(f"  all but speech  {no_asr:7.2f} s  {m / no_asr:7.1f}x real time")
    bare = bench_bare_models(media_items(), cfg)
    results["bare"] = bare
    results["overhead"] = {
        "image": st["image"] / bare["image"] - 1.0,
        "ocr": st["ocr"] / bare["ocr"] - 1.0,
        "speech": st["speech"] / (bare["speech_transcribe"] + bare["speech_embedding"]) - 1.0,
    }
    for k, v in results["overhead"].items():
        print(f"  overhead over the bare model, {k}: {v:+.1%}")
    speech_audio = sum(
        audio_track(it.media["audio"]).shape[0] / 16000
        for it in media_items()
        if it.item_id[0].isdigit()
    )
    results["speech_heavy_audio_seconds"] = speech_audio
    par = bench_media(2, cfg)
    results["media_2_workers"] = par
    print(
        f"media with 2 worker processes: {par['wall_seconds']:.1f} s wall, "
        f"{par['x_real_time']:.1f}x real time (1 process: {media['x_real_time']:.1f}x)"
    )
    return results


def update_markdown(res: dict) -> None:
    t, m, b, o = res["text"], res["media"], res["bare"], res["overhead"]
    st = m["stage_seconds"]
    ms = m["media_seconds"]
    lines = [
        f"Measured {res['date']} on {res['machine']} with `python -m benchmarks.content_speed`.",
        "",
        "| What | avrec | bare model, same inputs | avrec overhead |",
        "|---|---|---|---|",
        f"| text-only items (MicroLens titles, {t['items']:,}) | {t['avrec_items_per_s']:.1f} "
        f"items/s | e5 encoder {t['bare_encoder_items_per_s']:.1f} items/s | "
        f"{t['overhead']:+.1%} |",
        f"| same items again (all cached) | {t['rerun_items_per_s']:,.0f} items/s | | |",
        f"| image model on key frames and covers | {st['image']:.2f} s ({ms / st['image']:.0f}x "
        f"real time) | {b['image']:.2f} s | {o['image']:+.1%} |",
        f"| OCR (up to 4 frames + covers per item) | {st['ocr']:.2f} s ({ms / st['ocr']:.0f}x) | "
        f"{b['ocr']:.2f} s | {o['ocr']:+.1%} |",
        f"| speech: VAD + greedy ASR + encoder embedding | {st['speech']:.2f} s "
        f"({ms / st['speech']:.1f}x) | transcribe {b['speech_transcribe']:.2f} s + embed "
        f"{b['speech_embedding']:.2f} s | {o['speech']:+.1%} |",
        f"| decoding (PyAV) | {st['decode']:.2f} s ({ms / st['decode']:.0f}x) | | |",
        f"| audio features (librosa) | {st['audio_features']:.2f} s "
        f"({ms / st['audio_features']:.0f}x) | | |",
        f"| all media stages but speech | {ms / m['x_real_time_without_speech']:.2f} s "
        f"({m['x_real_time_without_speech']:.1f}x real time) | | |",
        f"| whole media stage, 1 process (warm) | {m['wall_seconds']:.1f} s for {ms:.0f} s of "
        "media "
        f"({m['x_real_time']:.1f}x) | | |",
        f"| whole media stage, 2 processes (start-up and model loading included) | "
        f"{res['media_2_workers']['wall_seconds']:.1f} s "
        f"({res['media_2_workers']['x_real_time']:.1f}x) | | |",
    ]
    replace_block("content-speed", lines, "## Content understanding speed")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--text-items", type=int, default=1000)
    args = ap.parse_args()
    if Settings().data_dir is None:
        raise SystemExit("set AVREC_DATA_DIR to ../shared/datasets")
    res = run(args.text_items)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "content-speed.json").write_text(json.dumps(res, indent=2, default=str))
    update_markdown(res)


if __name__ == "__main__":
    main()
