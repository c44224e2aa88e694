"""Do requests in words find what they describe? Queries written from held-out items.

For each sampled user of the fixed leave-one-out split, the query describes the user's test
item (never seen in training): on MovieLens-100K from its IMDb plot and genres, on
MicroLens-50k from its title. Queries are paraphrased by rules, not copied: a template
("a comedy film about ..."), a few of the description's content words in another order, some
replaced by synonyms, hashtags dropped. Chinese queries come from a small bilingual table of
genres and common words ("一部关于战争和家庭的剧情电影"), for the items whose description uses
a word of the table.

Each query is answered by:
- ``semantic``: e5 query vector against the items' e5 text vectors alone;
- ``keyword``: BM25 alone (typo correction on);
- ``hybrid``: both and fuzzy titles, fused (``avrec search``; semantic weight 0.25), and
  ``hybrid (equal)`` with the semantic list weighing as much as the keyword one,
  ``hybrid (tuned)`` with the weight dev queries chose;
- ``ask``: the request parsed (its genre becomes a filter), hybrid search, the pipeline's
  re-ranking, without the person (weight 0);
- ``ask + person``: the same, blended with the user's profile (weight 0.3; ``avrec ask
  --user``).

Recall@10 (the target in the first ten) and MRR (reciprocal rank within the first 100) over
the queries, for English and Chinese.

    python -m benchmarks.language [--dataset movielens-100k,microlens-50k] [--queries 500]

Writes ``benchmarks/results/language-<dataset>.json`` and the table between the ``language``
markers in BENCHMARKS.md. Text vectors are cached in ``benchmarks/.cache``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import time
from pathlib import Path

import numpy as np

from avrec.config import Settings
from avrec.data.loaders import load_dataset
from avrec.eval import FixedSplit
from avrec.language.ask import Asker
from avrec.language.search import document_text, item_documents
from avrec.language.tokens import _stop_en
from avrec.pipeline.pipeline import Pipeline, PipelineConfig
from benchmarks._markdown import replace_block

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "benchmarks" / ".cache"
MODES = ("semantic", "keyword", "hybrid (equal)", "hybrid", "hybrid (tuned)", "ask",
         "ask + person", "ask + person (tuned)")  # fmt: skip
SEMANTIC_WEIGHTS = (0.25, 0.5, 1.0)
PERSON_WEIGHTS = (0.1, 0.3, 0.5)

#: paraphrases: a word of the description -> another way to say it
SYNONYMS = {
    "murder": "killing", "killer": "murderer", "kill": "murder", "girl": "young woman",
    "boy": "young lad", "woman": "lady", "man": "guy", "friends": "pals", "friend": "buddy",
    "love": "romance", "wife": "spouse", "husband": "spouse", "police": "cops", "cop": "officer",
    "war": "conflict", "money": "cash", "car": "automobile", "house": "home", "city": "town",
    "father": "dad", "mother": "mom", "children": "kids", "child": "kid", "film": "movie",
    "story": "tale", "young": "youthful", "old": "elderly", "world": "planet", "escape": "flee",
    "fight": "battle", "dog": "puppy", "cat": "kitten", "funny": "hilarious", "cute": "adorable",
    "video": "clip", "song": "tune", "dance": "dancing", "beautiful": "gorgeous", "big": "huge",
    "small": "tiny", "fast": "quick", "baby": "infant", "food": "dish", "school": "academy",
}  # fmt: skip

#: the bilingual table for Chinese queries: English word (as in the text) -> Chinese
ZH_WORDS = {
    "war": "战争", "love": "爱情", "family": "家庭", "murder": "谋杀", "police": "警察",
    "prison": "监狱", "school": "学校", "space": "太空", "alien": "外星人", "robot": "机器人",
    "king": "国王", "queen": "女王", "dog": "狗", "cat": "猫", "music": "音乐", "money": "金钱",
    "friends": "朋友", "friend": "朋友", "father": "父亲", "mother": "母亲", "son": "儿子",
    "daughter": "女儿", "wife": "妻子", "husband": "丈夫", "town": "小镇", "city": "城市",
    "ship": "船", "island": "岛", "doctor": "医生", "lawyer": "律师", "soldier": "士兵",
    "detective": "侦探", "vampire": "吸血鬼", "ghost": "鬼", "zombie": "僵尸", "horse": "马",
    "baby": "婴儿", "child": "孩子", "children": "孩子们", "girl": "女孩", "boy": "男孩",
    "car": "汽车", "train": "火车", "dance": "舞蹈", "food": "美食", "cooking": "烹饪",
    "travel": "旅行", "game": "游戏", "football": "足球", "basketball": "篮球", "cute": "可爱",
    "funny": "搞笑", "makeup": "化妆", "fashion": "时尚", "beauty": "美丽", "puppy": "小狗",
    "kitten": "小猫", "snow": "雪", "sea": "大海", "mountain": "山", "night": "夜晚",
    "wedding": "婚礼", "revenge": "复仇", "journey": "旅程", "hero": "英雄", "gang": "帮派",
}  # fmt: skip
ZH_GENRES = {
    "action": "动作", "adventure": "冒险", "animation": "动画", "children's": "儿童",
    "comedy": "喜剧", "crime": "犯罪", "documentary": "纪录", "drama": "剧情", "fantasy": "奇幻",
    "film-noir": "黑色电影", "horror": "恐怖", "musical": "歌舞", "mystery": "悬疑",
    "romance": "爱情", "sci-fi": "科幻", "thriller": "惊悚", "war": "战争", "western": "西部",
}  # fmt: skip


def _machine() -> str:
    cores = len(os.sched_getaffinity(0))
    return f"{platform.machine()}, {cores} cores, Python {platform.python_version()}"


def content_words(text: str) -> list[str]:
    stop = _stop_en() | {"one", "two", "new", "find", "finds", "must", "get", "gets", "life"}
    words = re.findall(r"[a-z][a-z'-]+", (text or "").lower())
    return [w for w in dict.fromkeys(words) if len(w) >= 3 and w not in stop]


def english_query(doc: dict, genres: list[str], rng: np.random.Generator, titles: bool) -> str:
    """A paraphrase of the item: a template, three of its content words in another order
    (a synonym where the table has one)."""
    text = doc.get("title", "") if titles else doc.get("description", "")
    text = re.sub(r"#\w+", " ", text)  # hashtags are not what people type
    words = content_words(text)
    if not words:
        return ""
    pick = [words[i] for i in sorted(rng.choice(len(words), min(3, len(words)), replace=False))]
    pick = [SYNONYMS.get(w, w) if rng.random() < 0.5 else w for w in pick]
    rng.shuffle(pick)
    if titles:
        return " ".join(pick) + " video"
    genre = genres[0].lower() if genres else "film"
    return (
        f"a {genre} film about {', '.join(pick[:-1])} and {pick[-1]}"
        if len(pick) > 1
        else (f"a {genre} film about {pick[0]}")
    )


def chinese_query(doc: dict, genres: list[str], rng: np.random.Generator, titles: bool) -> str:
    """The item in Chinese through the bilingual table; empty when no table word appears."""
    text = doc.get("title", "") if titles else doc.get("description", "")
    words = [ZH_WORDS[w] for w in content_words(text) if w in ZH_WORDS]
    words = list(dict.fromkeys(words))
    if not words:
        return ""
    pick = [words[i] for i in sorted(rng.choice(len(words), min(2, len(words)), replace=False))]
    if titles:
        return "".join(pick) + "的视频"
    genre = next((ZH_GENRES[g.lower()] for g in genres if g.lower() in ZH_GENRES), "")
    return f"一部关于{'和'.join(pick)}的{genre}电影"


def text_vectors(dataset, name: str) -> np.ndarray:  # noqa: ANN001
    """e5 passage vectors of every item's document, cached on disk."""
    from avrec.features.text import E5TextEncoder

    enc = E5TextEncoder()
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"language-{name}-{enc.version.replace('/', '_')}.npy"
    if path.exists():
        x = np.load(path)
        if len(x) == dataset.n_items:
            return x
    docs = item_documents(dataset)
    t = time.perf_counter()
    x = enc.encode([document_text(d) for d in docs])
    print(f"  encoded {len(docs):,} items in {time.perf_counter() - t:.0f}s", flush=True)
    np.save(path, x)
    return x


def _ranks(asker: Asker, queries: list, mode: str, weight: float = 0.3, depth: int = 100) -> list:
    ranks = []
    for q, user, target in queries:
        if mode in ("semantic", "keyword", "hybrid"):
            found = [h.item for h in asker.search.search(q, k=depth, mode=mode)]
        else:
            res = asker.ask(q, user=user, k=depth, weight=weight if mode == "person" else 0.0)
            found = list(asker.pipeline.items.index(res.items.ids)) if res.items.ids else []
        ranks.append(found.index(target) + 1 if target in found else 0)
    return ranks


def _scores(ranks: list, seconds: float) -> dict:
    r = np.asarray(ranks)
    return {
        "recall@10": float(((r > 0) & (r <= 10)).mean()) if len(r) else 0.0,
        "mrr": float(np.where(r > 0, 1.0 / np.maximum(r, 1), 0.0).mean()) if len(r) else 0.0,
        "ms_per_query": seconds / max(1, len(r)) * 1000,
    }


def tune(asker: Asker, dev: list) -> tuple[float, float]:
    """The semantic weight of the fusion and the person's weight that give the best MRR on
    ``dev`` queries (other users than the reported ones)."""

    def mrr(ranks: list) -> float:
        return _scores(ranks, 0.0)["mrr"]

    default = dict(asker.search.weights)
    found = {}
    for w in SEMANTIC_WEIGHTS:
        asker.search.weights.update(semantic=w)
        found[w] = mrr(_ranks(asker, dev, "hybrid"))
    asker.search.weights.update(default)
    best_sem = max(SEMANTIC_WEIGHTS, key=lambda w: (found[w], w))
    best_person = max(PERSON_WEIGHTS, key=lambda w: (mrr(_ranks(asker, dev, "person", w)), -w))
    return best_sem, best_person


def evaluate(asker: Asker, queries: list, dev: list) -> dict:
    """Recall@10 and MRR@100 per mode over ``(query, user, target)``; the tuned modes use the
    weights :func:`tune` picked on ``dev``."""
    sem, person = tune(asker, dev)
    print(
        f"    tuned on {len(dev)} dev queries: semantic weight {sem}, person {person}", flush=True
    )
    out: dict = {"tuned": {"semantic_weight": sem, "person_weight": person}}
    default = dict(asker.search.weights)
    for mode in MODES:
        t = time.perf_counter()
        if mode in ("hybrid (tuned)", "hybrid (equal)"):
            asker.search.weights.update(semantic=sem if mode == "hybrid (tuned)" else 1.0)
            ranks = _ranks(asker, queries, "hybrid")
            asker.search.weights.update(default)
        elif mode == "ask":
            ranks = _ranks(asker, queries, "ask")
        elif mode.startswith("ask + person"):
            ranks = _ranks(asker, queries, "person", person if "tuned" in mode else 0.3)
        else:
            ranks = _ranks(asker, queries, mode)
        out[mode] = _scores(ranks, time.perf_counter() - t)
        print(f"    {mode}: {out[mode]}", flush=True)
    return out


def run(name: str, n_queries: int, seed: int = 0) -> dict:
    settings = Settings()
    data = load_dataset(name, settings=settings)
    titles = name.startswith("microlens")
    split = FixedSplit(Path(settings.data_dir) / "splits" / f"{name}.loo.tsv").split(data)
    seen = data.select(~split.masks["test"], name=f"{name}:seen")
    seen.set_item_features("text", text_vectors(data, name))
    t = time.perf_counter()
    pipe = Pipeline(**PipelineConfig(search_encode_max=0).model_dump()).fit(seen)
    fit_s = time.perf_counter() - t
    print(f"  pipeline fitted in {fit_s:.0f}s", flush=True)
    asker = Asker(pipe)
    docs = item_documents(data)
    test = split.masks["test"]
    users, targets = data.user_index[test], data.item_index[test]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(users))
    cats = [[*t, *g] for t, g in zip(data.item_tags, data.item_categories, strict=True)]
    out = {"dataset": name, "fit_s": fit_s, "languages": {}}
    n_dev = max(50, n_queries // 4)
    for lang, make in (("en", english_query), ("zh", chinese_query)):
        queries = []
        for j in order:
            item = int(targets[j])
            q = make(docs[item], cats[item], rng, titles)
            if q:
                queries.append((q, data.users.lookup([int(users[j])])[0], item))
            if len(queries) >= n_queries + n_dev:
                break
        dev, queries = queries[:n_dev], queries[n_dev:]  # different users
        print(f"  {lang}: {len(queries)} queries, e.g. {queries[0][0]!r}", flush=True)
        out["languages"][lang] = {
            "queries": len(queries),
            "dev_queries": len(dev),
            "examples": [q for q, _, _ in queries[:3]],
            "results": evaluate(asker, queries, dev),
        }
    return out


def update_markdown(results: list[dict], machine: str, date: str) -> None:
    lines = [
        f"Measured {date} on {machine} with `python -m benchmarks.language`: queries written "
        "by rules from each sampled user's held-out test item (the fixed leave-one-out split; "
        "MovieLens-100K: IMDb plot and genres, MicroLens-50k: title), never copied; Chinese "
        "ones through a bilingual table of genres and common words. Recall@10 / MRR "
        "(reciprocal rank within the first 100).",
        "",
        "| Dataset | Language | Queries | " + " | ".join(MODES) + " |",
        "|---|---|---|" + "---|" * len(MODES),
    ]
    for res in results:
        for lang, r in res["languages"].items():
            cells = [
                f"{r['results'][m]['recall@10']:.3f} / {r['results'][m]['mrr']:.3f}" for m in MODES
            ]
            lines.append(
                f"| {res['dataset']} | {lang} | {r['queries']} | " + " | ".join(cells) + " |"
            )
    lines.append("")
    for res in results:
        for lang, r in res["languages"].items():
            ex = "; ".join(f"`{q}`" for q in r["examples"][:2])
            tuned = r["results"]["tuned"]
            lines.append(
                f"- {res['dataset']} ({lang}), e.g. {ex}; tuned on {r['dev_queries']} queries "
                f"of other users: semantic weight {tuned['semantic_weight']}, person "
                f"{tuned['person_weight']}"
            )
    replace_block("language", lines, "### Requests in words and search (issue 7)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="movielens-100k,microlens-50k")
    ap.add_argument("--queries", type=int, default=500)
    args = ap.parse_args()
    if Settings().data_dir is None:
        raise SystemExit("set AVREC_DATA_DIR to ../shared/datasets")
    results = []
    for name in [x.strip() for x in args.dataset.split(",") if x.strip()]:
        print(name, flush=True)
        res = run(name, args.queries)
        res["machine"], res["date"] = _machine(), time.strftime("%Y-%m-%d")
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"language-{name}.json").write_text(
            json.dumps(res, indent=2, ensure_ascii=False)
        )
        results.append(res)
    # the table keeps the other datasets' last results (each row says its date)
    done = {r["dataset"] for r in results}
    for path in sorted(RESULTS.glob("language-*.json")):
        old = json.loads(path.read_text())
        if old.get("dataset") not in done:
            results.append(old)
    results.sort(key=lambda r: r["dataset"])
    update_markdown(results, _machine(), time.strftime("%Y-%m-%d"))


if __name__ == "__main__":
    main()
