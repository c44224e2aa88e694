"""Zero-shot tags with a Chinese vocabulary, over a Chinese and an English catalogue (issue 17).

The content analyser names an item's tags from a vocabulary by the cosine between the item's
text passages and each tag (``ZeroShotTagger``: calibrated per tag, then a softmax). Here the
vocabulary is the catalogue's own categories, hidden from the items' text:

- **KuaiRec captions** (Chinese short videos): the first-level categories (美食, 宠物 ...)
  of at least 20 videos, over each video's caption (cover text and caption, the hashtags
  kept, its categories not);
- **MovieLens-100K** (English films): the 18 genres in English and in Chinese (动作, 喜剧
  ...), over each film's IMDb plot.

Each vocabulary is tried as written, and rendered word by word into the catalogue's language
through CC-CEDICT (``avrec.language.translate``) while keeping its own names, with
multilingual-e5 (the analyser's text encoder) and the Universal Sentence Encoder
(multilingual v3). Measured: the share of items whose top tag is one of their categories
(and among the top three), against always naming the most common category and a random one.

    python -m benchmarks.zh_tags

Writes ``benchmarks/results/zh-tags.json`` and the table between the ``zh-tags`` markers in
BENCHMARKS.md. Item vectors are cached in ``benchmarks/.cache``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from avrec.config import Settings
from avrec.content.store import ContentStore
from avrec.content.tags import ZeroShotTagger
from avrec.data.loaders import load_dataset
from avrec.features.text import E5TextEncoder, UseTextEncoder
from avrec.language.passages import cached_encode
from avrec.language.translate import dictionary
from benchmarks import _provenance as provenance
from benchmarks._markdown import replace_block
from benchmarks.language import ZH_GENRES

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "benchmarks" / ".cache"
MIN_ITEMS = 20


def kuairec() -> tuple[list[str], list[list[str]], list[str]]:
    """Captions, each video's first-level category (as a one-element list), the vocabulary."""
    data = load_dataset("kuairec-captions", settings=Settings())
    titles = data.item_field("title")
    captions = data.item_field("description")
    texts, labels = [], []
    for title, caption, cats in zip(titles, captions, data.item_categories, strict=True):
        text = " ".join(x for x in dict.fromkeys((title or "", caption or "")) if x).strip()
        if cats and len(text) >= 4:
            texts.append(text)
            labels.append([cats[0]])
    counts = Counter(c[0] for c in labels)
    vocab = sorted(t for t, n in counts.items() if n >= MIN_ITEMS)
    keep = [i for i, c in enumerate(labels) if c[0] in vocab]
    return [texts[i] for i in keep], [labels[i] for i in keep], vocab


def movielens() -> tuple[list[str], list[list[str]], list[str]]:
    """Plots, each film's genres (lower case), the 18 genres."""
    data = load_dataset("movielens-100k", settings=Settings())
    plots = data.item_field("description")
    texts, labels = [], []
    for plot, cats in zip(plots, data.item_categories, strict=True):
        genres = [c.lower() for c in cats if c.lower() in ZH_GENRES]
        if plot and genres:
            texts.append(plot)
            labels.append(genres)
    return texts, labels, sorted(ZH_GENRES)


def vectors(enc, texts: list[str], name: str) -> np.ndarray:  # noqa: ANN001
    CACHE.mkdir(parents=True, exist_ok=True)
    with ContentStore(CACHE / f"zh-tags-{name}.db") as cs:
        found, n = cached_encode(enc, texts, "zh-tags", cs, batch=128)
    print(f"  {name}: {n} texts encoded now", flush=True)
    return np.stack([found[t] for t in texts]).astype(np.float32)


def score(enc, x: np.ndarray, names: list[str], shown: list[str], labels) -> dict:  # noqa: ANN001
    """Top-1 and top-3 hit rates of a tagger whose tags are encoded from ``names`` and
    named ``shown``."""
    tagger = ZeroShotTagger(enc, names, max_tags=3, min_score=0.0)
    tagger.vocabulary = list(shown)  # the names shown; the vectors are the rendering's
    tagger.calibrate("text", x)
    sims = tagger.similarities(x, "text")
    order = np.argsort(-sims, axis=1)[:, :3]
    top1 = np.mean([shown[o[0]] in set(lab) for o, lab in zip(order, labels, strict=True)])
    top3 = np.mean(
        [bool({shown[j] for j in o} & set(lab)) for o, lab in zip(order, labels, strict=True)]
    )
    return {"top1": float(top1), "top3": float(top3)}


def main() -> None:
    started = time.perf_counter()
    d = dictionary()
    out: dict = {"benchmark": "zh_tags", "catalogues": {}}
    encoders = {"e5": E5TextEncoder(), "use": UseTextEncoder()}
    for cat_name, load in (("kuairec-captions", kuairec), ("movielens-100k", movielens)):
        texts, labels, vocab = load()
        counts = Counter(c for lab in labels for c in lab)
        majority = max(counts, key=counts.get)
        res: dict = {
            "items": len(texts),
            "vocabulary": len(vocab),
            "always the most common": float(np.mean([majority in lab for lab in labels])),
            "random": float(np.mean([len(lab) for lab in labels]) / len(vocab)),
        }
        if cat_name == "kuairec-captions":  # Chinese names; their English rendering
            variants = {
                "Chinese names": (vocab, vocab),
                "Chinese names matched in English": ([d.translate(t, "en") or t for t in vocab],
                                                     vocab),
            }  # fmt: skip
            truth = labels
        else:  # English names; Chinese names as written and rendered into English
            zh = [ZH_GENRES[g] for g in vocab]
            variants = {
                "English names": (vocab, vocab),
                "Chinese names": (zh, zh),
                "Chinese names matched in English": ([d.translate(t, "en") or t for t in zh], zh),
            }
            truth = [[ZH_GENRES[g] for g in lab] for lab in labels]
        res["renderings"] = {k: v[0] for k, v in variants.items() if v[0] != v[1]}
        for enc_name, enc in encoders.items():
            x = vectors(enc, texts, f"{cat_name}-{enc_name}")
            for label, (names, shown) in variants.items():
                lab = labels if shown == vocab else truth
                r = score(enc, x, names, shown, lab)
                res[f"{enc_name}: {label}"] = r
                print(f"  {cat_name} {enc_name} {label}: {r}", flush=True)
        out["catalogues"][cat_name] = res
    out.update(
        date=time.strftime("%Y-%m-%d"),
        commit=provenance.commit(("src", "benchmarks/zh_tags.py")),
        machine=provenance.machine(),
        run_s=time.perf_counter() - started,
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "zh-tags.json").write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    lines = [
        f"Measured {out['date']} at `{out['commit']}` on {out['machine']} "
        "(`python -m benchmarks.zh_tags`): the share of items whose top zero-shot tag (and "
        "one of the top three) is one of their own categories, the categories hidden from "
        "the text; the tagger calibrated per tag as the analyser does.",
        "",
        "| catalogue | items | vocabulary | tags encoded by | top 1 | top 3 |",
        "|---|---|---|---|---|---|",
    ]
    for cat_name, res in out["catalogues"].items():
        for k, r in res.items():
            if isinstance(r, dict) and "top1" in r:
                lines.append(
                    f"| {cat_name} | {res['items']:,} | {res['vocabulary']} | {k} | "
                    f"{r['top1']:.3f} | {r['top3']:.3f} |"
                )
        lines.append(
            f"| {cat_name} | {res['items']:,} | {res['vocabulary']} | always the most common "
            f"/ random | {res['always the most common']:.3f} / {res['random']:.3f} | |"
        )
    replace_block("zh-tags", lines, "### A catalogue with no events (issue 17)")
    print(f"done in {out['run_s']:.0f}s")


if __name__ == "__main__":
    main()
