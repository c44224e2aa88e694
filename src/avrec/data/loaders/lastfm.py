"""Last.fm HetRec 2011 (2K users): user-artist play counts, artists, friendships."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from avrec.data.loaders.base import DatasetFile, PublicData, PublicDataset
from avrec.data.weighting import EventRule, EventWeighting

__all__ = ["LastFM2K"]


class LastFM2K(PublicDataset):
    name = "lastfm-2k"
    description = "1,892 users' play counts of 17,632 artists, with friendships"
    homepage = "https://grouplens.org/datasets/hetrec-2011/"
    download_url = "https://files.grouplens.org/datasets/hetrec2011/hetrec2011-lastfm-2k.zip"
    folder = "lastfm-2k"
    terms = "non-commercial research use"
    files = (
        DatasetFile("user_artists.dat", 92_834, header=True),
        DatasetFile("artists.dat", 17_632, header=True),
        DatasetFile("tags.dat", 11_946, header=True, required=False),
        DatasetFile("user_friends.dat", 25_434, header=True, required=False),
    )

    def convert(self, folder: Path, data_dir: Path | None) -> PublicData:
        ua = pl.read_csv(folder / "user_artists.dat", separator="\t", infer_schema=False)
        # No timestamps: the file order stands in for time.
        events = ua.select(
            pl.col("userID").alias("user_id"),
            pl.col("artistID").alias("item_id"),
            pl.lit("play").alias("event"),
            pl.col("weight").cast(pl.Float64).alias("value"),
            pl.int_range(pl.len()).cast(pl.Float64).alias("ts"),
        )
        # artists.dat has stray quotes in names: read it line by line, not as CSV.
        rows = []
        lines = (folder / "artists.dat").read_text(encoding="utf-8", errors="replace").splitlines()
        for line in lines[1:]:
            if not line.strip():
                continue
            parts = line.split("\t")
            parts += [""] * (4 - len(parts))
            rows.append(
                {
                    "item_id": parts[0],
                    "title": parts[1],
                    "image": parts[3] or None,
                    "people": json.dumps(
                        [{"name": parts[1], "role": "artist"}], ensure_ascii=False
                    ),
                    "attributes": json.dumps({"url": parts[2]} if parts[2] else {}),
                }
            )
        items = pl.DataFrame(
            rows,
            schema={
                "item_id": pl.String,
                "title": pl.String,
                "image": pl.String,
                "people": pl.String,
                "attributes": pl.String,
            },
        )
        users = pl.DataFrame({"user_id": ua["userID"].unique(maintain_order=True)})
        friends_path = folder / "user_friends.dat"
        if friends_path.is_file():
            fr = pl.read_csv(friends_path, separator="\t", infer_schema=False)
            agg = fr.group_by("userID", maintain_order=True).agg(pl.col("friendID"))
            friends = {u: f for u, f in agg.iter_rows()}
            users = users.with_columns(
                pl.col("user_id")
                .map_elements(
                    lambda u: json.dumps({"friends": friends.get(u, [])}), return_dtype=pl.String
                )
                .alias("attributes")
            )
        weighting = EventWeighting(
            rules={"play": EventRule(weight=1.0, value="log1p")}, aggregate="sum"
        )
        return PublicData(
            self.name,
            items,
            events,
            users,
            weighting,
            meta={"time": "file order (no timestamps published)", "value": "play count"},
            notes=["play counts weighted by log1p", "no timestamps: file order stands in"],
        )
