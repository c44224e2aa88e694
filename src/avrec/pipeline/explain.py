"""Explanations: why an item is recommended, as structured reasons rendered in English or Chinese.

Every reason is built from facts the pipeline holds, never from templates alone:

- ``source``: which candidate sources proposed the item (collaborative, next-item, similar
  content, shared people, trending, new, popular);
- ``anchor``: the item in the user's history that led to it ("because you watched X"), taken
  from a source's anchor and kept only if it really is in the user's history;
- ``shared``: the people and tags the item shares with the anchor ("same director as X");
- ``tags``: the item's tags that the user's history also carries most;
- ``features``: the ranker features that pushed the item up most (SHAP contributions);
- ``query``: for a request in words, the words it matched in each field of the item and
  which part of it was closest in meaning (``{"matched": {field: [words]}, "semantic":
  part}``; the part is ``"text"``, ``"transcript"``, ``"ocr"`` or ``"tags"``, ``""`` for none);
- ``like``: the item a request named ("like Toy Story") that this one resembles.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Explanation", "Reason", "render"]

SOURCE_KINDS = {
    "model": "collaborative",
    "neighbours": "content",
    "interests": "content",
    "people": "people",
    "trending": "trending",
    "fresh": "fresh",
    "popular": "popular",
    "catalogue": "catalogue",
}
SEQUENTIAL_MODELS = {"markov", "sasrec"}
CONTENT_MODELS = {"content"}


@dataclass(frozen=True)
class Reason:
    """One fact behind a recommendation."""

    kind: str  # source, anchor, shared, tags, features
    value: Any

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value}


@dataclass
class Explanation:
    """The reasons for one recommended item."""

    item: str
    reasons: list[Reason] = field(default_factory=list)

    def get(self, kind: str) -> Any:
        for r in self.reasons:
            if r.kind == kind:
                return r.value
        return None

    def to_dict(self, lang: str = "en") -> dict[str, Any]:
        return {
            "item": self.item,
            "reasons": [r.to_dict() for r in self.reasons],
            "text": render(self, lang),
        }


def source_label(kind: str, model: str | None = None) -> str:
    """What a source means to a person: collaborative, next, content, people, trending ..."""
    if kind == "model" and model in SEQUENTIAL_MODELS:
        return "next"
    if kind == "model" and model in CONTENT_MODELS:
        return "content"
    return SOURCE_KINDS.get(kind, kind)


def tag_counts(history_tags: Sequence[Sequence[str]]) -> Counter[str]:
    """How often each (lower-cased) tag occurs in a user's history; count once per request."""
    return Counter(t.lower() for tags in history_tags for t in tags)


def top_tags(
    history_tags: Sequence[Sequence[str]] | Counter[str], item_tags: Sequence[str], n: int = 3
) -> list:
    """The item's tags that the user's history carries most (most frequent first);
    ``history_tags`` may be the user's :func:`tag_counts`."""
    counts = history_tags if isinstance(history_tags, Counter) else tag_counts(history_tags)
    mine = [t for t in dict.fromkeys(item_tags) if counts.get(t.lower(), 0) > 0]
    return sorted(mine, key=lambda t: (-counts[t.lower()], t))[:n]


_EN = {
    "collaborative": "people with similar taste liked it",
    "next": "it often comes next after what you played",
    "content": "it is similar in content to what you played",
    "people": "it shares people or tags with what you liked",
    "trending": "it is trending now",
    "fresh": "it is new",
    "popular": "it is popular",
    "catalogue": "it is an editor's pick or new in the catalogue",
}
_ZH = {
    "collaborative": "口味相近的人喜欢它",
    "next": "看完你播放过的内容后常接着看它",
    "content": "内容与你看过的相似",
    "people": "与你喜欢的内容有相同的创作者或标签",
    "trending": "最近很热门",
    "fresh": "新上线",
    "popular": "很受欢迎",
    "catalogue": "编辑推荐或新上架",
}


def _person(link: str) -> tuple[str, str]:
    kind, _, name = link.partition(":")
    return ("person" if kind == "p" else "tag"), name


_FIELD_EN = {"title": "the title mentions {w}", "tags": "tagged {w}", "people": "with {w}",
             "description": "the description mentions {w}", "keywords": "about {w}",
             "transcript": "someone in it says {w}", "ocr": "the screen shows {w}"}  # fmt: skip
_FIELD_ZH = {"title": "标题", "tags": "标签", "people": "演职人员", "description": "简介",
             "keywords": "关键词", "transcript": "台词", "ocr": "画面文字"}  # fmt: skip


# which part of an item matched a request's meaning (search's SEGMENT_FIELDS)
_NEAR_EN = {"transcript": "what is said in it is ", "ocr": "the text on screen is ",
            "tags": "its tags are ", "description": "its description is "}  # fmt: skip
_NEAR_ZH = {"transcript": "台词", "ocr": "画面文字", "tags": "标签", "description": "简介"}


def _query_parts(exp: Explanation, zh: bool) -> list[str]:
    parts = []
    like = exp.get("like")
    if like:
        title = like.get("title") or like["id"]
        parts.append(f"与你提到的《{title}》相似" if zh else f'like "{title}", as you asked')
    q = exp.get("query")
    if q:
        matched = q.get("matched") or {}
        for name, words in list(matched.items())[:2]:
            if zh:
                parts.append(f"{_FIELD_ZH.get(name, name)}含有“{'、'.join(words[:3])}”")
            else:
                quoted = ", ".join(f'"{w}"' for w in words[:3])
                parts.append(_FIELD_EN.get(name, name + " mentions {w}").format(w=quoted))
        near = q.get("semantic")
        if near and not matched:
            where = _NEAR_ZH.get(near, "") if zh else _NEAR_EN.get(near, "")
            if zh:
                parts.append(f"{where}与你的描述意思相近")
            else:
                parts.append(f"{where or ''}close in meaning to what you asked for".strip())
    return parts


def render(exp: Explanation, lang: str = "en") -> str:
    """One sentence in English (``en``) or Chinese (``zh``)."""
    zh = lang.lower().startswith("zh")
    parts: list[str] = _query_parts(exp, zh)
    asked = bool(parts)
    anchor = exp.get("anchor")
    shared = exp.get("shared") or []
    people = [_person(s)[1] for s in shared if _person(s)[0] == "person"]
    if anchor:
        title = anchor.get("title") or anchor["id"]
        if people:
            who = "、".join(people[:2]) if zh else " and ".join(people[:2])
            parts.append(f"与《{title}》同样有{who}" if zh else f'with {who}, like "{title}"')
        else:
            parts.append(f"因为你看过《{title}》" if zh else f'because you watched "{title}"')
    labels = exp.get("source") or []
    table = _ZH if zh else _EN
    said = [table[s] for s in labels if s in table]
    if said and not anchor and not asked:
        parts.append(said[0])
    elif len(said) > 1:
        parts.append(("也因为" if zh else "also, ") + said[1])
    tags = exp.get("tags") or []
    if tags:
        joined = "、".join(tags) if zh else ", ".join(tags)
        parts.append(f"你常看的标签：{joined}" if zh else f"tags you often watch: {joined}")
    if not parts:
        return "为你推荐" if zh else "recommended for you"
    text = "；".join(parts) if zh else "; ".join(parts)
    return text if zh else text[0].upper() + text[1:]
