from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from avrec.data.dataset import Dataset
from avrec.errors import NotFittedError, UnknownEntityError
from avrec.language.graph import KnowledgeGraph


def graph_dataset() -> Dataset:
    def people(*pairs):
        return json.dumps([{"name": n, "role": r} for n, r in pairs])

    items = pl.DataFrame(
        {
            "item_id": ["jaws", "et", "jp", "alien", "blade", "toy"],
            "title": ["Jaws", "E.T.", "Jurassic Park", "Alien", "Blade Runner", "Toy Story"],
            "people": [
                people(("Steven Spielberg", "director"), ("Roy Scheider", "actor")),
                people(("Steven Spielberg", "director")),
                people(("Steven Spielberg", "director"), ("Sam Neill", "actor")),
                people(("Ridley Scott", "director"), ("Sigourney Weaver", "actor")),
                people(("Ridley Scott", "director"), ("Harrison Ford", "actor")),
                people(("John Lasseter", "director"), ("Tom Hanks", "actor")),
            ],
            "categories": [
                json.dumps(g)
                for g in (
                    ["Thriller"],
                    ["Sci-Fi", "Family"],
                    ["Sci-Fi", "Adventure"],
                    ["Sci-Fi", "Horror"],
                    ["Sci-Fi"],
                    ["Animation", "Family"],
                )
            ],  # fmt: skip
            "language": ["en"] * 6,
            "attributes": [
                json.dumps({"series": "Alien"}) if i == "alien" else "{}"
                for i in ["jaws", "et", "jp", "alien", "blade", "toy"]
            ],  # fmt: skip
        }
    )
    ev = pl.DataFrame(
        {"user_id": ["u", "u", "v"], "item_id": ["jaws", "alien", "toy"], "event": ["play"] * 3}
    )
    return Dataset.from_events(ev, items)


@pytest.fixture(scope="module")
def graph():
    ds = graph_dataset()
    return ds, KnowledgeGraph().fit(ds, mentions={"toy": ["Steven Spielberg", "Tom Hanks"]})


def idx(ds, item):
    return int(ds.items.index([item])[0])


def test_entities_are_typed_with_roles_and_rare_ones_weigh_more(graph):
    ds, g = graph
    ents = {(e["type"], e["name"]): e for e in g.entities_of(idx(ds, "jaws"))}
    assert ents[("person", "Steven Spielberg")]["role"] == "director"
    assert ents[("person", "Roy Scheider")]["items"] == 1
    assert ("genre", "Thriller") in ents and ("language", "en") in ents
    # the language every item has weighs least; a one-film actor most
    assert ents[("language", "en")]["weight"] < ents[("person", "Steven Spielberg")]["weight"]
    assert (
        ents[("person", "Steven Spielberg")]["weight"] < ents[("person", "Roy Scheider")]["weight"]
    )
    assert g.types[g.entity("series", "alien")] == "series"
    with pytest.raises(UnknownEntityError):
        g.entity("person", "Nobody")


def test_mentions_join_as_people_named_not_credited(graph):
    ds, g = graph
    toy = {(e["name"], e["role"]) for e in g.entities_of(idx(ds, "toy"))}
    assert ("Steven Spielberg", "mentioned") in toy
    assert ("Tom Hanks", "actor") in toy  # credited already: not a second, weaker edge


def test_neighbours_through_shared_entities(graph):
    ds, g = graph
    near = g.neighbours(idx(ds, "jp"), k=3)
    names = [ds.items.lookup([n])[0] for n, _, _ in near]
    assert names[0] == "et"  # Spielberg and Sci-Fi
    assert "jp" not in names
    via = [f"{g.types[e]}:{g.names[e]}" for e in near[0][2]]
    assert via[0] == "person:Steven Spielberg"
    hood = g.neighbourhood(idx(ds, "alien"), k=2)
    assert ds.items.lookup([hood["neighbours"][0]["item"]])[0] == "blade"
    assert "person:Ridley Scott" in hood["neighbours"][0]["via"]


def test_paths_from_liked_items_to_a_candidate(graph):
    ds, g = graph
    paths = g.paths([idx(ds, "jaws"), idx(ds, "alien")], idx(ds, "jp"))
    assert paths and g.names[paths[0].entity] == "Steven Spielberg"
    assert ds.items.lookup([paths[0].source])[0] == "jaws"
    assert paths[0].source_role == "director" and paths[0].target_role == "director"
    assert g.describe(paths[0]) == "person:Steven Spielberg (director)"
    assert [p.weight for p in paths] == sorted((p.weight for p in paths), reverse=True)
    # Toy Story and Blade Runner share only the language every item has
    only = g.paths([idx(ds, "toy")], idx(ds, "blade"))
    assert [str(g.types[p.entity]) for p in only] == ["language"]
    assert only[0].weight < paths[0].weight


def test_round_trip_and_unfitted(tmp_path, graph):
    ds, g = graph
    g.save(tmp_path / "g")
    again = KnowledgeGraph().load(tmp_path / "g")
    assert again.entities_of(idx(ds, "toy")) == g.entities_of(idx(ds, "toy"))
    a = again.neighbours(idx(ds, "jp"), 3)
    b = g.neighbours(idx(ds, "jp"), 3)
    assert [(x, round(s, 5), e) for x, s, e in a] == [(x, round(s, 5), e) for x, s, e in b]
    with pytest.raises(NotFittedError):
        KnowledgeGraph().neighbours(0)
    assert np.isclose(g.idf[g.entity("language", "en")], np.log1p(1.0))
