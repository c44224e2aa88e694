"""MicroLens-50k (a micro-video platform, 2023): sequences, titles and three real clips."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl

from avrec.data.loaders.base import DatasetFile, PublicData, PublicDataset
from avrec.data.weighting import EventWeighting

__all__ = ["MicroLens50K", "hashtags"]

_TAG = re.compile(r"#\s*([^#]+?)\s*(?=#|$)")


def hashtags(title: str) -> tuple[str, list[str]]:
    """Split a MicroLens title into its text and its ``#hashtags``."""
    tags = [t.strip() for t in _TAG.findall(title) if t.strip()]
    text = title.split("#", 1)[0].strip() or title.strip()
    return text, tags


class MicroLens50K(PublicDataset):
    name = "microlens-50k"
    description = "50,000 users' viewing sequences over 19,220 micro-videos, with titles"
    homepage = "https://github.com/westlake-repl/MicroLens"
    download_url = None  # published as separate files, not one archive
    folder = "microlens-50k"
    terms = "research use only (no licence published)"
    files = (
        DatasetFile("MicroLens-50k_pairs.tsv", 50_000),
        DatasetFile("MicroLens-50k_titles.csv", 19_220, header=True),
    )
    n_interactions = 359_708

    def convert(self, folder: Path, data_dir: Path | None) -> PublicData:
        from avrec.errors import DataError

        users, items = [], []
        for line in (folder / "MicroLens-50k_pairs.tsv").read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            user, seq = line.split("\t", 1)
            ids = seq.split()
            users.append(np.full(len(ids), user, dtype=object))
            items.append(np.asarray(ids, dtype=object))
        user_col = np.concatenate(users)
        item_col = np.concatenate(items)
        if len(item_col) != self.n_interactions:
            raise DataError(
                f"{folder / 'MicroLens-50k_pairs.tsv'}: expected "
                f"{self.n_interactions:,} interactions, found {len(item_col):,}"
            )
        # No timestamps are published: the position in the user's sequence orders the events.
        position = np.concatenate([np.arange(len(s), dtype=np.float64) for s in items])
        events = pl.DataFrame(
            {
                "user_id": user_col.astype(str),
                "item_id": item_col.astype(str),
                "event": "view",
                "value": None,
                "ts": position,
            },
            schema={
                "user_id": pl.String,
                "item_id": pl.String,
                "event": pl.String,
                "value": pl.Float64,
                "ts": pl.Float64,
            },
        )
        titles = pl.read_csv(folder / "MicroLens-50k_titles.csv", infer_schema=False)
        rows = []
        for item, title in titles.iter_rows():
            text, tags = hashtags(title or "")
            rows.append(
                {
                    "item_id": item,
                    "title": text,
                    "tags": json.dumps(tags, ensure_ascii=False),
                    "description": title,
                }
            )
        item_df = pl.DataFrame(
            rows,
            schema={
                "item_id": pl.String,
                "title": pl.String,
                "tags": pl.String,
                "description": pl.String,
            },
        )
        videos = {p.stem: str(p.resolve()) for p in (folder / "videos").glob("*.mp4")}
        item_df = item_df.with_columns(
            pl.col("item_id").replace_strict(videos, default=None).alias("video")
        )
        user_df = pl.DataFrame(
            {"user_id": events["user_id"].unique(maintain_order=True)}
        ).with_columns(pl.lit(None, pl.String).alias("attributes"))
        return PublicData(
            self.name,
            item_df,
            events,
            user_df,
            EventWeighting.binary(),
            meta={"time": "position in the user's sequence (no timestamps published)"},
            notes=[f"{len(videos)} video clips", "timestamps are sequence positions"],
            media_roots=[(folder / "videos").resolve()] if videos else [],
        )
