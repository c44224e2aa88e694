"""KuaiRec captions (Kuaishou, CIKM 2022): a Chinese short-video catalogue with no behaviour.

The file is messy as published: four records are broken by a line break inside an unquoted
caption, so a CSV reader sees a head (id, cover text, the caption's first part) and a tail (the
caption's rest and the other columns). They are rejoined here and each one is reported in the
notes with its line; a record that cannot be rejoined is reported and left out, never guessed.
``UNKNOWN`` and ``-124`` mean missing. Captions carry ``#hashtags#`` and ``@mentions(O123)``:
the hashtags join the topic tags, the mentioned accounts become the item's people.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import polars as pl

from avrec.data.captions import caption_entities
from avrec.data.loaders.base import DatasetFile, PublicData, PublicDataset
from avrec.data.weighting import EventWeighting
from avrec.errors import DataError

__all__ = ["KuaiRecCaptions", "caption_entities"]

_MISSING = {"", "UNKNOWN", "-124"}


def _topic_tags(raw: str) -> list[str]:
    raw = raw.strip()
    if raw.startswith("[") and raw.endswith("]"):
        raw = raw[1:-1]
    return [t.strip() for t in raw.split(",") if t.strip() and t.strip() not in _MISSING]


class KuaiRecCaptions(PublicDataset):
    name = "kuairec-captions"
    description = "10,728 Chinese short videos (Kuaishou): captions, cover text, categories"
    homepage = "https://kuairec.com/"
    download_url = None
    folder = "kuairec-captions"
    terms = "CC BY-SA 4.0; cite Gao et al., KuaiRec, CIKM 2022"
    files = (DatasetFile("kuairec_caption_category.csv"),)
    n_items = 10_728
    columns = 10

    def convert(self, folder: Path, data_dir: Path | None) -> PublicData:
        path = folder / self.files[0].path
        records, notes = self._records(path)
        ids = [r[0] for r in records]
        if len(set(ids)) != len(ids) or len(ids) != self.n_items:
            raise DataError(
                f"{path}: expected {self.n_items:,} videos with distinct ids, found"
                f" {len(set(ids)):,} distinct of {len(ids):,}"
            )
        rows = [self._item(r) for r in records]
        items = pl.DataFrame(
            rows,
            schema={
                "item_id": pl.String,
                "title": pl.String,
                "description": pl.String,
                "tags": pl.String,
                "categories": pl.String,
                "people": pl.String,
                "language": pl.String,
            },
            orient="row",
        )
        events = pl.DataFrame(
            schema={
                "user_id": pl.String,
                "item_id": pl.String,
                "event": pl.String,
                "value": pl.Float64,
                "ts": pl.Float64,
            }
        )
        users = pl.DataFrame(schema={"user_id": pl.String, "attributes": pl.String})
        return PublicData(
            name=self.name,
            items=items,
            events=events,
            users=users,
            weighting=EventWeighting(),
            meta={"videos": len(rows), "language": "zh"},
            notes=notes,
        )

    def _records(self, path: Path) -> tuple[list[list[str]], list[str]]:
        """The file's records, broken ones rejoined; notes say which and where."""
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None or len(header) != self.columns or header[0] != "video_id":
                raise DataError(f"{path}: not the KuaiRec caption file (header {header})")
            raw = [(reader.line_num, row) for row in reader]
        out: list[list[str]] = []
        notes: list[str] = []
        i = 0
        while i < len(raw):
            line, row = raw[i]
            if len(row) == self.columns and row[0].isdigit():
                out.append(row)
                i += 1
                continue
            nxt = raw[i + 1][1] if i + 1 < len(raw) else None
            if (
                row
                and row[0].isdigit()
                and nxt is not None
                and len(row) + len(nxt) - 1 == self.columns
            ):
                head = row[:-1] + [row[-1] + "\n" + nxt[0]]
                out.append(head + nxt[1:])
                notes.append(
                    f"line {line}: video {row[0]}'s caption holds an unquoted line break;"
                    f" the record was rejoined with line {raw[i + 1][0]}"
                )
                i += 2
                continue
            notes.append(
                f"line {line}: a record of {len(row)} fields without a readable video_id"
                " was left out"
            )
            i += 1
        return out, notes

    @staticmethod
    def _item(r: list[str]) -> tuple:
        vid, cover, caption, topic = r[0], r[1].strip(), r[2].strip(), r[3]
        text, hashtags, mentions = caption_entities(caption)
        cover = "" if cover in _MISSING else cover
        title = cover or text[:40] or (hashtags[0] if hashtags else None)
        tags = list(dict.fromkeys([*_topic_tags(topic), *hashtags]))
        categories = [r[k].strip() for k in (5, 7, 9) if r[k].strip() not in _MISSING]
        people = [{"name": m, "role": "guest"} for m in mentions]
        return (
            vid,
            title or None,
            caption or None,
            json.dumps(tags, ensure_ascii=False),
            json.dumps(categories, ensure_ascii=False),
            json.dumps(people, ensure_ascii=False),
            "zh",
        )
