"""Do requests in words find the film or clip they describe?

Two query sets, both answered by the pipeline the service serves, fitted on the training
events of the fixed leave-one-out split:

- **paraphrase** (the main table): ``benchmarks/data/movielens-100k-queries.tsv``, queries
  written as people write them, in English and in Chinese, from general knowledge of
  well-known films and without the catalogue's text (``benchmarks/data/README.md`` says how
  they were made). Each language is split by a hash of ``query_id`` into a development half
  and a held-out half. The hybrid search's fusion settings (the weights for requests in the
  catalogue's own language, those for requests that cross languages, the keyword evidence
  boost) are chosen on the development sets only (:mod:`benchmarks.language_grid`); the
  held-out half is reported beside it and chooses nothing. These queries have no user, so
  ``ask`` runs anonymously. The KuaiRec captions (Chinese short videos) have a request set
  of their own, in both languages, made the same way.
- **lexical (rule-made from the target's own words)**: the earlier queries, kept as a
  labelled reference for both datasets. For each sampled user of the split, a query made by
  rules from the user's test item: three content words of its IMDb plot (MovieLens-100K) or
  title (MicroLens-50k), some swapped for synonyms, in a template ("a comedy film about
  ..."); Chinese ones from a small bilingual word table. They share words with the indexed
  text by construction, so they measure word overlap, and nothing is chosen on them.

Each query is answered by:
- ``semantic``: the e5 query vector against the items' e5 text vectors (and transcript
  passages) alone; ``description``: against the e5 vectors of the descriptions that say
  more than the title; ``multilingual``: the Universal Sentence Encoder's sentence vectors;
  ``translated``: e5 over the request's word-by-word translation; ``keyword``: BM25 alone
  (typo correction on);
- ``hybrid (equal)``: every leg fused by reciprocal rank at weight 1; ``hybrid
  (untranslated)``: the defaults without the translation (the ablation); ``hybrid
  (default)``: the default weights (``PipelineConfig.search_params``; ``avrec search``);
- ``ask``: the request parsed (a genre it names becomes a filter), hybrid search, the
  pipeline's ranking and explanations (``avrec ask``), without the person (weight 0);
- ``ask + person`` (lexical only, where each query has a user): blended with the user's
  profile at ``avrec ask --user``'s default weight.

Recall@10 (the target among the first ten) and MRR (reciprocal rank within the first 100).
Times (paraphrase set): ms per query at k = 10 as served, explanations of the shown items
included, every query encoded afresh by e5 (the ranks at depth 100 reuse the encodings).

    python -m benchmarks.language [--dataset movielens-100k,microlens-50k] [--queries 500]

Writes ``benchmarks/results/language-<dataset>.json`` (with the date and the git commit) and
the tables between the ``language`` markers in BENCHMARKS.md. Text vectors are cached in
``benchmarks/.cache``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import time
from pathlib import Path

import numpy as np

from avrec.config import Settings
from avrec.data.loaders import load_dataset
from avrec.eval import FixedSplit
from avrec.language.ask import Asker
from avrec.language.search import PAIRS, SearchIndex, document_text, item_documents
from avrec.language.tokens import _stop_en
from avrec.pipeline.pipeline import Pipeline, PipelineConfig
from benchmarks import _provenance as provenance
from benchmarks import language_grid
from benchmarks._markdown import replace_block

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "benchmarks" / ".cache"
QUERIES = ROOT / "benchmarks" / "data" / "movielens-100k-queries.tsv"
#: the request sets written for each catalogue, and the catalogue's own language
QUERY_FILES = {
    "movielens-100k": (QUERIES, "en"),
    "kuairec-captions": (ROOT / "benchmarks" / "data" / "kuairec-captions-queries.tsv", "zh"),
}
PARAPHRASE_MODES = (
    "semantic", "description", "multilingual", "translated", "keyword", "hybrid (equal)",
    "hybrid (untranslated)", "hybrid (default)", "ask",
)  # fmt: skip
LEXICAL_MODES = (
    "semantic", "keyword", "hybrid (equal)", "hybrid (default)", "ask", "ask + person",
)  # fmt: skip
#: rule-made requests from the words of the split's validation items (not its test items),
#: a development set for people who type an item's own words
LEXICAL_DEV = 200
#: how deep each leg's list goes before fusion (an item below it in one leg gets nothing
#: from that leg)
DEPTH = 100

#: lexical queries: a word of the description -> another way to say it
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

#: lexical Chinese queries: English word (as in the text) -> Chinese
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


# -- the paraphrase set ------------------------------------------------------------------------
def half(query_id: str) -> str:
    """``"dev"`` or ``"held-out"``: the parity of the first 32 bits of ``sha256(query_id)``
    (stable when queries are added)."""
    return (
        "dev"
        if int(hashlib.sha256(query_id.encode()).hexdigest()[:8], 16) % 2 == 0
        else ("held-out")
    )


def read_paraphrases(path: Path = QUERIES) -> list[dict]:
    """The rows of the query file, each checked: a known language, a unique id, the split
    column agreeing with :func:`half`."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    ids = [r["query_id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise SystemExit(f"{path}: query_id repeats")
    for r in rows:
        r.setdefault("names_person", "0")  # the KuaiRec set does not mark them
        if r["lang"] not in ("en", "zh") or r["names_person"] not in ("0", "1"):
            raise SystemExit(f"{path}: bad row {r}")
        if r["split"] != half(r["query_id"]):
            raise SystemExit(
                f"{path}: {r['query_id']} is in {r['split']}, the hash says {half(r['query_id'])}"
            )
    return rows


# -- the lexical set ---------------------------------------------------------------------------
def content_words(text: str) -> list[str]:
    stop = _stop_en() | {"one", "two", "new", "find", "finds", "must", "get", "gets", "life"}
    words = re.findall(r"[a-z][a-z'-]+", (text or "").lower())
    return [w for w in dict.fromkeys(words) if len(w) >= 3 and w not in stop]


def english_query(doc: dict, genres: list[str], rng: np.random.Generator, titles: bool) -> str:
    """A rule-made query for the item: a template, three of its own content words in another
    order (a synonym where the table has one)."""
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
    """The item's own words in Chinese through the bilingual table; empty when no table word
    appears."""
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


# -- answering ---------------------------------------------------------------------------------
def text_vectors(dataset, name: str) -> np.ndarray:  # noqa: ANN001
    """e5 passage vectors of every item's document, cached on disk by text."""
    from avrec.content.store import ContentStore
    from avrec.features.text import E5TextEncoder
    from avrec.language.passages import cached_encode

    enc = E5TextEncoder()
    CACHE.mkdir(parents=True, exist_ok=True)
    texts = [document_text(d) for d in item_documents(dataset)]
    t = time.perf_counter()
    # by text, as `avrec train` keeps them: a changed document is encoded again
    with ContentStore(CACHE / f"{name}-search.db") as cs:
        found, n = cached_encode(enc, texts, "search", cs)
    if n:
        print(f"  encoded {n:,} item texts in {time.perf_counter() - t:.0f}s", flush=True)
    return np.stack([found[t] for t in texts]).astype(np.float32)


def answer(asker: Asker, query: str, mode: str, user: str | None, k: int) -> list[int]:
    """The item indexes ``mode`` returns for ``query``, best first (``k`` of them at most)."""
    if mode in ("semantic", "keyword", "multilingual", "translated", "description"):
        return [h.item for h in asker.search.search(query, k=k, mode=mode, explain=k <= 10)]
    if mode.startswith("hybrid"):
        return [h.item for h in asker.search.search(query, k=k, explain=k <= 10)]
    weight = None if mode == "ask + person" else 0.0
    res = asker.ask(query, user=user, k=k, weight=weight)
    return [int(i) for i in asker.pipeline.items.index(res.items.ids)] if res.items.ids else []


def run_mode(
    asker: Asker,
    queries: list,
    mode: str,
    weight: float | dict,
    k: int = DEPTH,
    timed: bool = False,
) -> tuple:
    """The target's rank (0: not within ``k``) for each ``(query, user, target)``, and the
    seconds each took, the hybrid modes at semantic ``weight`` (or at the ``weight`` dict's
    retriever weights). Untimed runs reuse the e5 and USE query vectors of earlier runs
    (:class:`QueryVectors`); a ``timed`` one encodes every query afresh, as a served request
    does."""
    every = [asker.search.weights, *asker.search.pair_weights.values()]
    saved = [dict(x) for x in every]
    saved_tk = asker.search.translate_keywords
    w = dict(weight) if isinstance(weight, dict) else {"semantic": weight}
    if "translate_keywords" in w:
        asker.search.translate_keywords = bool(w.pop("translate_keywords"))
    if mode.startswith("hybrid") or mode.startswith("ask"):
        for x in every:
            x.update(w)
    search = asker.search
    memo = search.__dict__.pop("encode_query", None)  # the QueryVectors, if any
    mmemo = search.__dict__.pop("encode_multilingual_query", None)
    if not timed:
        search.encode_query = memo or QueryVectors(search.encode_query)
        search.encode_multilingual_query = mmemo or QueryVectors(search.encode_multilingual_query)
    search._encoded.clear()
    search._m_encoded.clear()
    ranks, times = [], []
    try:
        for q, user, target in queries:
            t = time.perf_counter()
            found = answer(asker, q, mode, user, k)
            times.append(time.perf_counter() - t)
            ranks.append(found.index(target) + 1 if target in found else 0)
    finally:
        for now, before in zip(every, saved, strict=True):
            now.clear()
            now.update(before)
        search.translate_keywords = saved_tk
        if memo is not None:
            search.encode_query = memo
        if mmemo is not None:
            search.encode_multilingual_query = mmemo
    return ranks, times


class QueryVectors:
    """The search index's query encoder with every answer kept: the ranks of one query set
    are computed for many modes and weights, and e5 is the slow part."""

    def __init__(self, encode) -> None:  # noqa: ANN001
        self.encode, self.seen = encode, {}

    def __call__(self, query: str) -> np.ndarray:
        if query not in self.seen:
            self.seen[query] = self.encode(query)
        return self.seen[query]


def scores(ranks: list, seconds: float | None = None) -> dict:
    r = np.asarray(ranks)
    out = {
        "queries": len(r),
        "recall@10": float(((r > 0) & (r <= 10)).mean()) if len(r) else 0.0,
        "mrr": float(np.where(r > 0, 1.0 / np.maximum(r, 1), 0.0).mean()) if len(r) else 0.0,
    }
    if seconds is not None:
        out["ms_per_query"] = seconds / max(1, len(r)) * 1000
    return out


def mode_weight(mode: str, default: float) -> float | dict:
    """The retriever weights a mode runs at: ``hybrid (equal)`` has every meaning leg weigh as
    much as the keyword one; ``hybrid (untranslated)`` is the default without the request's
    translation (the ablation); the others keep the defaults."""
    if mode == "hybrid (equal)":
        return {"semantic": 1.0, "multilingual": 1.0, "translated": 1.0, "description": 1.0}
    if mode == "hybrid (untranslated)":
        return {"translated": 0.0, "translate_keywords": False}
    return default


def _timing(times: list[float]) -> dict:
    ms = np.asarray(times) * 1000
    if not len(ms):
        return {"ms_per_query": 0.0, "p50_ms": 0.0, "p99_ms": 0.0}
    return {
        "ms_per_query": float(ms.mean()),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


# -- the two sets ------------------------------------------------------------------------------
def request_halves(data, name: str) -> tuple[list[dict], dict]:  # noqa: ANN001
    """The request set's rows (with their target item) and its halves by language."""
    path, _ = QUERY_FILES[name]
    rows = read_paraphrases(path)
    items = data.items.index([r["item_id"] for r in rows])
    for r, i in zip(rows, items.tolist(), strict=True):
        r["target"] = int(i)
    halves = {
        (lang, h): [r for r in rows if r["lang"] == lang and half(r["query_id"]) == h]
        for lang in ("en", "zh")
        for h in ("dev", "held-out")
    }
    return rows, halves


def triples(rs: list[dict]) -> list:
    return [(r["query"], None, r["target"]) for r in rs]


def dev_grid(asker: Asker, data, name: str, lexical_dev: dict | None = None) -> dict:  # noqa: ANN001
    """The development sets' MRR at every cell of the fusion grid
    (:mod:`benchmarks.language_grid`; chosen in :func:`main` over every catalogue's
    development sets together): the request set's development half in each language and,
    where there is a split, ``lexical_dev`` (rule-made from the validation items' words)."""
    _, halves = request_halves(data, name)
    dev_sets = {lang: triples(halves[lang, "dev"]) for lang in ("en", "zh")}
    for lang, qs in (lexical_dev or {}).items():
        dev_sets[f"lexical {lang}"] = [(q, None, t) for q, _, t in qs]
    t = time.perf_counter()
    grid = language_grid.measure(asker.search, dev_sets)
    n = sum(len(g) for g in grid.values())
    print(f"  development grid: {n} cells in {time.perf_counter() - t:.0f}s", flush=True)
    return {"cells": grid, "sets": dev_sets}


def paraphrase(asker: Asker, data, name: str, defaults: dict, grid: dict) -> dict:  # noqa: ANN001
    """Every mode on both halves of ``name``'s request set, at the index's current
    settings (``defaults``)."""
    path, catalogue_lang = QUERY_FILES[name]
    rows, halves = request_halves(data, name)
    out: dict = {
        "file": str(path.relative_to(ROOT)),
        "catalogue_language": catalogue_lang,
        "defaults": defaults,
        "dev_grid": grid["cells"],
        "examples": {
            lang: [r["query"] for r in rows if r["lang"] == lang][:2] for lang in ("en", "zh")
        },
        "halves": {},
    }
    for (lang, h), rs in halves.items():
        res: dict = {"queries": len(rs), "names_person": sum(r["names_person"] == "1" for r in rs)}
        for mode in PARAPHRASE_MODES:
            w = mode_weight(mode, {})
            ranks, _ = run_mode(asker, triples(rs), mode.split(" (")[0], w)
            _, t10 = run_mode(asker, triples(rs), mode.split(" (")[0], w, k=10, timed=True)
            flag = np.asarray([r["names_person"] == "1" for r in rs])
            rk = np.asarray(ranks)
            res[mode] = {
                **scores(ranks),
                **_timing(t10),
                "no_person_named": scores(rk[~flag].tolist()),
                "person_named": scores(rk[flag].tolist()),
                "ranks": {r["query_id"]: int(x) for r, x in zip(rs, ranks, strict=True)},
            }
            print(
                f"    {lang}->{catalogue_lang} {h} {mode}: R@10 {res[mode]['recall@10']:.3f} "
                f"MRR {res[mode]['mrr']:.3f} p50 {res[mode]['p50_ms']:.0f} ms",
                flush=True,
            )
        out["halves"][f"{lang} {h}"] = res
    return out


def lexical_queries(
    data, split, name: str, n_queries: int, stage: str = "test", seed: int = 0
) -> dict:  # noqa: ANN001
    """Rule-made queries of ``n_queries`` sampled users per language, each from the words of
    the user's ``stage`` item (``test``: the reference table; ``valid``: a development set)."""
    titles = name.startswith("microlens")
    docs = item_documents(data)
    mask = split.masks[stage]
    users, targets = data.user_index[mask], data.item_index[mask]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(users))
    cats = [[*t, *g] for t, g in zip(data.item_tags, data.item_categories, strict=True)]
    out: dict = {}
    for lang, make in (("en", english_query), ("zh", chinese_query)):
        queries = []
        for j in order:
            item = int(targets[j])
            q = make(docs[item], cats[item], rng, titles)
            if q:
                queries.append((q, data.users.lookup([int(users[j])])[0], item))
            if len(queries) >= n_queries:
                break
        out[lang] = queries
    return out


def lexical(asker: Asker, data, split, name: str, n_queries: int, seed: int = 0) -> dict:  # noqa: ANN001
    """The rule-made queries of ``n_queries`` sampled test users per language."""
    out: dict = {}
    for lang, queries in lexical_queries(data, split, name, n_queries, "test", seed).items():
        print(f"  lexical {lang}: {len(queries)} queries, e.g. {queries[0][0]!r}", flush=True)
        res: dict = {"queries": len(queries), "examples": [q for q, _, _ in queries[:2]]}
        for mode in LEXICAL_MODES:
            ranks, _ = run_mode(asker, queries, mode.split(" (")[0], mode_weight(mode, {}))
            res[mode] = scores(ranks)
            print(f"    {lang} {mode}: {res[mode]}", flush=True)
        out[lang] = res
    return out


def prepare(name: str) -> dict:
    """Fit the pipeline the service would serve for ``name`` and measure the development
    grid; the tables come after the settings are chosen (:func:`finish`)."""
    settings = Settings()
    data = load_dataset(name, settings=settings)
    split = None
    if data.n_events:  # fitted on the split's training events, as served
        split = FixedSplit(Path(settings.data_dir) / "splits" / f"{name}.loo.tsv").split(data)
        seen = data.select(~split.masks["test"], name=f"{name}:seen")
    else:  # a catalogue without events (KuaiRec captions): the cold pipeline
        seen = data
    seen.set_item_features("text", text_vectors(data, name))
    from avrec.content.store import ContentStore

    CACHE.mkdir(parents=True, exist_ok=True)
    cache = ContentStore(CACHE / f"{name}-search.db")  # USE sentence vectors, by text
    t = time.perf_counter()
    pipe = Pipeline(**PipelineConfig(search_encode_max=0).model_dump())
    pipe.text_cache = cache  # type: ignore[attr-defined]
    pipe.fit(seen)
    del pipe.text_cache  # type: ignore[attr-defined]
    cache.close()
    fit_s = time.perf_counter() - t
    print(f"  pipeline fitted in {fit_s:.0f}s", flush=True)
    asker = Asker(pipe)
    ctx = {"name": name, "data": data, "split": split, "asker": asker, "fit_s": fit_s}
    if name in QUERY_FILES:
        dev = None
        if split is not None and split.masks["valid"].any():
            dev = lexical_queries(data, split, name, LEXICAL_DEV, "valid", seed=1)
        ctx["grid"] = dev_grid(asker, data, name, dev)
    return ctx


def current_settings(search) -> dict:  # noqa: ANN001
    """The index's fusion settings in the grid's terms: the evidence boost, the keyword
    translation, and each language pair's weights that the grid varies."""
    out: dict = {
        "keyword_evidence": float(search.keyword_evidence),
        "translate_keywords": bool(search.translate_keywords),
    }
    for pair in PAIRS:
        w = search.weights_for(pair)
        out[pair] = {n: float(w.get(n, 0.0)) for n in language_grid.params(pair)}
    return out


def finish(ctx: dict, settings: dict, n_queries: int) -> dict:
    """Every table of ``ctx``'s dataset at ``settings`` (the chosen or the default fusion
    settings, as :func:`current_settings` gives them)."""
    asker, data, name = ctx["asker"], ctx["data"], ctx["name"]
    s = asker.search
    s.keyword_evidence = float(settings.get("keyword_evidence", s.keyword_evidence))
    s.translate_keywords = bool(settings.get("translate_keywords", s.translate_keywords))
    for pair in PAIRS:
        s.pair_weights[pair].update(settings.get(pair, {}))
    out = {
        "dataset": name,
        "fit_s": ctx["fit_s"],
        "search_pair_weights": {p: dict(w) for p, w in s.pair_weights.items()},
        "search_depth": s.depth,
        "keyword_evidence": s.keyword_evidence,
        "translate_keywords": s.translate_keywords,
        "person_weight": asker.personal_weight,
    }
    if "grid" in ctx:
        out["paraphrase"] = paraphrase(asker, data, name, current_settings(s), ctx["grid"])
        out["paraphrase"]["grid_check"] = ctx.get("grid_check")
    if ctx["split"] is not None:
        out["lexical"] = lexical(asker, data, ctx["split"], name, n_queries)
    return out


def _cell(r: dict) -> str:
    return f"{r['recall@10']:.3f} / {r['mrr']:.3f}"


def _settings_text(st: dict) -> str:
    pairs = "; ".join(
        f"{p}: " + ", ".join(f"{k} {float(v):g}" for k, v in st[p].items())
        for p in PAIRS
        if p in st
    )
    return (f"keyword 1, title 0.5, keyword_evidence {st.get('keyword_evidence', 0):g}, "
            f"translated keywords {'on' if st.get('translate_keywords') else 'off'}; "
            f"{pairs}")  # fmt: skip


def grid_lines(chosen: tuple[dict, dict], defaults: dict) -> list[str]:
    """The development grid in BENCHMARKS.md: each pair's five best cells, and each
    setting's effect with the others held at the chosen cell."""
    best, means = chosen
    lines = [
        "Development sets (each catalogue's development half in both languages and, for "
        "MovieLens-100K, 200 rule-made requests per language from the words of the split's "
        "validation items), mean hybrid MRR over the sets of each language pair (request-"
        "catalogue; a crossing request is also translated). The grid "
        f"({sum(len(t) for t in means.values())} cells, `benchmarks/language_grid.py`) "
        "varies the keyword evidence boost and whether a translation's words join BM25 "
        "(one for every pair), and per pair the weights of e5 over the request (semantic), "
        "USE (multilingual) and e5 over the descriptions (description); for crossing pairs "
        "also e5 over the translation (translated). Chosen: "
        f"{_settings_text(best)} (the defaults: {_settings_text(defaults)}).",
        "",
    ]
    for pair in PAIRS:
        table = means.get(pair, {})
        if not table or pair not in best:
            continue
        names = ["evidence", *language_grid.params(pair)]
        if language_grid.crossing(pair):
            names.append("translated keywords")
        lines += [f"Best cells, {pair}:", "", "| " + " | ".join(names) + " | mean MRR |",
                  "|" + "---|" * (len(names) + 1)]  # fmt: skip
        for k in sorted(table, key=lambda k: -table[k])[:5]:
            lines.append("| " + " | ".join(k.split(",")) + f" | {table[k]:.3f} |")
        at = {"evidence": best["keyword_evidence"], **best[pair]}
        at["translated keywords"] = float(best["translate_keywords"])
        cells = []
        for i, name in enumerate(names):
            values = (language_grid.EVIDENCE if i == 0 else (0.0, 1.0)
                      if name == "translated keywords" else language_grid.VALUES[name])  # fmt: skip
            row = []
            for v in values:
                probe = dict(at, **{name: v})
                k = ",".join(f"{float(probe[n]):g}" for n in names)
                mark = "**" if float(v) == float(at[name]) else ""
                row.append(f"{v:g}: {mark}{table.get(k, float('nan')):.3f}{mark}")
            cells.append(f"- {name}: " + ", ".join(row))
        lines += ["", f"One setting at a time, the others at the chosen cell ({pair}):", "",
                  *cells, ""]  # fmt: skip
    return lines


def update_markdown(results: list[dict], chosen: tuple[dict, dict]) -> None:
    lines: list[str] = []
    para = [r for r in results if "paraphrase" in r]
    if para:
        defaults = para[0]["paraphrase"]["defaults"]
        lines += [
            "**Requests in words, in both languages, over both catalogues** (measured with "
            "`python -m benchmarks.language`; each row names its date and commit). The "
            "requests were written without copying the catalogue's text (`benchmarks/data/"
            "README.md` says how) and split by a hash of the query id. Recall@10 / MRR "
            "(reciprocal rank within the first 100). `semantic`: multilingual-e5 alone; "
            "`multilingual`: Universal Sentence Encoder (multilingual v3) sentence vectors "
            "alone; `keyword`: BM25 alone; `hybrid (equal)`: every leg fused by reciprocal "
            "rank at weight 1; `hybrid (default)`: the default weights "
            f"({_settings_text(defaults)}); `ask`: the request "
            "parsed, searched and ranked by the pipeline, anonymous (no user).",
            "",
            "| Catalogue | Request → catalogue | Half | Queries | "
            + " | ".join(PARAPHRASE_MODES)
            + " |",
            "|---|---|---|---|" + "---|" * len(PARAPHRASE_MODES),
        ]
        for res in para:
            p = res["paraphrase"]
            cat = p["catalogue_language"]
            for key, r in p["halves"].items():
                lang, h = key.split(" ")
                cells = [_cell(r[m]) for m in PARAPHRASE_MODES]
                lines.append(
                    f"| {res['dataset']} | {lang} → {cat} | {h} | {r['queries']} | "
                    + " | ".join(cells)
                    + " |"
                )
        lines += [
            "",
            "Time per request at k = 10 as served (each query encoded afresh), p50 / p99 ms "
            "over both halves and languages:",
            "",
            "| Catalogue | " + " | ".join(PARAPHRASE_MODES) + " | measured |",
            "|---|" + "---|" * len(PARAPHRASE_MODES) + "---|",
        ]
        for res in para:
            hs = res["paraphrase"]["halves"].values()
            cells = []
            for m in PARAPHRASE_MODES:
                n = sum(r["queries"] for r in hs)
                p50 = sum(r[m]["p50_ms"] * r["queries"] for r in hs) / max(n, 1)
                p99 = max(r[m]["p99_ms"] for r in hs)
                cells.append(f"{p50:.0f} / {p99:.0f}")
            lines.append(
                f"| {res['dataset']} | "
                + " | ".join(cells)
                + f" | {res['date']}, `{res['commit']}`, {res['machine']} |"
            )
        lines += [
            "",
            "(p50: the request-weighted mean of the halves' medians; p99: the largest of theirs.)",
            "",
        ]
        lines += grid_lines(chosen, defaults)
        lines.append("")
    lex = [r for r in results if "lexical" in r]
    lines += [
        "**Lexical queries (rule-made from the target's own words)**, kept for reference only; "
        "nothing is chosen on them. For each sampled user of the fixed leave-one-out split, "
        "three content words of the test item's own text (MovieLens-100K: IMDb plot and "
        "genre, MicroLens-50k: title), some swapped for synonyms; Chinese ones through a "
        "bilingual table of genres and common words. `ask + person`: the user's profile at "
        "`avrec ask --user`'s default weight. Recall@10 / MRR.",
        "",
        "| Dataset | Language | Queries | " + " | ".join(LEXICAL_MODES) + " | measured |",
        "|---|---|---|" + "---|" * len(LEXICAL_MODES) + "---|",
    ]
    for res in lex:
        for lang, r in res["lexical"].items():
            cells = [_cell(r[m]) if m in r else "-" for m in LEXICAL_MODES]
            lines.append(
                f"| {res['dataset']} | {lang} | {r['queries']} | "
                + " | ".join(cells)
                + f" | {res['date']}, `{res['commit']}` |"
            )
    lines.append("")
    for res in lex:
        for lang, r in res["lexical"].items():
            ex = "; ".join(f"`{q}`" for q in r["examples"])
            lines.append(f"- {res['dataset']} ({lang}), e.g. {ex}")
    replace_block("language", lines, "### Requests in words and search (issue 7)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="movielens-100k,kuairec-captions,microlens-50k")
    ap.add_argument("--queries", type=int, default=500, help="lexical queries per language")
    ap.add_argument(
        "--apply-chosen",
        action="store_true",
        help="measure the tables at the settings the development sets choose (then make "
        "them the defaults), not at the current defaults",
    )
    args = ap.parse_args()
    if Settings().data_dir is None:
        raise SystemExit("set AVREC_DATA_DIR to ../shared/datasets")
    names = [x.strip() for x in args.dataset.split(",") if x.strip()]
    started = time.perf_counter()
    ctxs = []
    for name in names:
        print(name, flush=True)
        ctxs.append(prepare(name))
    # the settings are chosen over every catalogue's development sets measured in this run
    grids = [c["grid"]["cells"] for c in ctxs if "grid" in c]
    chosen = language_grid.choose(grids) if grids else ({}, {})
    defaults = current_settings(SearchIndex(**PipelineConfig().search_params))
    if chosen[0] and chosen[0] != defaults:
        print(f"!! the development sets choose {chosen[0]}, the defaults are {defaults}: "
              "change the defaults")  # fmt: skip
    applied = chosen[0] if args.apply_chosen and chosen[0] else defaults
    for ctx in ctxs:
        if "grid" in ctx and chosen[0]:
            ctx["grid_check"] = language_grid.check(
                ctx["asker"].search, ctx["grid"]["sets"], applied
            )
            print(f"  {ctx['name']}: grid against fuse {ctx['grid_check']}", flush=True)
    results = []
    for ctx in ctxs:
        print(f"{ctx['name']}: tables at {applied}", flush=True)
        res = finish(ctx, applied, args.queries)
        res["settings_applied"] = "chosen on the development sets" if (
            args.apply_chosen and chosen[0]) else "the defaults"  # fmt: skip
        res["machine"], res["date"] = provenance.machine(), time.strftime("%Y-%m-%d")
        res["commit"] = provenance.commit(("src", "configs", "benchmarks/language.py",
                                           "benchmarks/data"))  # fmt: skip
        res["run_s"] = time.perf_counter() - started
        # above the core count, the times are contaminated by other work on the machine
        res["load_average_1min"] = provenance.load()
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"language-{ctx['name']}.json").write_text(
            json.dumps(res, indent=2, ensure_ascii=False) + "\n"
        )
        results.append(res)
    # the tables keep the other datasets' last results (each row says its date and commit)
    done = {r["dataset"] for r in results}
    for path in sorted(RESULTS.glob("language-*.json")):
        old = json.loads(path.read_text())
        if old.get("dataset") not in done and "lexical" in old:
            old.pop("paraphrase", None)  # its grid was not chosen with this run's
            results.append(old)
    results.sort(key=lambda r: r["dataset"], reverse=True)
    update_markdown(results, chosen)


if __name__ == "__main__":
    main()
