"""Where a page computed from scratch spends its CPU (issue #18, item 5).

The MovieLens-100K workspace of ``benchmarks.service_load`` (the default pipeline, trained
once and cached) is served in this process (the FastAPI app, no HTTP: the route's own
functions), and ``--pages`` pages are computed for users drawn at random (seed 0), every one
from scratch (``AVREC_CACHE_S=0``), explanations included: the CPU milliseconds per page
(the process' CPU time, its other threads included), then the same pages under cProfile, the
parts of the page by cumulative share.

The HTTP layer is left out on purpose (``benchmarks.nodes`` measures pages through it).

    python -m benchmarks.page_profile [--pages 300]

Writes ``benchmarks/results/page-profile.json`` and the table between the ``page-profile``
markers in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import random
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks import _provenance as provenance
from benchmarks._markdown import replace_block
from benchmarks.service_load import KEY, ml100k_workspace

RESULTS = Path(__file__).resolve().parent / "results"


def _parts() -> dict[str, object]:
    """The parts of a page, by the function that does each."""
    from avrec.pipeline.pipeline import Pipeline
    from avrec.pipeline.ranker import FeatureBuilder, Ranker
    from avrec.pipeline.sources import ModelSource, PeopleSource
    from avrec.service.routes.recommend import present

    return {
        "candidate sources": Pipeline.candidates,
        "  model sources (EASE, ItemKNN, Markov)": ModelSource._retrieve,
        "  people and tags source": PeopleSource._retrieve,
        "ranker features": FeatureBuilder.build,
        "ranker scores": Ranker.predict,
        "re-ranking and explanations": Pipeline._final_list,
        "  explanations": Pipeline._explain,
        "catalogue rows for the answer": present,
    }


def _cumulative(stats: pstats.Stats, fn: object) -> float:
    """Seconds spent in (and under) ``fn``."""
    code = fn.__code__  # type: ignore[attr-defined]
    key = (code.co_filename, code.co_firstlineno, code.co_name)
    row = stats.stats.get(key)  # type: ignore[attr-defined]
    return float(row[3]) if row else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pages", type=int, default=300)
    args = ap.parse_args()
    src = ml100k_workspace()
    with tempfile.TemporaryDirectory(prefix="avrec-profile-") as tmp:
        ws = Path(tmp) / "ws"
        shutil.copytree(src, ws, ignore=shutil.ignore_patterns("*.log"))
        os.environ.update(AVREC_CACHE_S="0", AVREC_API_KEYS=f"{KEY}:write",
                          AVREC_WORKSPACE=str(ws), AVREC_RATE_LIMIT="1000000/second")  # fmt: skip
        from fastapi.testclient import TestClient

        from avrec.service.app import create_app
        from avrec.service.routes.recommend import _filters, present, recommend_for

        app = create_app()
        with TestClient(app) as client:
            st = app.state.service
            users = [str(u) for u in range(1, 944)]
            head = {"Authorization": f"Bearer {KEY}"}
            for u in users[:20]:  # the bundle loaded, the first pages' one-off work done
                client.get(f"/v1/users/{u}/recommendations", headers=head).raise_for_status()
            rng = random.Random(0)
            picks = [rng.choice(users) for _ in range(args.pages)]
            b = st.bundle

            def page(u: str) -> None:
                lst, _ = recommend_for(st, b, u, [], 10, 0, [], _filters([], []), True, "en")
                present(st, b, lst, True)

            t = time.process_time()
            for u in picks:
                page(u)
            cpu_ms = (time.process_time() - t) / args.pages * 1000
            prof = cProfile.Profile()
            prof.enable()
            for u in picks:
                page(u)
            prof.disable()
    stats = pstats.Stats(prof)
    whole = _cumulative(stats, recommend_for) + _cumulative(stats, present)
    parts = {name: _cumulative(stats, fn) / whole for name, fn in _parts().items()}
    print(f"{cpu_ms:.2f} CPU ms per page")
    for name, share in parts.items():
        print(f"  {name}: {share:.0%}")
    res = {
        "pages": args.pages,
        "cpu_ms_per_page": cpu_ms,
        "shares": parts,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": provenance.commit(),
        "machine": provenance.machine(),
        "load_average_1min": provenance.load(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "page-profile.json").write_text(json.dumps(res, indent=2) + "\n")
    lines = [
        f"Measured {res['date']} at commit `{res['commit']}` on {res['machine']} "
        f"(`python -m benchmarks.page_profile`): {args.pages} pages of 10 for random "
        "MovieLens-100K users, each computed from scratch in process (no HTTP), "
        f"explanations included: **{cpu_ms:.2f} CPU ms per page**. Where it goes (share of "
        "the page under cProfile, nested parts indented):",
        "",
        "| part | share |",
        "|---|---|",
        *(
            f"| {name.replace('  ', '&nbsp;&nbsp;')} | {share:.0%} |"
            for name, share in parts.items()
        ),
    ]
    replace_block("page-profile", lines, "### A page computed from scratch (issue 18)")


if __name__ == "__main__":
    main()
