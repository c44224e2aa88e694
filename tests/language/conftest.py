# ruff: noqa: E501
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import polars as pl
import pytest

from avrec.data.dataset import Dataset
from avrec.data.weighting import EventWeighting

DAY = 86400.0
YEAR = 365.25 * DAY

# id, title, description, tags, language, duration (s), year
CATALOGUE = [
    (
        "v1",
        "Kitten fails compilation",
        "Cats falling off sofas and missing jumps",
        ["funny", "pets"],
        "en",
        45,
        2021,
    ),
    (
        "v2",
        "Grumpy cat meets a cucumber",
        "A cat jumps in fright at a vegetable",
        ["funny", "pets"],
        "en",
        30,
        2020,
    ),
    (
        "v3",
        "Cat documentary: the lives of lions",
        "Lions hunting on the savanna, narrated",
        ["documentary", "nature"],
        "en",
        3000,
        2015,
    ),
    (
        "v4",
        "Relaxing piano for studying",
        "Soft piano music to focus and study",
        ["piano", "classical"],
        "en",
        3600,
        2019,
    ),
    (
        "v5",
        "Chopin nocturnes, calm piano",
        "Calm classical piano pieces for sleep",
        ["piano", "classical"],
        "en",
        2400,
        2018,
    ),
    (
        "v6",
        "Heavy techno workout mix",
        "Fast electronic beats with strong rhythm",
        ["electronic", "dance"],
        "en",
        1800,
        2022,
    ),
    (
        "v7",
        "节奏感强的电子音乐合集",
        "强烈节拍的电子舞曲，适合运动",
        ["electronic", "dance"],
        "zh",
        1500,
        2023,
    ),
    (
        "v8",
        "深夜钢琴曲",
        "安静的钢琴音乐，适合学习和睡眠",
        ["piano", "classical"],
        "zh",
        2000,
        2021,
    ),
    ("v9", "搞笑猫咪合集", "猫咪的搞笑瞬间", ["funny", "pets"], "zh", 50, 2022),
    (
        "v10",
        "Toy Story",
        "A cowboy doll is threatened by a new spaceman toy",
        ["animation", "comedy"],
        "en",
        4860,
        1995,
    ),
    (
        "v11",
        "Toy Story 2",
        "The toys rescue Woody from a collector",
        ["animation", "comedy"],
        "en",
        5520,
        1999,
    ),
    (
        "v12",
        "The Shawshank Redemption",
        "Two imprisoned men bond over years",
        ["drama", "crime"],
        "en",
        8520,
        1994,
    ),
    (
        "v13",
        "Scream",
        "A masked killer stalks teenagers in a small town",
        ["horror", "thriller"],
        "en",
        6660,
        1996,
    ),
    (
        "v14",
        "Notting Hill",
        "A bookshop owner falls for a film star",
        ["romance", "comedy"],
        "en",
        7440,
        1999,
    ),
    (
        "v15",
        "Groundhog Day",
        "A weatherman relives the same day again and again",
        ["comedy", "fantasy"],
        "en",
        6060,
        1993,
    ),
    (
        "v16",
        "Le fabuleux destin d'Amélie",
        "Une jeune femme aide les autres à Paris",
        ["romance", "comedy"],
        "fr",
        7320,
        2001,
    ),
    (
        "v17",
        "Jazz standards live",
        "A live jazz quartet playing standards",
        ["jazz"],
        "en",
        3300,
        2010,
    ),
    ("v18", "Cooking pasta in five minutes", "A quick recipe for pasta", ["food"], "en", 300, 2021),
]


def language_dataset() -> Dataset:
    rng = np.random.default_rng(0)
    items = pl.DataFrame(
        {
            "item_id": [c[0] for c in CATALOGUE],
            "title": [c[1] for c in CATALOGUE],
            "description": [c[2] for c in CATALOGUE],
            "categories": [json.dumps(c[3]) for c in CATALOGUE],
            "language": [c[4] for c in CATALOGUE],
            "duration": [float(c[5]) for c in CATALOGUE],
            "created_at": [(c[6] - 1970) * YEAR + 100 * DAY for c in CATALOGUE],
        }
    )
    # two tastes: pets/funny people and piano people; everyone has some films
    rows = []
    t0 = 1.7e9
    for u in range(30):
        taste = ["v1", "v2", "v9"] if u % 2 == 0 else ["v4", "v5", "v8"]
        films = list(rng.choice(["v10", "v11", "v12", "v14", "v15"], 3, replace=False))
        for k, i in enumerate([*taste, *films]):
            rows.append((f"u{u}", i, "play", t0 + u * DAY + k * 60))
    ev = pl.DataFrame(rows, schema=["user_id", "item_id", "event", "ts"], orient="row")
    return Dataset.from_events(ev, items, weighting=EventWeighting.binary())


@pytest.fixture(scope="session")
def lang_ds() -> Dataset:
    return language_dataset()


@pytest.fixture(scope="session")
def lang_pipeline(lang_ds):
    from avrec.pipeline.pipeline import Pipeline, SourceConfig

    return Pipeline(
        sources=[
            SourceConfig(kind="model", name="itemknn", n=20, params={"model": "itemknn"}),
            SourceConfig(kind="popular", n=10),
        ],
        ranker_holdout=0,
    ).fit(lang_ds)


def _server(reply):  # noqa: ANN001, ANN202
    """An OpenAI-shaped endpoint whose answer ``reply(body)`` gives (content, delay)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            content, delay = reply(body)
            time.sleep(delay)
            data = json.dumps({"choices": [{"message": {"content": content}}]}).encode()
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args):  # noqa: ANN002
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}/v1"


@pytest.fixture
def endpoint():
    """Start fake LLM endpoints on loopback: ``endpoint(reply)`` gives the base URL."""
    made = []

    def make(reply):  # noqa: ANN001, ANN202
        srv, url = _server(reply)
        made.append(srv)
        return url

    yield make
    for srv in made:
        srv.shutdown()
