"""Does hostile input stay within bounded memory and time? (issue #16)

Each case is a file built to hurt a reader: gzip bombs (1 GB of zeros, with and without a header),
a 50 MB line among good rows, a 10,000-column header, wide files under the column limit, and a
10-million-row log. Each is ingested with the default settings into a fresh SQLite store in its
own child process, which reports its peak resident memory (VmHWM), its time and its outcome (rows
accepted and rejected, or the one error line). The baseline is the same child importing avrec and
opening the store without ingesting anything.

    python -m benchmarks.hostile                    # every case, 10M rows for the large file
    python -m benchmarks.hostile --rows 2000000 --skip-bombs
    python -m benchmarks.hostile --fuzz 2000        # also run the fuzz suite with 2,000 examples

Writes ``benchmarks/results/hostile.json``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks._provenance import ROOT, commit, load, machine

RESULTS = Path(__file__).parent / "results"
HEADER = b"user_id,item_id,event,timestamp\n"

_CHILD = """
import json, sys, time
from avrec.errors import DataError
from avrec.storage.sqlite import SQLiteStore

def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

from avrec.ingest.pipeline import ingest_file
store = SQLiteStore(sys.argv[1])
out = {}
t = time.perf_counter()
if sys.argv[2] != "-":
    try:
        rep = ingest_file(store, sys.argv[2], sys.argv[3], rejects_dir=sys.argv[4])
    except DataError as exc:
        out["error"] = str(exc).replace(sys.argv[2], "FILE")
    else:
        out.update(rows=rep.rows, accepted=rep.accepted, rejected=rep.rejected,
                   reasons={k: v for k, v in rep.reasons.most_common(3)})
out["seconds"] = time.perf_counter() - t
out["peak_rss_mb"] = peak_mb()
print(json.dumps(out))
"""


def _good_rows(n: int, start: int = 0) -> bytes:
    return b"".join(
        b"u%d,i%d,play,%d\n" % (k % 997, k % 331, 1_700_000_000 + k) for k in range(start, n)
    )


def _gzip_zeros(path: Path, header: bool, gb: float) -> None:
    with gzip.open(path, "wb", compresslevel=9) as fh:
        if header:
            fh.write(HEADER + _good_rows(100))
        block = b"\0" * (16 << 20)
        for _ in range(int(gb * 1024 / 16)):
            fh.write(block)
        if header:
            fh.write(b"\n" + _good_rows(200, 100))


def _long_line(path: Path, mb: int) -> None:
    with open(path, "wb") as fh:
        fh.write(HEADER + _good_rows(1000))
        fh.write(b"u1,i1,play," + b"7" * (mb << 20) + b"\n")
        fh.write(_good_rows(2000, 1000))


def _wide(path: Path, columns: int, rows: int) -> None:
    names = ["user_id", "item_id", "timestamp", *(f"c{i}" for i in range(columns - 3))]
    with open(path, "w") as fh:
        fh.write(",".join(names) + "\n")
        filler = ",".join("v" for _ in range(columns - 3))
        for k in range(rows):
            fh.write(f"u{k},i{k % 50},{1_700_000_000 + k},{filler}\n")


def _large(path: Path, rows: int) -> None:
    from benchmarks.ingest import generate

    generate(path, rows, "csv")


def run_child(db: Path, data: Path | None, kind: str, rejects: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(db), str(data) if data else "-", kind, str(rejects)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if out.returncode != 0:  # a traceback is a finding, not a crash of the benchmark
        return {"traceback": out.stderr.strip().splitlines()[-1:], "returncode": out.returncode}
    return json.loads(out.stdout.strip().splitlines()[-1])


def update_markdown(out: dict) -> None:
    from benchmarks._markdown import replace_block

    lines = [
        f"Measured {out['date']} at commit `{out['commit']}` on {out['machine']} "
        f"(`python -m benchmarks.hostile`; load average {out['load_at_end']} at the end). "
        "Each file ingested with the default settings into a fresh SQLite store in its own "
        "process; peak RSS is that process' high-water mark (VmHWM); the baseline process "
        f"(importing avrec, opening a store) peaks at {out['baseline_peak_rss_mb']} MB.",
        "",
        "| file | size on disk | time | peak RSS | outcome |",
        "|---|---|---|---|---|",
    ]
    for c in out["cases"]:
        if "error" in c:
            outcome = f"refused: `{c['error']}`"
        elif "traceback" in c:
            outcome = f"**traceback** {c['traceback']}"
        else:
            why = "; ".join(f"{n:,}: {r}" for r, n in c["reasons"].items())
            outcome = f"{c['accepted']:,} accepted, {c['rejected']:,} rejected" + (
                f" ({why})" if why else ""
            )
        lines.append(
            f"| {c['case']} | {c['file_mb']:,} MB | {c.get('seconds', 0):.2f} s | "
            f"{c.get('peak_rss_mb', 0):,.0f} MB | {outcome} |"
        )
    lines += [
        "",
        f"Largest peak: {out['max_peak_rss_mb']:,} MB; tracebacks: {out['tracebacks']}.",
    ]
    if out.get("fuzz"):
        f = out["fuzz"]
        lines.append(
            f"Fuzz suite (`tests/ingest/test_fuzz.py`) at {f['examples_per_property']:,} "
            f"examples per property: {f['summary']} ({f['seconds']:.0f} s)."
        )
    replace_block("hostile", lines, "## Hostile input (issue 16)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000, help="rows of the large file")
    ap.add_argument("--bomb-gb", type=float, default=1.0, help="zeros in each gzip bomb")
    ap.add_argument("--skip-bombs", action="store_true")
    ap.add_argument("--fuzz", type=int, default=0, help="examples per fuzz property (0: skip)")
    args = ap.parse_args()

    cases: list[tuple[str, str, Callable[[Path], None], str]] = []
    if not args.skip_bombs:
        cases += [
            (f"gzip bomb, {args.bomb_gb:g} GB of zeros, no header", "bomb.csv.gz",
             lambda p: _gzip_zeros(p, False, args.bomb_gb), "events"),
            (f"gzip bomb, {args.bomb_gb:g} GB of zeros after a header and 100 rows",
             "bomb2.csv.gz", lambda p: _gzip_zeros(p, True, args.bomb_gb), "events"),
        ]  # fmt: skip
    cases += [
        ("a 50 MB line among 2,000 good rows", "long.csv", lambda p: _long_line(p, 50), "events"),
        ("10,000-column header, one row", "wide10k.csv", lambda p: _wide(p, 10_000, 1), "events"),
        ("250 columns x 100,000 rows", "w250.csv", lambda p: _wide(p, 250, 100_000), "events"),
        ("500 columns x 50,000 rows", "w500.csv", lambda p: _wide(p, 500, 50_000), "events"),
        ("1,000 columns x 25,000 rows", "w1000.csv", lambda p: _wide(p, 1000, 25_000), "events"),
        (f"{args.rows:,} rows, CSV", "large.csv", lambda p: _large(p, args.rows), "events"),
    ]
    results = []
    with tempfile.TemporaryDirectory(prefix="avrec-hostile-") as tmp:
        base = run_child(Path(tmp) / "base.db", None, "events", Path(tmp))
        print(f"baseline (import avrec, open a store): peak RSS {base['peak_rss_mb']:.0f} MB")
        for name, filename, build, kind in cases:
            path = Path(tmp) / filename
            t = time.perf_counter()
            build(path)
            made = time.perf_counter() - t
            size = path.stat().st_size
            res = run_child(Path(tmp) / f"{filename}.db", path, kind, Path(tmp))
            res.update(case=name, file_mb=round(size / 1e6, 2), built_s=round(made, 1))
            results.append(res)
            path.unlink()
            outcome = (
                f"error: {res['error']}"
                if "error" in res
                else f"TRACEBACK {res['traceback']}"
                if "traceback" in res
                else f"{res['accepted']:,} accepted, {res['rejected']:,} rejected {res['reasons']}"
            )
            print(
                f"{name}: {res.get('seconds', 0):.2f} s, peak RSS"
                f" {res.get('peak_rss_mb', 0):,.0f} MB ({size / 1e6:,.1f} MB file) -> {outcome}"
            )
    fuzz = None
    if args.fuzz:
        t = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             "tests/ingest/test_fuzz.py"],
            cwd=ROOT, capture_output=True, text=True,
            env={**os.environ, "AVREC_FUZZ_EXAMPLES": str(args.fuzz)},
        )  # fmt: skip
        last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]
        fuzz = {"examples_per_property": args.fuzz, "passed": proc.returncode == 0,
                "summary": last, "seconds": round(time.perf_counter() - t, 1)}  # fmt: skip
        print(f"fuzz, {args.fuzz:,} examples per property: {last}")
    out = {
        "benchmark": "hostile",
        "baseline_peak_rss_mb": round(base["peak_rss_mb"]),
        "cases": [
            {k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()} for r in results
        ],
        "max_peak_rss_mb": round(max(r.get("peak_rss_mb", 0) for r in results)),
        "tracebacks": sum("traceback" in r for r in results),
        "fuzz": fuzz,
        "date": time.strftime("%Y-%m-%d"),
        "commit": commit(),
        "machine": machine(),
        "load_at_end": load(),
    }
    RESULTS.mkdir(exist_ok=True)
    update_markdown(out)
    path = RESULTS / "hostile.json"
    path.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    print(f"max peak RSS {out['max_peak_rss_mb']:,} MB, tracebacks {out['tracebacks']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
