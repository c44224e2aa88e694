"""Which pipeline defaults? Chosen on validation data only, never on a test item (issue 15).

1. **Ranker leaves and training targets** (``ranker.num_leaves`` and ``ranker_holdout``): on
   the fixed leave-one-out split, the test events are dropped before anything else. Each user's
   last training event then plays the part the validation event plays in
   ``benchmarks.pipeline`` (the ranker may learn from it, the sources do not), the pipeline is
   fitted on the other training events, and it is scored on the validation item: full ranking,
   the training events excluded. Every setting sees one event less than on the test protocol
   and never sees the item it is scored on. One pipeline fit per holdout; the leaf counts are
   rankers trained on that fit's examples (the same sources, features, labels and seed as a
   fit of its own would give, which ``--check`` verifies).
2. **Short histories** (``ranker_min_history``): the users ``benchmarks.pipeline_cold`` holds
   out (``ColdUserSplit`` 0.2, seed 0: its test users) are dropped; of the rest a seeded fifth
   (seed 1) is held out of training, and the pipeline with the chosen ranker, fitted as
   ``pipeline_cold`` fits it, serves each of them as a stranger after their first 0, 1, 3, 5,
   10 and 15 events (target: the next one), ranked by the ranker and by reciprocal-rank
   fusion. A threshold ``t`` means "the ranker from ``t`` events on"; ``learned`` is the
   shortest history the ranker learned from (the rule before issue 15).

Rule: the setting with the best mean NDCG@10 wins; with several datasets, the best mean over
datasets of NDCG@10 divided by that dataset's best (a tie keeps the current default). For the
threshold, each number of events weighs the same.

SASRec is left out (its fit is what makes ``benchmarks.pipeline`` slow, and it is one more
source, not the ranker's setting). On MicroLens-50k the cost is bounded: ``--eval-users``
validation users (seeded sample) are scored; the short-history part runs on MovieLens-100K
only (the cold-start benchmark's dataset).

    python -m benchmarks.choose_defaults --dataset movielens-100k --check
    python -m benchmarks.choose_defaults --dataset microlens-50k --holdouts 0 3 --eval-users 10000

Writes ``benchmarks/results/choose-defaults-<dataset>.json``, then decides over every such file
present: prints the table and the picks, writes ``benchmarks/results/choose-defaults.json`` and
the table between the ``choose-defaults`` markers in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np

from avrec.config import Settings
from avrec.data.dataset import Dataset
from avrec.data.loaders import load_dataset
from avrec.eval import ColdUserSplit, FixedSplit, SplitResult
from avrec.eval.evaluate import evaluate_model, metric_context
from avrec.eval.metrics import HR, NDCG
from avrec.eval.stats import bootstrap_ci, paired_test
from avrec.pipeline import pipeline as pipeline_module
from avrec.pipeline.pipeline import Pipeline, PipelineConfig
from avrec.pipeline.ranker import Ranker
from benchmarks._markdown import replace_block
from benchmarks._provenance import commit, load, machine
from benchmarks.pipeline_cold import prefix_ndcg

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
LEAVES = (7, 15, 31)
HOLDOUTS = (0, 1, 3, 5)
EVENTS = (0, 1, 3, 5, 10, 15)
THRESHOLDS: tuple[int | str, ...] = ("learned", 0, 1, 3, 5, 10, 15)
OLD = {"num_leaves": 7, "ranker_holdout": 3, "ranker_min_history": "learned"}


def config(holdout: int, num_leaves: int | None = None) -> PipelineConfig:
    """The default pipeline with these ranker settings, without the catalogue search index
    (it plays no part in ranking and costs an e5 encoding of the catalogue per fit)."""
    cfg = PipelineConfig(ranker_holdout=holdout, search=False)
    if num_leaves is not None:
        cfg = cfg.model_copy(update={"ranker": {**cfg.ranker, "num_leaves": num_leaves}})
    return cfg


def validation_split(data: Dataset, split_file: Path, eval_users: int | None) -> SplitResult:
    """The fixed split moved one event back: the test events are gone, each user's last
    training event is the ``valid`` stage (what the ranker may learn from), the validation
    event is the ``test`` stage (what is scored). ``eval_users``: score a seeded sample."""
    outer = FixedSplit(split_file).split(data)
    keep = ~outer.masks["test"]
    ds = data.select(keep, name=f"{data.name}:no-test")
    if (np.diff(ds.user_index) < 0).any():
        raise RuntimeError("events are not grouped by user")
    train = outer.masks["train"][keep]
    target = outer.masks["valid"][keep]
    idx = np.flatnonzero(train)
    users = ds.user_index[idx]
    last = np.r_[users[1:] != users[:-1], True]  # events are in time order within a user
    counts = np.bincount(users, minlength=ds.n_users)
    last &= counts[users] >= 2  # a user keeps at least one event to train on
    inner_valid = np.zeros(ds.n_events, bool)
    inner_valid[idx[last]] = True
    if eval_users is not None:
        scored = np.unique(ds.user_index[target])
        rng = np.random.default_rng(0)
        chosen = rng.choice(scored, min(eval_users, len(scored)), replace=False)
        target &= np.isin(ds.user_index, chosen)  # the others' validation events: unused
    return SplitResult(
        "validation",
        ds,
        {"train": train & ~inner_valid, "valid": inner_valid, "test": target},
        {"file": str(split_file), "scored": "the validation item, test events dropped"},
    )


@contextmanager
def every_leaves(leaves: tuple[int, ...], out: dict[int, Ranker]) -> Iterator[None]:
    """While a pipeline fits, its ranker is trained once per leaf count on the same examples
    (into ``out``); the pipeline keeps the first."""

    class Several:
        def __init__(self, **params: object) -> None:
            self.params = params

        def fit(self, feats, labels, names):  # noqa: ANN001, ANN202
            for n in leaves:
                out[n] = Ranker(**{**self.params, "num_leaves": n}).fit(feats, labels, names)
            return out[leaves[0]]

    with mock.patch.object(pipeline_module, "Ranker", Several):
        yield


def _summary(values: np.ndarray, base: np.ndarray | None) -> dict:
    mean, lo, hi = bootstrap_ci(values, n_boot=1000)
    out = {"ndcg@10": mean, "ci": [lo, hi]}
    if base is not None and values is not base:
        t = paired_test(values, base, n_boot=2000)
        out["vs_old"] = {"diff": t.get("diff"), "p_value": t.get("p_value")}
    return out


def ranker_grid(
    split: SplitResult, holdouts: tuple[int, ...], leaves: tuple[int, ...], check: bool
) -> dict:
    ctx = metric_context(split)
    valid = split.full.select(split.masks["valid"], name=f"{split.full.name}:valid")
    metrics = [NDCG(10), HR(10)]
    per: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    info: dict[str, dict] = {}
    t0 = time.perf_counter()
    for h in holdouts:
        pipe = Pipeline(**config(h).model_dump())
        rankers: dict[int, Ranker] = {}
        t = time.perf_counter()
        with every_leaves(leaves, rankers):
            pipe.fit(split.train, valid)
        fit_s = time.perf_counter() - t
        print(f"  holdout {h}: fitted in {fit_s:.0f}s", flush=True)
        info[str(h)] = {
            "fit_seconds": fit_s,
            "ranker_recall": pipe.ranker_recall,
            "ranker_groups": getattr(pipe.ranker, "groups", None),
            "trees": {str(n): r.best_iteration for n, r in rankers.items()},
            "shortest_history": pipe.ranker_shortest_history,
        }
        if h == holdouts[-1]:  # the sources refitted on all training events: no ranker
            pipe.ranker = None
            ev = evaluate_model(pipe, split, metrics, "test", ctx=ctx)
            fusion = ev.per_user
            print(f"  fusion, no ranker: ndcg@10 {ev.per_user['ndcg@10'].mean():.4f}")
        for n in leaves:
            pipe.ranker = rankers.get(n)
            ev = evaluate_model(pipe, split, metrics, "test", ctx=ctx)
            per[n, h] = ev.per_user
            print(
                f"  leaves {n:2d} holdout {h}: ndcg@10 {ev.per_user['ndcg@10'].mean():.4f} "
                f"hr@10 {ev.per_user['hr@10'].mean():.4f} "
                f"({time.perf_counter() - t0:.0f}s)",
                flush=True,
            )
    base_key = (OLD["num_leaves"], OLD["ranker_holdout"])
    base = per[base_key]["ndcg@10"] if base_key in per else None
    rows = {}
    for (n, h), pu in per.items():
        row = _summary(pu["ndcg@10"], base)
        row["hr@10"] = float(pu["hr@10"].mean())
        row["users"] = int(len(pu["ndcg@10"]))
        rows[f"{n},{h}"] = row
    row = _summary(fusion["ndcg@10"], base)
    row["hr@10"] = float(fusion["hr@10"].mean())
    row["users"] = int(len(fusion["ndcg@10"]))
    out = {"settings": rows, "fusion": row, "fits": info}
    if check:  # the leaf trick against a fit of its own
        n, h = leaves[-1], holdouts[-1]
        pipe = Pipeline(**config(h, n).model_dump()).fit(split.train, valid)
        ev = evaluate_model(pipe, split, metrics, "test", ctx=ctx)
        diff = float(np.abs(ev.per_user["ndcg@10"] - per[n, h]["ndcg@10"]).max())
        out["check"] = {"num_leaves": n, "ranker_holdout": h, "max_abs_diff_ndcg": diff}
        print(f"  check: leaves {n} holdout {h} fitted alone, max |diff| {diff:.2e}")
    return out


def short_histories(data: Dataset, num_leaves: int, holdout: int) -> dict:
    """Ranker or fusion for strangers after their first events, on users disjoint from
    ``benchmarks.pipeline_cold``'s."""
    test_split = ColdUserSplit(fraction=0.2, seed=0).split(data)
    test_users = np.unique(data.user_index[test_split.masks["valid"] | test_split.masks["test"]])
    rest = data.select(~np.isin(data.user_index, test_users), name=f"{data.name}:not-cold-test")
    split = ColdUserSplit(fraction=0.2, seed=1).split(rest)
    held = split.masks["valid"] | split.masks["test"]
    users = np.unique(rest.user_index[held])
    ptr = rest.sequence_indptr
    users = users[np.diff(ptr)[users] > max(EVENTS)]
    assert not np.isin(users, test_users).any()
    pipe = Pipeline(**config(holdout, num_leaves).model_dump()).fit(split.train)
    out: dict = {
        "users": int(len(users)),
        "training_users": int(len(np.unique(split.train.user_index))),
        "cold_test_users_dropped": int(len(test_users)),
        "events": list(EVENTS),
        "shortest_history": pipe.ranker_shortest_history,
        "trees": getattr(pipe.ranker, "best_iteration", None),
    }
    if pipe.ranker is None:
        out["note"] = "no ranker was fitted: every request is fused"
        return out
    per: dict[str, dict[int, np.ndarray]] = {"ranker": {}, "fusion": {}}
    for e in EVENTS:
        for name, threshold in (("ranker", 0), ("fusion", 10**9)):
            pipe.ranker_min_history = threshold
            per[name][e] = prefix_ndcg(pipe, rest, users, ptr, e)
    pipe.ranker_min_history = pipe.ranker_shortest_history
    out["ndcg@10"] = {n: {e: float(v[e].mean()) for e in EVENTS} for n, v in per.items()}
    out["ranker_vs_fusion"] = {
        e: paired_test(per["ranker"][e], per["fusion"][e], n_boot=2000) for e in EVENTS
    }
    policies = {}
    for t in THRESHOLDS:
        cut = pipe.ranker_shortest_history if t == "learned" else int(t)
        vals = [per["ranker" if e >= cut else "fusion"][e].mean() for e in EVENTS]
        policies[str(t)] = {"threshold": cut, "mean_ndcg@10": float(np.mean(vals))}
    out["policies"] = policies
    for name in per:
        print(
            f"  strangers, {name:6s} "
            + "  ".join(f"{e}: {per[name][e].mean():.4f}" for e in EVENTS),
            flush=True,
        )
    return out


def decide() -> dict:
    """The picks over every ``choose-defaults-<dataset>.json`` present."""
    runs = {}
    for f in sorted(RESULTS.glob("choose-defaults-*.json")):
        doc = json.loads(f.read_text())
        runs[doc["dataset"]] = doc
    if not runs:
        raise SystemExit("no choose-defaults-<dataset>.json yet")
    common = set.intersection(*(set(r["ranker"]["settings"]) for r in runs.values()))
    score = {}
    for key in common:
        rel = []
        for r in runs.values():
            s = r["ranker"]["settings"]
            best = max(v["ndcg@10"] for k, v in s.items() if k in common)
            rel.append(s[key]["ndcg@10"] / best)
        score[key] = float(np.mean(rel))
    old = f"{OLD['num_leaves']},{OLD['ranker_holdout']}"
    top = max(score.values())
    pick = old if score.get(old) == top else max(score, key=lambda k: score[k])
    n, h = (int(x) for x in pick.split(","))
    out = {
        "datasets": sorted(runs),
        "relative_ndcg@10": score,
        "num_leaves": n,
        "ranker_holdout": h,
    }
    short = [r["short_histories"] for r in runs.values() if r.get("short_histories")]
    if short and "policies" in short[0]:
        pol = short[0]["policies"]
        best = max(v["mean_ndcg@10"] for v in pol.values())
        name = (
            "learned"
            if pol["learned"]["mean_ndcg@10"] == best
            else max(pol, key=lambda k: pol[k]["mean_ndcg@10"])
        )
        out["ranker_min_history"] = None if name == "learned" else int(name)
        out["ranker_min_history_from"] = short[0]["chosen_with"]
    return out


def update_markdown(runs: dict[str, dict], picks: dict) -> None:
    lines = []
    for ds, r in sorted(runs.items()):
        g = r["ranker"]
        lines += [
            f"Measured {r['date']} at commit {r['commit']} on {r['machine']} with "
            f"`python -m benchmarks.choose_defaults --dataset {ds}{r.get('args', '')}`: "
            f"{ds}, the fixed split moved one event back (test events dropped; the ranker may "
            "learn from each user's last training event; scored on the validation item, "
            f"{next(iter(g['settings'].values()))['users']} users; full ranking). Sources: "
            f"{', '.join(r['sources'])} (no SASRec). NDCG@10 [95% CI], difference from the "
            "old default (7 leaves, holdout 3) with its paired bootstrap p:",
            "",
            "| num_leaves | ranker_holdout (trees kept) | NDCG@10 | 95% CI | HR@10 | vs old (p) |",
            "|---|---|---|---|---|---|",
        ]
        for key, v in sorted(
            g["settings"].items(), key=lambda kv: tuple(int(x) for x in kv[0].split(","))
        ):
            n, h = key.split(",")
            vs = v.get("vs_old")
            vs_s = f"{vs['diff']:+.4f} ({vs['p_value']:.3f})" if vs else "(old default)"
            trees = g["fits"][h]["trees"][n]
            lines.append(
                f"| {n} | {h} ({trees} trees) | {v['ndcg@10']:.4f} | "
                f"[{v['ci'][0]:.4f}, {v['ci'][1]:.4f}] | {v['hr@10']:.4f} | {vs_s} |"
            )
        f = g["fusion"]
        lines.append(
            f"| no ranker: fusion | - | {f['ndcg@10']:.4f} | [{f['ci'][0]:.4f}, "
            f"{f['ci'][1]:.4f}] | {f['hr@10']:.4f} | {f['vs_old']['diff']:+.4f} "
            f"({f['vs_old']['p_value']:.3f}) |"
        )
        lines.append("")
        sh = r.get("short_histories")
        if sh and "ndcg@10" in sh:
            ev = sh["events"]
            lines += [
                f"Short histories ({ds}, ranker of {sh['chosen_with']}): {sh['users']} "
                "strangers disjoint from `benchmarks.pipeline_cold`'s "
                f"{sh['cold_test_users_dropped']} test users (a seeded fifth of the rest, "
                "seed 1; the pipeline fitted on the other "
                f"{sh['training_users']}), served after their first events; NDCG@10 of the next "
                "event, ranked by the ranker or by reciprocal-rank fusion of the sources:",
                "",
                "| ranked by | " + " | ".join(f"after {e}" for e in ev) + " |",
                "|---|" + "---|" * len(ev),
            ]
            for name, vals in sh["ndcg@10"].items():
                lines.append(f"| {name} | " + " | ".join(f"{vals[str(e)]:.4f}" for e in ev) + " |")
            rv = sh["ranker_vs_fusion"]
            lines += [
                "",
                "Ranker vs fusion, paired bootstrap p: "
                + ", ".join(f"{e} events {rv[str(e)]['p_value']:.3f}" for e in ev)
                + ". Mean NDCG@10 over those points by threshold (the ranker from N events "
                f"on; learned = the shortest history it learned from, {sh['shortest_history']} "
                "here): "
                + ", ".join(f"{k} {v['mean_ndcg@10']:.4f}" for k, v in sh["policies"].items())
                + ".",
                "",
            ]
    mh = picks.get("ranker_min_history", "not chosen")
    lines += [
        f"Picks (over {', '.join(picks['datasets'])}): num_leaves {picks['num_leaves']}, "
        f"ranker_holdout {picks['ranker_holdout']}, ranker_min_history "
        f"{'learned (None)' if mh is None else mh}.",
    ]
    replace_block("choose-defaults", lines, "### Pipeline defaults, chosen on validation data")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="movielens-100k")
    ap.add_argument("--holdouts", type=int, nargs="+", default=list(HOLDOUTS))
    ap.add_argument("--leaves", type=int, nargs="+", default=list(LEAVES))
    ap.add_argument("--eval-users", type=int, default=None, help="score a seeded sample")
    ap.add_argument("--no-short", action="store_true", help="skip the short-history part")
    ap.add_argument("--check", action="store_true", help="verify the leaf trick once")
    ap.add_argument("--decide", action="store_true", help="only decide over the JSON files")
    args = ap.parse_args()
    if not args.decide:
        settings = Settings()
        if settings.data_dir is None:
            raise SystemExit("set AVREC_DATA_DIR to ../shared/datasets")
        data = load_dataset(args.dataset, settings=settings)
        split_file = Path(settings.data_dir) / "splits" / f"{args.dataset}.loo.tsv"
        t = time.perf_counter()
        res: dict = {
            "dataset": args.dataset,
            "date": time.strftime("%Y-%m-%d"),
            "commit": commit(),
            "machine": machine(),
            "load_at_start": load(),
            "sources": [s.name or s.kind for s in PipelineConfig().sources],
            "protocol": "fixed split moved one event back: test events dropped, each user's "
            "last training event is what the ranker may learn from (as the validation event "
            "is on the test protocol), scored on the validation item, full ranking, training "
            "events excluded",
        }
        extra = []
        if args.holdouts != list(HOLDOUTS):
            extra.append("--holdouts " + " ".join(map(str, args.holdouts)))
        if args.leaves != list(LEAVES):
            extra.append("--leaves " + " ".join(map(str, args.leaves)))
        if args.eval_users:
            extra.append(f"--eval-users {args.eval_users}")
        if args.no_short:
            extra.append("--no-short")
        res["args"] = "".join(f" {x}" for x in extra)
        split = validation_split(data, split_file, args.eval_users)
        res["ranker"] = ranker_grid(split, tuple(args.holdouts), tuple(args.leaves), args.check)
        if not args.no_short:
            s = res["ranker"]["settings"]
            best = max(s, key=lambda k: s[k]["ndcg@10"])
            n, h = (int(x) for x in best.split(","))
            res["short_histories"] = short_histories(data, n, h)
            res["short_histories"]["chosen_with"] = f"{n} leaves, holdout {h}"
        res["seconds"] = time.perf_counter() - t
        res["load_at_end"] = load()
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"choose-defaults-{args.dataset}.json"
        path.write_text(json.dumps(res, indent=2, default=str))
    picks = decide()
    picks["date"] = time.strftime("%Y-%m-%d")
    picks["commit"] = commit()
    (RESULTS / "choose-defaults.json").write_text(json.dumps(picks, indent=2, default=str))
    runs = {
        json.loads(f.read_text())["dataset"]: json.loads(f.read_text())
        for f in sorted(RESULTS.glob("choose-defaults-*.json"))
    }
    update_markdown(runs, picks)
    print(json.dumps(picks, indent=2))


if __name__ == "__main__":
    main()
