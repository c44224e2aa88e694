"""What search indexes: each item's document (field -> text) and the passages its vectors
are made of, encoded with a cache.

- :func:`item_documents`: the catalogue's fields and the content analysis' words, per item.
- :func:`fill_text_vectors`: one multilingual-e5 passage vector per item (its
  :func:`document_text`), for the ``semantic`` leg and mood playlists.
- :func:`encode_segments`: e5 vectors of parts of items (tags, transcript and on-screen text
  passages), searched beside the text vectors.
- :func:`encode_multilingual`: Universal Sentence Encoder (multilingual v3) vectors of each
  item's title, tags and sentences (:func:`multilingual_passages`), the cross-lingual
  ``multilingual`` leg: trained on translation pairs, it finds an English plot sentence from a
  Chinese request and a Chinese caption from an English one, where e5 keeps to the query's
  language.

Every encoder result is kept in the workspace's content store by text and model version, so
a second training encodes nothing.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np

from avrec.errors import ConfigError

__all__ = [
    "DEFAULT_SEGMENTS",
    "FIELDS",
    "SEGMENT_FIELDS",
    "cached_encode",
    "document_text",
    "encode_multilingual",
    "encode_segments",
    "fill_text_vectors",
    "item_documents",
    "multilingual_passages",
    "says_more",
    "segment_texts",
]

#: searchable fields and how much each counts (BM25 sees a field's words this many times)
FIELDS: dict[str, int] = {
    "title": 3,
    "tags": 2,
    "people": 2,
    "description": 1,
    "keywords": 1,
    "transcript": 1,
    "ocr": 1,
}

#: the parts of an item that get vectors of their own beside its text vector ("text"); the
#: description's are searched as a leg of their own (``description``), the others with the
#: text vector (``semantic``)
SEGMENT_FIELDS: tuple[str, ...] = ("tags", "transcript", "ocr", "description")

#: the parts encoded by default: free tags' own vectors cost MRR on both benchmark datasets
#: (MicroLens-50k's hashtags: ask 0.812 -> 0.785; MovieLens' genre lists: 0.860 -> 0.764),
#: since the text vector already carries them and a short tag passage outshines it. The
#: description alone, without the title, genres and cast that the text vector mixes in, is
#: what a request in the other language finds (e5, MovieLens-100K development half, Chinese
#: requests: Recall@10 0.098 by the text vector, 0.706 by the description)
DEFAULT_SEGMENTS: tuple[str, ...] = ("transcript", "ocr", "description")

_TAGS_IN_TEXT = re.compile(r"#[^#\s]+#?|@\S+")


def item_documents(dataset: Any, texts: dict[str, dict[str, str]] | None = None) -> list[dict]:
    """One document (field -> text) per item of ``dataset``, in item order: title, tags and
    genres, people, description from the catalogue, plus ``texts[item_id]`` (transcript, OCR
    text, keywords from the content analysis) where given."""
    ids = dataset.items.lookup(np.arange(dataset.n_items))
    titles = dataset.item_field("title")
    descs = dataset.item_field("description")
    docs = []
    for i, item_id in enumerate(ids):
        doc = {
            "title": titles[i] or "",
            "tags": " ".join([*dataset.item_tags[i], *dataset.item_categories[i]]),
            # the free tags alone, for their own vector (genres are shared by too many items
            # to tell them apart, and the query parser filters by them)
            "tag_list": ", ".join(dataset.item_tags[i]),
            # every tag and genre whole, for explanations that quote the catalogue's names
            "tag_names": "|".join([*dataset.item_tags[i], *dataset.item_categories[i]]),
            "people": " ".join(p.get("name", "") for p in dataset.item_people[i]),
            "description": descs[i] or "",
        }
        for k, v in ((texts or {}).get(str(item_id)) or {}).items():
            if k in FIELDS and v:
                doc[k] = v
            elif k == "mentions" and v:  # people named in the text are searched as people
                doc["people"] = " ".join(x for x in (doc["people"], v.replace("\n", " ")) if x)
        docs.append({k: v for k, v in doc.items() if v})
    return docs


def document_text(doc: dict[str, str], max_chars: int = 600) -> str:
    """A document as one passage for the text encoder: title, tags, then the description and
    the rest, cut at ``max_chars``."""
    parts = [doc.get(f, "") for f in ("title", "tags", "description", "keywords", "people")]
    return "\n".join(p for p in parts if p)[:max_chars]


def cached_encode(
    enc: Any,
    texts: Sequence[str],
    tag: str,
    cache: Any = None,
    progress: Any = None,
    what: str = "encoding",
    batch: int = 64,
) -> tuple[dict[str, np.ndarray], int]:
    """``enc``'s vector of each distinct text of ``texts``: read from ``cache`` (the
    workspace's ContentStore, ``get_segments``/``put_segments``) where it holds one under
    ``tag``, the encoder's version and the text, encoded in batches (shortest first) and
    kept there otherwise. ``progress(what, total)`` is a context manager yielding
    ``advance(n)`` (the CLI's bar). Returns text -> vector and how many were encoded now."""
    key = {t: hashlib.sha256(f"{tag}|{enc.version}|{t}".encode()).hexdigest() for t in texts}
    found = cache.get_segments(list(set(key.values()))) if cache is not None else {}
    missing = sorted({t for t, k in key.items() if k not in found}, key=len)
    if missing:
        bar = progress(what, len(missing)) if progress else None
        with bar if bar is not None else nullcontext(lambda n: None) as advance:
            for lo in range(0, len(missing), batch):
                part = missing[lo : lo + batch]
                new = dict(zip((key[t] for t in part), enc.encode(part), strict=True))
                if cache is not None:
                    cache.put_segments(new)
                found.update(new)
                advance(len(part))
    return {t: found[k] for t, k in key.items()}, len(missing)


def fill_text_vectors(
    docs: Sequence[dict[str, str]],
    vectors: np.ndarray | None,
    budget: int,
    cache: Any = None,
    progress: Any = None,
) -> tuple[np.ndarray | None, int]:
    """``vectors`` (e5 text vectors, one row per item; zero rows: none) with the empty rows
    of up to ``budget`` items filled by e5 passages of their :func:`document_text`. A
    ``cache`` with ``get_segments``/``put_segments`` (the workspace's ContentStore) keeps
    them by text, so a second training encodes nothing; ``progress(description, total)``
    is a context manager yielding ``advance(n)`` (the CLI's bar). Returns the vectors and
    how many were encoded now."""
    from avrec.features.text import E5TextEncoder

    enc = E5TextEncoder()
    x = vectors
    if x is None or x.shape[1] != enc.dim:
        x = np.zeros((len(docs), enc.dim), np.float32)
    empty = np.flatnonzero(np.linalg.norm(x, axis=1) == 0)
    todo = [int(i) for i in empty[:budget] if docs[i]]
    if not todo:
        return vectors, 0
    x = np.array(x, np.float32)
    texts = {i: document_text(docs[i]) for i in todo}
    found, n = cached_encode(
        enc, list(texts.values()), "search", cache, progress, "encoding item text for search"
    )
    for i in todo:
        x[i] = found[texts[i]]
    return x, n


def segment_texts(
    doc: dict[str, str],
    chars: int = 400,
    max_chunks: int = 4,
    fields: Sequence[str] = SEGMENT_FIELDS,
) -> list[tuple[str, str]]:
    """``(field, passage)`` for each part of ``doc`` that gets a vector of its own: its free
    tags (``tag_list``, not its genres) as one passage, and its transcript and on-screen
    text cut at sentence or word boundaries into passages of up to ``chars`` characters (at
    most ``max_chunks`` per field), for the ``fields`` asked for."""
    out = []
    if "tags" in fields and doc.get("tag_list"):
        out.append(("tags", "tags: " + doc["tag_list"]))
    for name in SEGMENT_FIELDS[1:]:
        if name not in fields:
            continue
        text = " ".join((doc.get(name) or "").split())
        if name == "description" and not says_more(text, doc.get("title", "")):
            continue
        chunks: list[str] = []
        while text and len(chunks) < max_chunks:
            if len(text) <= chars:
                cut = len(text)
            else:
                head = text[:chars]
                cut = max(head.rfind(". "), head.rfind("。"), head.rfind("? "), head.rfind("! "))
                cut = cut + 1 if cut > chars // 2 else (head.rfind(" ") if " " in head else chars)
                cut = cut if cut > 0 else chars
            chunks.append(text[:cut].strip())
            text = text[cut:].strip()
        out.extend((name, c) for c in chunks if c)
    return out


def says_more(description: str, title: str, min_words: int = 3) -> bool:
    """Whether ``description`` says more than ``title``: at least ``min_words`` words left
    once the title, ``#hashtags#`` and ``@mentions`` are taken out (a short-video caption
    that repeats its title with hashtags gets no vector of its own)."""
    from avrec.language.tokens import tokenize

    rest = _TAGS_IN_TEXT.sub(" ", description or "")
    if title and title.strip():
        rest = rest.replace(title.strip(), " ")
    return len(tokenize(rest, stem=False)) >= min_words


def encode_segments(
    docs: Sequence[dict[str, str]],
    budget: int,
    cache: Any = None,
    progress: Any = None,
    fields: Sequence[str] = DEFAULT_SEGMENTS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """e5 passage vectors of the :func:`segment_texts` (of ``fields``; free tags only when
    asked for, see :data:`DEFAULT_SEGMENTS`) of up to ``budget`` items (those with
    a transcript or on-screen text first, then the rest in order). A passage more than
    ``max(2, n / 1000)`` items share is left out; each other passage is encoded once and kept
    in ``cache`` (the workspace's ContentStore) by text. Returns ``(items, fields,
    vectors)``: one row per passage, the item's index, the field's position in
    :data:`SEGMENT_FIELDS`, the unit vector."""
    from avrec.features.text import E5TextEncoder

    order = sorted(
        (i for i, d in enumerate(docs) if d),
        key=lambda i: (not (docs[i].get("transcript") or docs[i].get("ocr")), i),
    )
    unknown = set(fields) - set(SEGMENT_FIELDS)
    if unknown:
        raise ConfigError(f"unknown segment fields {sorted(unknown)}: {', '.join(SEGMENT_FIELDS)}")
    rows = [(i, f, t) for i in order[:budget] for f, t in segment_texts(docs[i], fields=fields)]
    # a passage many items share (a catalogue's usual genre list) tells none of them apart,
    # and would tie them all with any request it resembles: it gets no row

    shared = Counter(t for _, _, t in rows)
    most = max(2, len(docs) // 1000)
    rows = [r for r in rows if shared[r[2]] <= most]
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int8), np.zeros((0, 0), np.float32)
    enc = E5TextEncoder()
    found, _ = cached_encode(
        enc,
        [t for _, _, t in rows],
        "search-seg",
        cache,
        progress,
        "encoding tags and transcripts for search",
    )
    from avrec.features.base import l2_normalise

    items = np.asarray([i for i, _, _ in rows], np.int64)
    fields = np.asarray([SEGMENT_FIELDS.index(f) for _, f, _ in rows], np.int8)
    vectors = l2_normalise(np.stack([found[t] for _, _, t in rows]).astype(np.float32))
    return items, fields, vectors


_SENTENCE = re.compile(r"(?<=[.!?。！？；;])\s*|\n+")


def multilingual_passages(doc: dict[str, str], max_passages: int = 8) -> list[str]:
    """The short texts of ``doc`` that get a Universal Sentence Encoder vector each: the title,
    the free tags as one line, then the sentences of the description, keywords, transcript and
    on-screen text (at most ``max_passages`` in all; a sentence under four characters is
    left out, one over 300 cut). USE is trained on sentences: a long passage blurs it."""
    out: list[str] = []
    for name in ("title", "tag_list"):
        text = " ".join((doc.get(name) or "").split())
        if text:
            out.append(text[:300])
    for name in ("description", "keywords", "transcript", "ocr"):
        for part in _SENTENCE.split(doc.get(name) or ""):
            part = " ".join(part.split())
            if len(part) >= 4:
                out.append(part[:300])
            if len(out) >= max_passages:
                return list(dict.fromkeys(out))
    return list(dict.fromkeys(out))


def encode_multilingual(
    docs: Sequence[dict[str, str]],
    budget: int,
    cache: Any = None,
    progress: Any = None,
    max_passages: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """USE vectors of the :func:`multilingual_passages` of up to ``budget`` items (in order).
    A passage more than ``max(2, n / 1000)`` items share (a boilerplate hashtag line) is left
    out. Returns ``(items, vectors)``: one row per passage, the item's index and the unit
    vector; kept in ``cache`` by text."""
    from avrec.features.text import UseTextEncoder

    rows = [
        (i, t)
        for i in range(min(budget, len(docs)))
        if docs[i]
        for t in multilingual_passages(docs[i], max_passages)
    ]
    shared = Counter(t for _, t in rows)
    most = max(2, len(docs) // 1000)
    rows = [r for r in rows if shared[r[1]] <= most]
    if not rows:
        return np.zeros(0, np.int64), np.zeros((0, UseTextEncoder.dim), np.float32)
    enc = UseTextEncoder()
    found, _ = cached_encode(
        enc,
        [t for _, t in rows],
        "search-use",
        cache,
        progress,
        "encoding item sentences (multilingual)",
        batch=256,
    )
    from avrec.features.base import l2_normalise

    items = np.asarray([i for i, _ in rows], np.int64)
    vectors = l2_normalise(np.stack([found[t] for _, t in rows]).astype(np.float32))
    return items, vectors
