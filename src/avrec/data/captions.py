"""``#hashtags#`` and ``@mentions`` in captions, read as tags and people.

Short-video and social catalogues write their topics and the accounts they name into the
caption itself ("好像听到了我爱你 原声#原相机", "#旅行# 和 @小王 去海边"). :func:`caption_entities`
splits a caption into its text, its hashtags and the accounts it mentions;
:func:`with_caption_entities` adds them to a catalogue's ``tags`` and ``people`` when a
workspace's catalogue is read (the stored title and description stay as written). Web
addresses and e-mail addresses are not read for either.
"""

from __future__ import annotations

import json
import re

import polars as pl

__all__ = ["caption_entities", "with_caption_entities"]

# a hashtag ends at whitespace, the next # or @, or a closing # (Weibo-style #topic#)
_HASHTAG = re.compile(r"#\s*([^#@\s]{1,40})#?")
# Kuaishou mentions: @name(O123456) or @name followed by whitespace, # or another @
_MENTION = re.compile(r"@([^@#\s(（]{1,40})(?:[(（]O?\d+[)）])?")
# web and e-mail addresses hold # and @ that are neither
_ADDRESS = re.compile(r"\b(?:https?://|www\.)\S+|[\w.+-]+@[\w-]+\.[\w.-]+")
# punctuation that ends a sentence, not a tag ("#rain, see ...")
_TRAILING = ",.;:!?，。；：！？、…~～"
# a tag made of digits and punctuation alone ("#1", "#2024") names nothing
_NO_WORD = re.compile(r"^[\d\W_]+$")


def caption_entities(text: str | None) -> tuple[str, list[str], list[str]]:
    """A caption split into its text (hashtags and mentions removed), its hashtags and the
    accounts it mentions, in order, without repeats."""
    if not text:
        return "", [], []
    text = _ADDRESS.sub(" ", text)
    tags = [t.strip().rstrip(_TRAILING) for t in _HASHTAG.findall(text)]
    tags = list(dict.fromkeys(t for t in tags if t and not _NO_WORD.match(t)))
    people = list(dict.fromkeys(m.strip() for m in _MENTION.findall(text) if m.strip()))
    rest = _MENTION.sub(" ", _HASHTAG.sub(" ", text))
    return " ".join(rest.split()), tags, people


def _json_list(value: str | None) -> list:
    if not value:
        return []
    try:
        out = json.loads(value)
    except ValueError:
        return [value]
    return out if isinstance(out, list) else [out]


def with_caption_entities(items: pl.DataFrame) -> pl.DataFrame:
    """``items`` (a store's catalogue: ``tags`` and ``people`` as JSON text) with the
    hashtags of each item's title and description added to its tags and the accounts they
    mention to its people (role ``guest``, as the KuaiRec loader names them), without
    repeats. Items whose text holds neither ``#`` nor ``@`` are left as they are."""
    fields = [c for c in ("title", "description") if c in items.columns]
    if not fields or not len(items):
        return items
    has = items.select(
        pl.any_horizontal(pl.col(c).fill_null("").str.contains("[#@]") for c in fields).alias("has")
    )
    rows = has.with_row_index("i").filter(pl.col("has"))["i"].to_list()
    if not rows:
        return items
    tags = items["tags"].to_list() if "tags" in items.columns else [None] * len(items)
    people = items["people"].to_list() if "people" in items.columns else [None] * len(items)
    texts = {c: items[c].to_list() for c in fields}
    changed = False
    for i in rows:
        found_tags: list[str] = []
        found_people: list[str] = []
        for c in fields:
            _, t, p = caption_entities(texts[c][i])
            found_tags += t
            found_people += p
        if not found_tags and not found_people:
            continue
        have = _json_list(tags[i])
        new_tags = [t for t in dict.fromkeys(found_tags) if t not in have]
        if new_tags:
            tags[i] = json.dumps([*have, *new_tags], ensure_ascii=False)
            changed = True
        crew = _json_list(people[i])
        names = {p.get("name") if isinstance(p, dict) else p for p in crew}
        new_people = [n for n in dict.fromkeys(found_people) if n not in names]
        if new_people:
            crew += [{"name": n, "role": "guest"} for n in new_people]
            people[i] = json.dumps(crew, ensure_ascii=False)
            changed = True
    if not changed:
        return items
    return items.with_columns(
        pl.Series("tags", tags, dtype=pl.String), pl.Series("people", people, dtype=pl.String)
    )
