"""The knowledge graph: items joined through the people, genres, tags, languages and series
they share.

Entities are typed (``person``, ``genre``, ``tag``, ``language``, ``series``) and named; an
edge joins an item to an entity, with the person's role (director, actor, artist, creator,
host ... and ``mentioned`` for people the content analysis found named in the title,
description, speech or on-screen text without a credit). The graph is one sparse items x
entities matrix: an edge weighs the entity's inverse document frequency,
``log(1 + n_items / items_with_it)``, so a genre half the catalogue has counts for little and a
director of three films for a lot.

Queries:

- :meth:`KnowledgeGraph.neighbourhood`: an item's entities (with roles and how many items
  each joins) and the items nearest through them, each with the entities it shares;
- :meth:`KnowledgeGraph.paths`: the paths from a user's liked items to a candidate
  (liked item -role-> entity <-role- candidate), strongest first, for explanations ("same
  director as *X*").
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from avrec.errors import NotFittedError, UnknownEntityError
from avrec.storage.artifacts import atomic_write_bytes, from_json_array, json_array

__all__ = ["ENTITY_TYPES", "GraphPath", "KnowledgeGraph"]

ENTITY_TYPES = ("person", "genre", "tag", "language", "series")


@dataclass(frozen=True)
class GraphPath:
    """``source`` -[source_role]-> ``entity`` <-[target_role]- ``target``, and its weight."""

    source: int
    entity: int
    target: int
    weight: float
    source_role: str
    target_role: str


class KnowledgeGraph:
    """Typed entities and the items they connect (see the module docstring)."""

    def __init__(self) -> None:
        self.matrix: sp.csr_matrix | None = None

    # -- building ------------------------------------------------------------------------------
    def fit(self, dataset: Any, mentions: dict[str, Sequence[str]] | None = None) -> KnowledgeGraph:
        """Build from ``dataset``'s catalogue (people with roles, genres, tags, language, a
        ``series`` attribute) and ``mentions`` (item id -> people named in its text, from
        the content analysis; defaults to ``dataset.item_texts``' ``mentions``)."""
        n = dataset.n_items
        ids = dataset.items.lookup(np.arange(n))
        if mentions is None:
            texts = getattr(dataset, "item_texts", {}) or {}
            mentions = {
                k: [m for m in v.get("mentions", "").split("\n") if m] for k, v in texts.items()
            }
        key_of: dict[tuple[str, str], int] = {}
        rows, cols, roles = [], [], []

        def link(item: int, kind: str, name: str, role: str = "") -> None:
            name = " ".join(str(name).split())
            if not name:
                return
            key = (kind, name.lower())
            e = key_of.setdefault(key, len(key_of))
            if e == len(self_names):
                self_types.append(kind)
                self_names.append(name)
            rows.append(item)
            cols.append(e)
            roles.append(role)

        self_types: list[str] = []
        self_names: list[str] = []
        langs = dataset.item_field("language")
        series = _series(dataset)
        for i in range(n):
            for p in dataset.item_people[i]:
                link(i, "person", p.get("name", ""), str(p.get("role") or "credited"))
            for g in dataset.item_categories[i]:
                link(i, "genre", g)
            for t in dataset.item_tags[i]:
                link(i, "tag", t)
            if langs[i]:
                link(i, "language", str(langs[i]).lower())
            if series[i]:
                link(i, "series", series[i])
            credited = {p.get("name", "").lower() for p in dataset.item_people[i]}
            for m in mentions.get(str(ids[i]), ()):
                if m.lower() not in credited:
                    link(i, "person", m, "mentioned")
        self.types = np.asarray(self_types, dtype=object)
        self.names = list(self_names)
        # one edge per (item, entity): a person in two roles keeps both, joined
        pair: dict[tuple[int, int], list[str]] = {}
        for r, c, role in zip(rows, cols, roles, strict=True):
            got = pair.setdefault((r, c), [])
            if role and role not in got:
                got.append(role)
        keys = sorted(pair)
        self._build(
            n,
            np.asarray([k[0] for k in keys], np.int64),
            np.asarray([k[1] for k in keys], np.int64),
            ["/".join(pair[k]) for k in keys],
        )
        return self

    def _build(self, n: int, r: np.ndarray, c: np.ndarray, roles: list[str]) -> None:
        """The matrix from unique edges sorted by (item, entity); ``roles`` align with them
        and so with the CSR's stored entries."""
        m = len(self.names)
        df = np.bincount(c, minlength=m).astype(np.float64)
        self.idf = np.log1p(n / np.maximum(df, 1.0)).astype(np.float32)
        self.df = df.astype(np.int64)
        indptr = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(r, minlength=n), out=indptr[1:])
        self.matrix = sp.csr_matrix(
            (self.idf[c] if len(c) else np.zeros(0, np.float32), c, indptr), shape=(n, m)
        )
        self.edge_roles = list(roles)
        self.t_matrix = self.matrix.T.tocsr()
        self._index = {
            (t, name.lower()): e
            for e, (t, name) in enumerate(zip(self.types, self.names, strict=True))
        }

    def _check(self) -> None:
        if self.matrix is None:
            raise NotFittedError("KnowledgeGraph.fit has not been called")

    @property
    def n_items(self) -> int:
        self._check()
        return self.matrix.shape[0]

    @property
    def n_entities(self) -> int:
        return len(self.names)

    def entity(self, kind: str, name: str) -> int:
        """The id of the entity ``kind:name`` (case-insensitive).

        Raises:
            UnknownEntityError: there is none.
        """
        self._check()
        e = self._index.get((kind, " ".join(name.split()).lower()))
        if e is None:
            raise UnknownEntityError(f"no {kind} named {name!r} in the graph")
        return e

    def role(self, item: int, entity: int) -> str:
        """The role(s) of ``entity`` on ``item`` ("director/writer"; "" for none)."""
        lo, hi = self.matrix.indptr[item], self.matrix.indptr[item + 1]
        j = lo + int(np.searchsorted(self.matrix.indices[lo:hi], entity))
        return self.edge_roles[j] if j < hi and self.matrix.indices[j] == entity else ""

    # -- queries -------------------------------------------------------------------------------
    def entities_of(self, item: int) -> list[dict[str, Any]]:
        """The item's entities, heaviest first: type, name, role, weight, items (how many
        items the entity joins)."""
        self._check()
        row = self.matrix[item]
        out = [
            {
                "type": str(self.types[e]),
                "name": self.names[e],
                "role": self.role(item, e),
                "weight": round(float(w), 4),
                "items": int(self.df[e]),
            }
            for e, w in zip(row.indices.tolist(), row.data.tolist(), strict=True)
        ]
        return sorted(out, key=lambda x: (-x["weight"], x["type"], x["name"]))

    def items_of(self, entity: int) -> np.ndarray:
        """The items an entity joins."""
        self._check()
        return self.t_matrix[entity].indices.astype(np.int64)

    def neighbours(
        self, item: int, k: int = 10, allowed: np.ndarray | None = None
    ) -> list[tuple[int, float, list[int]]]:
        """The ``k`` items sharing the most weight of entities with ``item`` (not itself):
        ``(item, score, shared entity ids heaviest first)``."""
        self._check()
        row = self.matrix[item]
        # score = sum over shared entities of weight(item, e) * weight(other, e)
        scores = np.asarray(self.t_matrix[row.indices].T @ row.data).ravel()
        scores[item] = 0.0
        if allowed is not None:
            scores = np.where(allowed, scores, 0.0)
        ok = np.flatnonzero(scores > 0)
        top = ok[np.lexsort((ok, -scores[ok]))][:k]
        mine = dict(zip(row.indices.tolist(), row.data.tolist(), strict=True))
        out = []
        for other in top.tolist():
            theirs = self.matrix[other]
            shared = [e for e in theirs.indices.tolist() if e in mine]
            shared.sort(key=lambda e: (-mine[e], e))
            out.append((other, float(scores[other]), shared))
        return out

    def neighbourhood(self, item: int, k: int = 10) -> dict[str, Any]:
        """An item's entities and its nearest items through them."""
        return {
            "entities": self.entities_of(item),
            "neighbours": [
                {
                    "item": other,
                    "score": round(score, 4),
                    "via": [f"{self.types[e]}:{self.names[e]}" for e in shared[:5]],
                }
                for other, score, shared in self.neighbours(item, k)
            ],
        }

    def paths(self, sources: Sequence[int], target: int, max_paths: int = 5) -> list[GraphPath]:
        """Paths ``source -> entity <- target`` from any of ``sources`` (a user's liked
        items) to ``target``, strongest first (weight: the entity's weight squared, as both
        edges carry it)."""
        return self.paths_from(sources)(target, max_paths)

    def paths_from(self, sources: Sequence[int]) -> Callable[[int, int], list[GraphPath]]:
        """:meth:`paths` from ``sources`` to any target, the sources' edges gathered once
        (explanations ask for every shown item no source anchored). Worked out on the CSR
        arrays at once."""
        self._check()
        ptr, ind, dat = self.matrix.indptr, self.matrix.indices, self.matrix.data
        every = np.fromiter(dict.fromkeys(int(x) for x in sources), np.int64)
        every = every[(every >= 0) & (every < self.n_items)]
        starts, lens = ptr[every], ptr[every + 1] - ptr[every]
        # every edge of every source, in source order: positions into ind/dat
        all_pos = np.repeat(starts - np.cumsum(lens) + lens, lens) + np.arange(int(lens.sum()))
        all_ents = ind[all_pos]
        all_who = np.repeat(every, lens)

        def find(target: int, max_paths: int = 5) -> list[GraphPath]:
            t_lo, t_hi = int(ptr[target]), int(ptr[target + 1])
            t_ent = ind[t_lo:t_hi]  # sorted: edges are stored by (item, entity)
            if t_hi == t_lo or not len(all_ents):
                return []
            at = np.searchsorted(t_ent, all_ents)
            hit = (at < len(t_ent)) & (t_ent[np.minimum(at, len(t_ent) - 1)] == all_ents)
            hit &= all_who != target
            if not hit.any():
                return []
            pos, ents, at, who = all_pos[hit], all_ents[hit], at[hit], all_who[hit]
            weight = dat[pos] * dat[t_lo + at]
            order = np.lexsort((ents, who, -weight))[:max_paths]
            return [
                GraphPath(
                    int(who[j]),
                    int(ents[j]),
                    int(target),
                    float(weight[j]),
                    self.edge_roles[int(pos[j])],
                    self.edge_roles[t_lo + int(at[j])],
                )
                for j in order
            ]

        return find

    def describe(self, path: GraphPath) -> str:
        """``"person:Steven Spielberg (director)"``: the entity a path goes through."""
        role = path.target_role or path.source_role
        kind, name = self.types[path.entity], self.names[path.entity]
        return f"{kind}:{name}" + (f" ({role})" if role and kind == "person" else "")

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        self._check()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        coo = self.matrix.tocoo()  # sorted by (item, entity), as the roles are
        buf = io.BytesIO()
        np.savez(
            buf,
            n_items=np.asarray(self.n_items),
            rows=coo.row.astype(np.int64),
            cols=coo.col.astype(np.int64),
            types=json_array([str(t) for t in self.types]),
            names=json_array(self.names),
            roles=json_array(self.edge_roles),
        )
        atomic_write_bytes(path / "graph.npz", buf.getvalue())

    def load(self, path: str | Path) -> KnowledgeGraph:
        with np.load(Path(path) / "graph.npz", allow_pickle=False) as npz:
            self.types = np.asarray(from_json_array(npz["types"]), dtype=object)
            self.names = from_json_array(npz["names"])
            roles = from_json_array(npz["roles"])
            rows, cols, n = npz["rows"], npz["cols"], int(npz["n_items"])
        self._build(n, rows, cols, roles)
        return self


def _series(dataset: Any) -> list[str]:
    """A ``series`` attribute per item (catalogue ``attributes`` JSON), empty when none."""
    out = [""] * dataset.n_items
    if "attributes" not in dataset.catalogue.columns:
        return out
    for i, a in enumerate(dataset.catalogue["attributes"].to_list()[: dataset.n_items]):
        if isinstance(a, str) and '"series"' in a:
            try:
                out[i] = str(json.loads(a).get("series") or "")
            except (json.JSONDecodeError, AttributeError):
                pass
    return out
