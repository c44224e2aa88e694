"""MovieLens-100K (GroupLens, 1998), with posters and IMDb details where present."""

from __future__ import annotations

import ast
import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from avrec.data.loaders.base import DatasetFile, PublicData, PublicDataset
from avrec.data.schema import parse_duration
from avrec.data.weighting import EventWeighting
from avrec.errors import DataError

__all__ = ["MovieLens100K"]


def _literal_list(text: str | None) -> list[str]:
    if not text:
        return []
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return [text]
    values = value if isinstance(value, list | tuple) else [value]
    # The scraped lists hold some empty names; a credit needs a name.
    return [str(v).strip() for v in values if v is not None and str(v).strip()]


class MovieLens100K(PublicDataset):
    name = "movielens-100k"
    description = "100,000 ratings (1-5) of 1,682 movies by 943 users, 1997-98"
    homepage = "https://grouplens.org/datasets/movielens/100k/"
    download_url = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
    folder = "movielens-100k"
    terms = "research use, no redistribution, no commercial use (see its README)"
    files = (
        DatasetFile("u.data", 100_000),
        DatasetFile("u.item", 1_682),
        DatasetFile("u.user", 943),
        DatasetFile("u.genre", None),
    )
    imdb_file = "movielens-100k-imdb/movielens100k_details.csv"
    imdb_rows = 1_591

    def convert(self, folder: Path, data_dir: Path | None) -> PublicData:
        notes: list[str] = []
        events = pl.read_csv(
            folder / "u.data",
            separator="\t",
            has_header=False,
            new_columns=["user_id", "item_id", "value", "ts"],
            schema_overrides={
                "user_id": pl.String,
                "item_id": pl.String,
                "value": pl.Float64,
                "ts": pl.Float64,
            },
        ).select("user_id", "item_id", pl.lit("rate").alias("event"), "value", "ts")
        genres = [
            line.split("|")[0]
            for line in (folder / "u.genre").read_text(encoding="latin-1").splitlines()
            if line.strip()
        ]
        rows = []
        for line in (folder / "u.item").read_text(encoding="latin-1").splitlines():
            if not line.strip():
                continue
            parts = line.split("|")
            flags = parts[5 : 5 + len(genres)]
            cats = [g for g, f in zip(genres, flags, strict=False) if f == "1"]
            created = None
            if parts[2]:
                created = datetime.strptime(parts[2], "%d-%b-%Y").replace(tzinfo=UTC).timestamp()
            rows.append(
                {
                    "item_id": parts[0],
                    "title": parts[1],
                    "categories": json.dumps(cats),
                    "created_at": created,
                    "language": "en",
                    "attributes": json.dumps({"imdb_url": parts[4]} if parts[4] else {}),
                }
            )
        items = pl.DataFrame(
            rows,
            schema={
                "item_id": pl.String,
                "title": pl.String,
                "categories": pl.String,
                "created_at": pl.Float64,
                "language": pl.String,
                "attributes": pl.String,
            },
        )
        posters = folder / "posters"
        if posters.is_dir():
            found = {p.stem: str(p.resolve()) for p in posters.glob("*.jpg")}
            items = items.with_columns(
                pl.col("item_id").replace_strict(found, default=None).alias("image")
            )
            notes.append(f"posters for {len(found):,} items")
        else:
            notes.append(f"no posters folder at {posters}")
        imdb = (Path(data_dir) / self.imdb_file) if data_dir else None
        if imdb is not None and imdb.is_file():
            items = items.join(self._imdb(imdb), on="item_id", how="left")
            notes.append("IMDb plots, directors, writers and cast joined")
        else:
            notes.append("IMDb details not found (optional): no plots or people")
        users = pl.read_csv(
            folder / "u.user",
            separator="|",
            has_header=False,
            new_columns=["user_id", "age", "gender", "occupation", "zip"],
            schema_overrides={
                "user_id": pl.String,
                "age": pl.Int64,
                "gender": pl.String,
                "occupation": pl.String,
                "zip": pl.String,
            },
        ).select(
            "user_id",
            pl.struct("age", "gender", "occupation", "zip")
            .struct.json_encode()
            .alias("attributes"),
        )
        return PublicData(
            self.name,
            items,
            events,
            users,
            EventWeighting.binary(),
            meta={"time": "unix seconds", "rating_scale": [1, 5]},
            notes=notes,
            media_roots=[posters.resolve()] if posters.is_dir() else [],
        )

    def _imdb(self, path: Path) -> pl.DataFrame:
        raw = pl.read_csv(path, infer_schema=False)
        if raw.height != self.imdb_rows:
            raise DataError(f"{path}: expected {self.imdb_rows:,} rows, found {raw.height:,}")
        out = []
        for r in raw.iter_rows(named=True):
            people = (
                [{"name": n, "role": "director"} for n in _literal_list(r["director"])]
                + [{"name": n, "role": "writer"} for n in _literal_list(r["writer"])]
                + [{"name": n, "role": "actor"} for n in _literal_list(r["cast"])]
            )
            try:
                duration = parse_duration(r["movie_length"])
            except ValueError:
                duration = None
            out.append(
                {
                    "item_id": r["movie_id"],
                    "description": r["description"] or None,
                    "people": json.dumps(people, ensure_ascii=False),
                    "duration": duration,
                }
            )
        return pl.DataFrame(
            out,
            schema={
                "item_id": pl.String,
                "description": pl.String,
                "people": pl.String,
                "duration": pl.Float64,
            },
        ).unique("item_id", keep="first")
