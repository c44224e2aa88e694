"""Secure aggregation against the plain sum (issue 20), side by side in one run: the same
DP-FedAvg training of federated MF on MovieLens-100K, once with the server summing the
clients' updates in the clear and once through Flower's SecAgg+ (the server learns only
the sum). Same seed, so the same noise and the same draws of Flower nodes; but which
person a Flower node holds is Flower's choice, made anew in each simulation, so the two runs
train on different 20% samples of people. What is compared is the accuracy reached (the
quantisation's own effect is checked exactly by ``tests/privacy/test_federated.py`` with
everyone taking part) and the protocol's cost.

- The setting is ``benchmarks.federated``'s DP row at epsilon 8: a Poisson sample of 20% of
  the 943 clients per round, 40 rounds, each update clipped to L2 norm 5 (that benchmark's
  choice on the validation stage), delta 1e-6, the damping 1.
- Reported: test NDCG@10 and HR@10 at the last round (DP: no round is chosen on data), the
  largest difference between the two runs' item factors, what one client sends per round
  (SecAgg+: its masked, quantised vector plus the protocol's public keys, encrypted key
  shares and unmasking shares), and the wall time (Flower simulation on a local Ray
  cluster, 2 client actors on this machine's 2 cores).

    python -m benchmarks.secure_aggregation [--rounds 40] [--markdown-only]

Writes ``benchmarks/results/secure_aggregation.json`` and the block between the
``secure-aggregation`` markers in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from benchmarks import _provenance as provenance
from benchmarks._markdown import replace_block
from benchmarks.federated import DATASET, DELTA, RESULTS, SAMPLED, _federated, setup

CLIP = 5.0
EPSILON = 8.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--markdown-only", action="store_true",
                    help="the BENCHMARKS block again from the last JSON, nothing run")  # fmt: skip
    args = ap.parse_args()
    if args.markdown_only:
        _markdown(json.loads((RESULTS / "secure_aggregation.json").read_text()))
        return
    started = time.perf_counter()
    split, score = setup()
    params = {"engine": "flower", "rounds": args.rounds, "fraction": SAMPLED,
              "learning_rate": 1.0, "dp_epsilon": EPSILON, "dp_delta": DELTA,
              "dp_clip": CLIP}  # fmt: skip
    runs, factors = {}, {}
    for name, secure in (("plain sum", False), ("SecAgg+", True)):
        print(f"{name}: DP-FedAvg epsilon {EPSILON:g} (Flower)", flush=True)
        finals: list[np.ndarray] = []
        runs[name] = _federated(split, score, secure_aggregation=secure, keep=finals, **params)
        factors[name] = finals[-1]
    diff = float(np.abs(factors["plain sum"] - factors["SecAgg+"]).max())
    scale = float(np.abs(factors["plain sum"]).max())
    out = {
        "benchmark": "secure_aggregation", "dataset": DATASET, "params": params,
        "runs": runs, "factor_max_abs_diff": diff, "factor_max_abs": scale,
        "date": time.strftime("%Y-%m-%d"),
        "commit": provenance.commit(("src", "benchmarks/secure_aggregation.py")),
        "machine": provenance.machine(),
        "run_s": time.perf_counter() - started,
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = json.dumps(out, indent=2, default=float) + "\n"
    (RESULTS / "secure_aggregation.json").write_text(text)
    _markdown(out)
    print(f"done in {out['run_s']:.0f}s; largest factor difference {diff:.2e} (of {scale:.2f})")


def _markdown(out: dict) -> None:
    p = out["params"]
    lines = [
        f"Measured {out['date']} at `{out['commit']}` on {out['machine']} "
        "(`python -m benchmarks.secure_aggregation`): federated MF on "
        f"{out['dataset']}'s fixed leave-one-out split, test stage, DP-FedAvg at epsilon "
        f"{p['dp_epsilon']:g} (delta {p['dp_delta']:g}), {p['fraction']:.0%} of the 943 "
        f"clients per round, {p['rounds']} rounds, updates clipped to L2 norm "
        f"{p['dp_clip']:g}; the same seed in both runs (the same noise; Flower gives each "
        "simulation its own assignment of people to nodes, so each run draws other people). "
        "Bytes are one client's per round (the largest of a round's clients, round 2: "
        "SecAgg+'s unmasking is counted in the next round's); wall time is the whole "
        "training, Flower simulation on a local Ray cluster.",
        "",
        "| aggregation | NDCG@10 (last round) | HR@10 | down / up per client per round "
        "| wall time | s per round (median) |",
        "|---|---|---|---|---|---|",
    ]
    for name, run in out["runs"].items():
        last = run["last"]
        second = run["curve"][1] if len(run["curve"]) > 1 else run["curve"][0]
        per = float(np.median([c["seconds"] for c in run["curve"]]))
        lines.append(
            f"| {name} | {last['test ndcg@10']:.4f} | {last['test hr@10']:.4f} | "
            f"{second['bytes_down'] / 1e3:.0f} kB / {second['bytes_up'] / 1e3:.0f} kB | "
            f"{run['wall_s']:.0f} s | {per:.1f} |"
        )
    lines += [
        "",
        f"The item factors after the last round differ by at most "
        f"{out['factor_max_abs_diff']:.1e} (their largest entry: {out['factor_max_abs']:.2f}): "
        "other people's updates, not the quantisation (with everyone taking part, "
        "`tests/privacy/test_federated.py` finds SecAgg+'s factors within 1e-4 of the same "
        "rounds summed in the clear, in process).",
    ]
    replace_block("secure-aggregation", lines, "### Secure aggregation (SecAgg+)")


if __name__ == "__main__":
    main()
