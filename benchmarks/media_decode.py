"""How fast does avrec decode media: seconds of media per second of wall time, per stage.

For each real clip in ``../shared`` (HEVC/AAC MP4, VP8/Vorbis WebM, Vorbis audio with cover art),
times probing, key-frame extraction (intra frames, shot detection, 320 px RGB) and the 16 kHz mono
audio track, best of three runs, next to PyAV decoding every video frame (the naive approach).

    python -m benchmarks.media_decode

Writes ``benchmarks/results/media-decode.json``.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import av

from avrec.media import audio_track, cover_image, key_frames, probe

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CLIPS = [
    "datasets/microlens-50k/videos/1002.mp4",
    "datasets/microlens-50k/videos/10034.mp4",
    "datasets/microlens-50k/videos/10040.mp4",
    "media/video/big_buck_bunny_0_30.webm",
    "media/audio/Kevin_MacLeod_-_Vibe_Ace.ogg",
    "media/audio/Karissa_Hobbs_-_Lets_Go_Fishin.ogg",
]


def best(fn, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def all_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        return sum(1 for _ in c.decode(s))


def main() -> None:
    rows = []
    for rel in CLIPS:
        path = SHARED / rel
        if not path.is_file():
            print(f"skip {rel}: not found")
            continue
        info = probe(path)
        row = {
            "clip": rel,
            "seconds": round(info.duration or 0, 2),
            "probe_s": best(lambda p=path: probe(p)),
        }
        if info.has_video:
            row["key_frames_s"] = best(lambda p=path: key_frames(p))
            row["all_frames_s"] = best(lambda p=path: all_frames(p), runs=1)
        if info.has_cover:
            row["cover_s"] = best(lambda p=path: cover_image(p, size=320))
        if info.has_audio:
            row["audio_s"] = best(lambda p=path: audio_track(p))
        stages = sum(v for k, v in row.items() if k.endswith("_s") and k != "all_frames_s")
        row["realtime_x"] = round(row["seconds"] / stages, 1)
        rows.append(row)
        extra = f", all frames {row['all_frames_s']:.2f}s" if "all_frames_s" in row else ""
        print(
            f"{rel}: {row['seconds']:.1f}s of media, probe+frames+audio {stages:.3f}s = "
            f"{row['realtime_x']}x real time{extra}"
        )
    out = {
        "benchmark": "media_decode",
        "rows": rows,
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
        f"PyAV {av.__version__}",
    }
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / "media-decode.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
