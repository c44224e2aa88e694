"""Does avrec's understanding of content carry real signal? A check on MovieLens-100K.

Every movie is analysed from its poster (image model) and its title, IMDb plot and people (text
model); its genres are *hidden* from the analyser, so that:

1. **Neighbours share genres**: for each movie, the 10 nearest movies by content vector (fused,
   text only, poster only); how often they share a genre with it, against the rate for random
   pairs (computed exactly over all pairs).
2. **Zero-shot tags find genres**: with the 18 genre names as the tag vocabulary, how often the
   top tag is one of the movie's genres, against always answering the most common genre.
3. **Cold-start items**: a seeded 20% of the movies held out of training entirely
   (``ColdItemSplit``); NDCG@10 and HR@10 of content models against popularity, ranked among
   the held-out movies (the usual cold-start protocol) and among all movies.

    python -m benchmarks.content_quality [--ocr]

Writes ``benchmarks/results/content-quality.json`` and the tables between the
``content-quality`` markers in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from avrec.config import ContentConfig, Settings
from avrec.content.analyze import ContentAnalyzer, items_from_frame
from avrec.content.store import ContentStore
from avrec.data.loaders import load_dataset, load_public_data
from avrec.eval import ColdItemSplit, Experiment
from avrec.models import create_model
from benchmarks._markdown import replace_block

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "benchmarks" / ".cache"


def _machine() -> str:
    cores = len(os.sched_getaffinity(0))
    return f"{platform.machine()}, {cores} cores, Python {platform.python_version()}"


def analyse(ocr: bool) -> tuple[ContentStore, list[list[str]], list[str], dict]:
    data = load_public_data("movielens-100k")
    genres_of = {
        r["item_id"]: [g for g in json.loads(r["categories"] or "[]") if g != "unknown"]
        for r in data.items.select("item_id", "categories").iter_rows(named=True)
    }
    vocab = sorted({g for gs in genres_of.values() for g in gs})
    items = items_from_frame(data.items)
    for it in items:
        it.categories = []  # hidden: the genres are what we check against
    cfg = ContentConfig(
        speech=False,
        audio_features=False,
        ocr=ocr,
        tag_vocabulary=vocab,
        max_tags=3,
        min_tag_score=0.0,
    )
    CACHE.mkdir(parents=True, exist_ok=True)
    store = ContentStore(CACHE / f"ml100k-content{'-ocr' if ocr else ''}.db")
    t = time.perf_counter()
    done = {"media": 0}

    def progress(stage: str, n: int, total: int) -> None:
        if stage == "media" and n and (n - done["media"] >= 200 or n == total):
            done["media"] = n
            print(f"  media {n}/{total} ({time.perf_counter() - t:.0f}s)", flush=True)

    rep = ContentAnalyzer(cfg, store).run(items, progress=progress)
    print(
        f"analysed {rep.analysed} movies ({rep.unchanged} cached) in {rep.seconds:.1f}s; "
        f"stages { ({k: round(v, 1) for k, v in rep.stage_seconds.items()}) }; "
        f"problems: {len(rep.errors)}"
    )
    ids = [it.item_id for it in items]
    return store, [genres_of[i] for i in ids], ids, rep.to_dict()


def genre_neighbours(store: ContentStore, genres: list[list[str]], ids: list[str]) -> dict:
    vocab = sorted({g for gs in genres for g in gs})
    g = np.zeros((len(ids), len(vocab)), np.float32)
    for i, gs in enumerate(genres):
        for x in gs:
            g[i, vocab.index(x)] = 1
    has = g.sum(axis=1) > 0
    share = (g @ g.T) > 0
    off = ~np.eye(len(ids), dtype=bool)
    random_rate = float(share[np.ix_(has, has)][off[np.ix_(has, has)]].mean())
    out = {"random_pairs": random_rate}
    for modality in ("fused", "text", "visual"):
        v = store.vectors(modality, ids)
        ok = has & (np.linalg.norm(v, axis=1) > 0)
        vv = v[ok] / np.linalg.norm(v[ok], axis=1, keepdims=True)
        sims = vv @ vv.T
        np.fill_diagonal(sims, -np.inf)
        top = np.argpartition(-sims, 10, axis=1)[:, :10]
        sub = share[np.ix_(ok, ok)]
        out[modality] = float(np.take_along_axis(sub, top, axis=1).mean())
        out[f"{modality}_items"] = int(ok.sum())
    return out


def zero_shot_genres(store: ContentStore, genres: list[list[str]], ids: list[str]) -> dict:
    infos = store.infos()
    hits, n = 0, 0
    counts: dict[str, int] = {}
    for gs in genres:
        for x in gs:
            counts[x] = counts.get(x, 0) + 1
    common = max(counts, key=counts.get)  # type: ignore[arg-type]
    base = 0
    any_in_3 = 0
    for item, gs in zip(ids, genres, strict=True):
        tags = infos.get(item, {}).get("tags", [])
        if not gs:
            continue
        n += 1
        base += common in gs
        if tags:
            hits += tags[0]["tag"] in gs
            any_in_3 += any(t["tag"] in gs for t in tags[:3])
    n_vocab = len(counts)
    random_top1 = float(np.mean([len(gs) / n_vocab for gs in genres if gs]))
    return {
        "items": n,
        "random_tag": random_top1,
        "top1_is_a_genre": hits / n,
        "any_of_top3_is_a_genre": any_in_3 / n,
        "always_most_common_genre": base / n,
        "most_common_genre": common,
    }


def cold_start(store: ContentStore) -> dict:
    data = load_dataset("movielens-100k")
    store.attach(data, ["fused", "text", "visual"])
    split = ColdItemSplit(fraction=0.2, seed=0).split(data)
    train_counts = np.diff(split.train.binary().tocsc().indptr)
    cold = train_counts == 0
    models = {
        "pop": create_model("pop"),
        "content (fused, profile)": create_model("content", feature="fused"),
        "content (text, profile)": create_model("content", feature="text"),
        "content (poster, profile)": create_model("content", feature="visual"),
        "content (fused, projection to ALS)": create_model(
            "content", feature="fused", mode="projection"
        ),
    }
    return cold_item_results(split, models, cold)


def cold_item_results(split, models: dict, cold: np.ndarray) -> dict:  # noqa: ANN001
    """NDCG@10 and HR@10 (with intervals) of ``models`` on a cold-item split, ranked among
    the ``cold`` items and among all items (shared with ``benchmarks.pipeline_cold``)."""
    out: dict = {"cold_items": int(cold.sum())}
    for label, cands in (("among cold items", cold), ("among all items", None)):
        exp = Experiment(split, models, ["ndcg@10", "hr@10"], n_bootstrap=1000, candidates=cands)
        res = exp.run()
        rows = {(r["model"], r["metric"]): r for r in res.records()}
        out[label] = {
            name: {
                m: {
                    "value": rows[name, m]["value"],
                    "ci": [rows[name, m]["ci_low"], rows[name, m]["ci_high"]],
                }
                for m in ("ndcg@10", "hr@10")
            }
            for name in models
        }
        out[label]["protocol"] = exp.protocol
        for name in models:
            print(
                f"  {label:17s} {name:36s} ndcg@10 {res.value(name, 'ndcg@10'):.4f}  "
                f"hr@10 {res.value(name, 'hr@10'):.4f}",
                flush=True,
            )
    return out


def update_markdown(res: dict) -> None:
    nb, zs, cs = res["neighbours"], res["zero_shot"], res["cold_start"]
    lines = [
        f"Measured {res['date']} on {res['machine']} with `python -m benchmarks.content_quality`"
        f" (posters + titles + IMDb plots + people; genres hidden from the analyser; OCR "
        f"{'on' if res['ocr'] else 'off'}).",
        "",
        "| Check | Result | Baseline |",
        "|---|---|---|",
        f"| 10 nearest movies by fused vector share a genre | {nb['fused']:.1%} | random pairs "
        f"{nb['random_pairs']:.1%} |",
        f"| ... by text vector only | {nb['text']:.1%} | |",
        f"| ... by poster vector only | {nb['visual']:.1%} | |",
        f"| zero-shot top tag is one of the movie's genres | {zs['top1_is_a_genre']:.1%} | "
        f"a random genre {zs['random_tag']:.1%}; always '{zs['most_common_genre']}' "
        f"{zs['always_most_common_genre']:.1%} |",
        f"| one of the top 3 zero-shot tags is a genre | {zs['any_of_top3_is_a_genre']:.1%} | |",
        "",
        f"Cold-start items ({cs['cold_items']} movies held out of training, seed 0), NDCG@10 / "
        "HR@10:",
        "",
        "| Model | among the cold movies | among all movies |",
        "|---|---|---|",
    ]
    a, b = cs["among cold items"], cs["among all items"]
    for name in a:
        if name == "protocol":
            continue
        lines.append(
            f"| {name} | {a[name]['ndcg@10']['value']:.4f} / {a[name]['hr@10']['value']:.4f} | "
            f"{b[name]['ndcg@10']['value']:.4f} / {b[name]['hr@10']['value']:.4f} |"
        )
    replace_block("content-quality", lines, "## Content understanding quality (MovieLens-100K)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ocr", action="store_true", help="also read the text on the posters")
    args = ap.parse_args()
    if Settings().data_dir is None:
        raise SystemExit("set AVREC_DATA_DIR to ../shared/datasets")
    store, genres, ids, analysis = analyse(args.ocr)
    res = {
        "machine": _machine(),
        "date": time.strftime("%Y-%m-%d"),
        "ocr": args.ocr,
        "analysis": analysis,
    }
    res["neighbours"] = genre_neighbours(store, genres, ids)
    print("neighbours sharing a genre:", {k: round(v, 4) for k, v in res["neighbours"].items()})
    res["zero_shot"] = zero_shot_genres(store, genres, ids)
    print("zero-shot genres:", res["zero_shot"])
    res["cold_start"] = cold_start(store)
    store.close()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "content-quality.json").write_text(json.dumps(res, indent=2, default=str))
    update_markdown(res)


if __name__ == "__main__":
    main()
