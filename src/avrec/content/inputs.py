"""What ``avrec analyze`` reads of each catalogue item, from a frame or a workspace."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from avrec.content.media import MEDIA_KINDS
from avrec.data.schema import split_list

__all__ = ["ItemInput", "items_from_frame", "workspace_inputs"]


@dataclass
class ItemInput:
    """What the analyser reads of one catalogue item."""

    item_id: str
    title: str = ""
    description: str = ""
    tags: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    people: list[dict[str, str]] = field(default_factory=list)
    language: str | None = None
    media: dict[str, str] = field(default_factory=dict)  # video/audio/image/subtitles -> uri
    comments: list[str] = field(default_factory=list)


def _lenient_list(value: Any) -> list[str]:
    try:
        return split_list(value)
    except ValueError:
        return []  # ingest validates these; a malformed value from elsewhere counts as none


def _lenient_people(value: Any) -> list[dict[str, str]]:
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except json.JSONDecodeError:
            return []
    if not isinstance(value, list):
        return []
    return [
        {"name": str(p["name"]).strip(), "role": str(p.get("role") or "creator")}
        for p in value
        if isinstance(p, dict) and p.get("name") and str(p["name"]).strip()
    ]


def items_from_frame(
    items: pl.DataFrame, comments: dict[str, list[str]] | None = None
) -> list[ItemInput]:
    """Catalogue rows (store or loader schema) as analyser inputs (malformed list or people
    fields count as empty rather than stopping the run)."""
    comments = comments or {}
    out = []
    cols = set(items.columns)
    for r in items.iter_rows(named=True):
        media = {k: str(r[k]) for k in (*MEDIA_KINDS, "subtitles") if k in cols and r.get(k)}
        out.append(
            ItemInput(
                item_id=str(r["item_id"]),
                title=str(r.get("title") or ""),
                description=str(r.get("description") or ""),
                tags=_lenient_list(r.get("tags")),
                categories=_lenient_list(r.get("categories")),
                people=_lenient_people(r.get("people")),
                language=r.get("language"),
                media=media,
                comments=[str(c) for c in comments.get(str(r["item_id"]), []) if c],
            )
        )
    return out


def workspace_inputs(workspace, item_ids: Sequence[str] | None = None):  # noqa: ANN001, ANN201
    """Analyser inputs from a workspace's store: items (no placeholders) and their comments."""
    store = workspace.store
    items = store.items(include_placeholders=False)
    events = store.events()
    comments: dict[str, list[str]] = {}
    if events.height:
        com = events.filter((pl.col("event") == "comment") & pl.col("text").is_not_null())
        for r in com.select("item_id", "text").iter_rows():
            if r[0] is not None and r[1].strip():
                comments.setdefault(r[0], []).append(r[1])
    catalogue = items_from_frame(items, comments)
    if item_ids is None:
        return catalogue, catalogue
    wanted = set(item_ids)
    chosen = [it for it in catalogue if it.item_id in wanted]
    missing = wanted - {it.item_id for it in chosen}
    if missing:
        from avrec.errors import UnknownEntityError

        raise UnknownEntityError(f"unknown item(s): {', '.join(sorted(missing)[:5])}")
    return chosen, catalogue
