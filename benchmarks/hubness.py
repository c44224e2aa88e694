"""Which meaning leg crosses languages, and does hubness correction help? (issue 17)

On the development half of the MovieLens-100K request set (English and Chinese requests over
the English catalogue), each variant ranks the whole catalogue by one score and is measured
by Recall@10 and MRR (within the first 100):

- ``e5``: multilingual-e5 query vector against each item's e5 document vector (the
  ``semantic`` leg);
- ``use document``: the Universal Sentence Encoder (multilingual v3) on the whole document;
- ``use sentences``: USE on each sentence (title, tags, each sentence of the plot), an item
  scored by its best one (the ``multilingual`` leg);
- ``+ centred``: the catalogue's mean vector taken from items and query before the cosine;
- ``+ CSLS``: cross-domain similarity local scaling, each item's score less half its mean
  cosine to its 10 nearest items (a hub is near everything);
- ``rrf``: reciprocal-rank fusion (k = 60) of two variants' full rankings.

Only the development half is read: the held-out half stays for the language benchmark.

    python -m benchmarks.hubness

Writes ``benchmarks/results/hubness.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from avrec.config import Settings
from avrec.data.loaders import load_dataset
from avrec.features.text import E5TextEncoder, UseTextEncoder
from avrec.language.passages import document_text, item_documents, multilingual_passages
from benchmarks._provenance import commit, load, machine
from benchmarks.language import QUERIES, half, read_paraphrases, text_vectors

RESULTS = Path(__file__).parent / "results"


def _norm(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)


def _centred(q: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = x.mean(0)
    return _norm(q - mu), _norm(x - mu)


def _csls(scores: np.ndarray, x: np.ndarray, k: int = 10) -> np.ndarray:
    g = x @ x.T
    np.fill_diagonal(g, -1)
    hub = np.sort(g, axis=1)[:, -k:].mean(1)
    return scores - hub[None, :] / 2


def _ranks(scores: np.ndarray) -> np.ndarray:
    order = np.argsort(-scores, axis=1, kind="stable")
    out = np.empty_like(order)
    out[np.arange(len(scores))[:, None], order] = np.arange(1, scores.shape[1] + 1)[None, :]
    return out


def _rrf(*scores: np.ndarray, k: float = 60.0) -> np.ndarray:
    return sum(1.0 / (k + _ranks(s)) for s in scores)


def main() -> None:
    data = load_dataset("movielens-100k", settings=Settings())
    docs = item_documents(data)
    rows = [r for r in read_paraphrases(QUERIES) if half(r["query_id"]) == "dev"]
    target = data.items.index([r["item_id"] for r in rows])
    lang = np.asarray([r["lang"] for r in rows])
    queries = [r["query"] for r in rows]
    t = time.perf_counter()
    e = text_vectors(data, "movielens-100k")
    qe = E5TextEncoder().encode_queries(queries)
    use = UseTextEncoder()
    u = use.encode([document_text(d) for d in docs])
    qu = use.encode(queries)
    seg_item, seg_text = [], []
    for i, d in enumerate(docs):
        for p in multilingual_passages(d):
            seg_item.append(i)
            seg_text.append(p)
    s = use.encode(seg_text)
    items = np.asarray(seg_item)
    cos = qu @ s.T
    by_item = np.full((len(queries), len(docs)), -1.0, np.float32)
    order = np.argsort(items, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(items[order])) + 1]
    by_item[:, items[order][starts]] = np.maximum.reduceat(cos[:, order], starts, axis=1)
    print(f"encoded in {time.perf_counter() - t:.0f}s", flush=True)
    qec, ec = _centred(qe, e)
    quc, uc = _centred(qu, u)
    variants = {
        "e5": qe @ e.T,
        "e5 + centred": qec @ ec.T,
        "e5 + CSLS": _csls(qe @ e.T, e),
        "use document": qu @ u.T,
        "use document + centred": quc @ uc.T,
        "use document + CSLS": _csls(qu @ u.T, u),
        "use sentences": by_item,
        "use sentences + CSLS": _csls(by_item, u),
        "rrf(e5, use sentences)": _rrf(qe @ e.T, by_item),
        "rrf(e5 + CSLS, use sentences)": _rrf(_csls(qe @ e.T, e), by_item),
        "rrf(e5, use document, use sentences)": _rrf(qe @ e.T, qu @ u.T, by_item),
    }
    out: dict = {"benchmark": "hubness", "half": "dev", "variants": {}}
    for name, sc in variants.items():
        rank = _ranks(sc)[np.arange(len(target)), target]
        res = {}
        for code in ("en", "zh"):
            r = rank[lang == code]
            res[code] = {
                "queries": int(len(r)),
                "recall@10": float(np.mean(r <= 10)),
                "mrr": float(np.mean(np.where(r <= 100, 1.0 / r, 0.0))),
            }
        out["variants"][name] = res
        print(
            f"{name:40s} en {res['en']['recall@10']:.3f} / {res['en']['mrr']:.3f}"
            f"   zh {res['zh']['recall@10']:.3f} / {res['zh']['mrr']:.3f}",
            flush=True,
        )
    out.update(date=time.strftime("%Y-%m-%d"), commit=commit(), machine=machine(), load=load())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "hubness.json").write_text(json.dumps(out, indent=2) + "\n")
    print("wrote benchmarks/results/hubness.json")


if __name__ == "__main__":
    main()
