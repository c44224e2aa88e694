"""How long does a catalogue with no behaviour take to become searchable? (issue 17)

A fresh workspace, the KuaiRec captions loaded (10,728 Chinese short videos, no events), then
`avrec train` on it: the first run, with nothing cached (every e5 and USE vector encoded),
then a second run over the cached vectors. Each step is the real command line in its own
process, timed from outside. Afterwards one search and one request in words, in each language,
through the trained bundle, to show it answers.

    python -m benchmarks.cold_catalogue

Writes ``benchmarks/results/cold-catalogue.json`` and the table between the ``cold-catalogue``
markers in BENCHMARKS.md.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._markdown import replace_block
from benchmarks._provenance import commit, load, machine

RESULTS = Path(__file__).parent / "results"
AVREC = shutil.which("avrec") or str(Path(sys.executable).parent / "avrec")
QUERIES = {
    "search zh": ["search", "小猫咪调皮捣蛋", "--k", "3", "--json"],
    "search en": ["search", "a cat being naughty at home", "--k", "3", "--json"],
    "ask zh": ["ask", "想看农村做饭的视频", "--k", "3", "--json"],
    "ask en": ["ask", "videos about cooking in the countryside", "--k", "3", "--json"],
}


def step(ws: Path, *args: str) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run(
        [AVREC, "-w", str(ws), *args], capture_output=True, text=True, env=os.environ.copy()
    )
    dt = time.perf_counter() - t
    if out.returncode != 0:
        raise SystemExit(f"avrec {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return dt, out.stdout


def main() -> None:
    if not os.environ.get("AVREC_DATA_DIR"):
        raise SystemExit("set AVREC_DATA_DIR to ../shared/datasets")
    res: dict = {"benchmark": "cold-catalogue", "dataset": "kuairec-captions"}
    with tempfile.TemporaryDirectory(prefix="avrec-cold-") as tmp:
        ws = Path(tmp) / "ws"
        subprocess.run([AVREC, "init", str(ws)], check=True, capture_output=True)
        res["load_s"], _ = step(ws, "datasets", "load", "kuairec-captions")
        print(f"datasets load kuairec-captions: {res['load_s']:.1f} s", flush=True)
        res["train_first_s"], out = step(ws, "train")
        print(f"train, first run (nothing cached): {res['train_first_s']:.1f} s", flush=True)
        res["train_output"] = [ln for ln in out.splitlines() if ln.strip()][:8]
        res["train_cached_s"], _ = step(ws, "train")
        print(f"train, second run (vectors cached): {res['train_cached_s']:.1f} s", flush=True)
        res["answers"] = {}
        for name, args in QUERIES.items():
            dt, out = step(ws, *args)
            got = json.loads(out)
            items = got["items"] if isinstance(got, dict) else got
            titles = [i.get("title") for i in (items or [])][:3]
            res["answers"][name] = {"query": args[1], "seconds": round(dt, 2), "titles": titles}
            print(f"{name}: {args[1]!r} -> {titles} ({dt:.1f} s)", flush=True)
        res["content_db_mb"] = round((ws / "content.db").stat().st_size / 1e6, 1)
    res.update(
        date=time.strftime("%Y-%m-%d"), commit=commit(), machine=machine(), load_at_end=load()
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cold-catalogue.json").write_text(
        json.dumps(res, indent=2, ensure_ascii=False) + "\n"
    )
    lines = [
        f"Measured {res['date']} at commit `{res['commit']}` on {res['machine']} "
        f"(`python -m benchmarks.cold_catalogue`; load average {res['load_at_end']} at the "
        "end). A fresh workspace, each step the real command in its own process:",
        "",
        "| step | time |",
        "|---|---|",
        f"| `avrec datasets load kuairec-captions` (10,728 videos, no events) | "
        f"{res['load_s']:.0f} s |",
        f"| `avrec train`, first run (every e5 and USE vector encoded) | "
        f"**{res['train_first_s']:.0f} s** |",
        f"| `avrec train` again (vectors cached in content.db, {res['content_db_mb']} MB) | "
        f"{res['train_cached_s']:.0f} s |",
        "",
        "Answers of the trained workspace (first three titles):",
        "",
    ]
    for name, a in res["answers"].items():
        lines.append(f"- {name} `{a['query']}`: " + "; ".join(f"{t}" for t in a["titles"]))
    replace_block("cold-catalogue", lines, "### A catalogue with no events (issue 17)")
    print("wrote benchmarks/results/cold-catalogue.json")


if __name__ == "__main__":
    main()
