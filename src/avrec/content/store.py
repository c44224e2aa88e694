"""The content store: what ``avrec analyze`` found, cached so nothing is analysed twice.

One SQLite file per workspace (``content.db``), in WAL mode, written by one process (the
analyser's main process) with a commit per finished item or batch, so a killed run loses only
the items in flight. Three caches, from the most to the least expensive to rebuild:

- ``files``: the sha256 of each media file, keyed by path, size and modification time (a file is
  hashed once until it changes);
- ``media``: the media stage's result (frames, speech, OCR, audio), keyed by the media files'
  hashes and the versions of the media models and settings;
- ``segments``: text vectors keyed by the text's hash and the text encoder's version;

and the per-item results (``items`` + ``vectors``), keyed by a hash of everything they were built
from, so re-running skips unchanged items.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from avrec.errors import StoreError

__all__ = ["ContentStore", "file_sha256"]

_DDL = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    ino INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS media (
    key TEXT PRIMARY KEY, result TEXT NOT NULL, created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS media_vectors (
    key TEXT NOT NULL, modality TEXT NOT NULL, vec BLOB NOT NULL, PRIMARY KEY (key, modality)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS segments (
    key TEXT PRIMARY KEY, vec BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT PRIMARY KEY, key TEXT NOT NULL, status TEXT NOT NULL, errors TEXT NOT NULL,
    info TEXT NOT NULL, updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS vectors (
    item_id TEXT NOT NULL, modality TEXT NOT NULL, vec BLOB NOT NULL,
    PRIMARY KEY (item_id, modality)
);
"""


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """The sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _blob(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype=np.float32).tobytes()


def _vec(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype=np.float32).copy()


class ContentStore:
    """Analysis results and caches in one SQLite file.

    Raises:
        StoreError: the file cannot be opened or is not a content store.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_DDL)
            cols = {r[1] for r in self._conn.execute("PRAGMA table_info(files)")}
            if "ino" not in cols:  # a store from before inode/ctime keys: the cache is rebuilt
                self._conn.executescript("DROP TABLE files;\n" + _DDL)
        except sqlite3.DatabaseError as exc:
            if hasattr(self, "_conn"):
                self._conn.close()
            raise StoreError(f"{self.path}: cannot open the content store ({exc})") from None

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ContentStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> None:
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in statements:
                c.execute(sql, params)
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    # -- files ---------------------------------------------------------------------------------
    def file_hash(self, path: str | Path) -> str:
        """The sha256 of a media file, from the cache while its size, mtime, inode and ctime
        are unchanged (ctime catches copies that preserve mtime, like ``cp -p``)."""
        p = str(Path(path).resolve())
        st = os.stat(p)
        sig = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
        row = self._conn.execute(
            "SELECT sha256 FROM files WHERE path = ? AND size = ? AND mtime_ns = ? AND ino = ? "
            "AND ctime_ns = ?",
            (p, *sig),
        ).fetchone()
        if row:
            return row[0]
        digest = file_sha256(p)
        after = os.stat(p)
        if (after.st_size, after.st_mtime_ns, after.st_ino, after.st_ctime_ns) != sig:
            return digest  # changed while being read: use it, but do not cache it
        self._write(
            [
                (
                    "INSERT OR REPLACE INTO files(path, size, mtime_ns, ino, ctime_ns, sha256) "
                    "VALUES (?,?,?,?,?,?)",
                    (p, *sig, digest),
                )
            ]
        )
        return digest

    # -- media stage ---------------------------------------------------------------------------
    def media_errors(self, key: str) -> list[str] | None:
        """The problems a cached media result recorded (``[]``: none), or ``None`` when there
        is no cached result; reads no vectors."""
        row = self._conn.execute("SELECT result FROM media WHERE key = ?", (key,)).fetchone()
        return None if row is None else list(json.loads(row[0]).get("errors", []))

    def put_media(self, key: str, result: dict[str, Any], vectors: dict[str, np.ndarray]) -> None:
        stmts: list[tuple[str, Sequence[Any]]] = [
            ("DELETE FROM media_vectors WHERE key = ?", (key,)),
            (
                "INSERT OR REPLACE INTO media(key, result, created_at) VALUES (?,?,?)",
                (key, json.dumps(result, ensure_ascii=False), time.time()),
            ),
        ]
        stmts += [
            ("INSERT INTO media_vectors(key, modality, vec) VALUES (?,?,?)", (key, m, _blob(v)))
            for m, v in vectors.items()
        ]
        self._write(stmts)

    def get_media(self, key: str) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        row = self._conn.execute("SELECT result FROM media WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        vecs = {
            m: _vec(b)
            for m, b in self._conn.execute(
                "SELECT modality, vec FROM media_vectors WHERE key = ?", (key,)
            )
        }
        return json.loads(row[0]), vecs

    # -- small named values (calibrations) ------------------------------------------------------
    def get_meta(self, key: str) -> Any:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put_meta(self, key: str, value: Any) -> None:
        self._write(
            [("INSERT OR REPLACE INTO meta(key, value) VALUES (?,?)", (key, json.dumps(value)))]
        )

    # -- text segments -------------------------------------------------------------------------
    def get_segments(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for lo in range(0, len(keys), 500):
            part = list(keys[lo : lo + 500])
            q = f"SELECT key, vec FROM segments WHERE key IN ({','.join('?' * len(part))})"
            out.update((k, _vec(b)) for k, b in self._conn.execute(q, part))
        return out

    def put_segments(self, vectors: dict[str, np.ndarray]) -> None:
        self._write(
            ("INSERT OR REPLACE INTO segments(key, vec) VALUES (?,?)", (k, _blob(v)))
            for k, v in vectors.items()
        )

    # -- items ---------------------------------------------------------------------------------
    def item_keys(self) -> dict[str, str]:
        return dict(self._conn.execute("SELECT item_id, key FROM items"))

    def put_items(self, rows: Sequence[dict[str, Any]]) -> None:
        """Write finished items: ``item_id, key, status, errors, info, vectors``."""
        stmts: list[tuple[str, Sequence[Any]]] = []
        now = time.time()
        for r in rows:
            stmts.append(("DELETE FROM vectors WHERE item_id = ?", (r["item_id"],)))
            stmts.append(
                (
                    "INSERT OR REPLACE INTO items(item_id, key, status, errors, info, updated_at) "
                    "VALUES (?,?,?,?,?,?)",
                    (
                        r["item_id"],
                        r["key"],
                        r["status"],
                        json.dumps(r["errors"], ensure_ascii=False),
                        json.dumps(r["info"], ensure_ascii=False),
                        now,
                    ),
                )
            )
            for m, v in r["vectors"].items():
                stmts.append(
                    (
                        "INSERT INTO vectors(item_id, modality, vec) VALUES (?,?,?)",
                        (r["item_id"], m, _blob(v)),
                    )
                )
        self._write(stmts)

    def item(self, item_id: str) -> dict[str, Any] | None:
        """One item's result: status, errors, info and vectors; ``None`` if not analysed."""
        row = self._conn.execute(
            "SELECT status, errors, info, updated_at FROM items WHERE item_id = ?", (item_id,)
        ).fetchone()
        if row is None:
            return None
        vecs = {
            m: _vec(b)
            for m, b in self._conn.execute(
                "SELECT modality, vec FROM vectors WHERE item_id = ?", (item_id,)
            )
        }
        return {
            "item_id": item_id,
            "status": row[0],
            "errors": json.loads(row[1]),
            "info": json.loads(row[2]),
            "updated_at": row[3],
            "vectors": vecs,
        }

    def status_counts(self) -> dict[str, int]:
        return dict(self._conn.execute("SELECT status, COUNT(*) FROM items GROUP BY status"))

    def infos(self) -> dict[str, dict[str, Any]]:
        """``item_id -> info`` of every analysed item."""
        return {i: json.loads(s) for i, s in self._conn.execute("SELECT item_id, info FROM items")}

    def vectors(self, modality: str, item_ids: Sequence[str]) -> np.ndarray:
        """``len(item_ids) x dim`` vectors of one modality; zero rows for items without it.

        Raises:
            StoreError: the requested items' vectors differ in size (analysed with different
                encoders); the message names some of them.
        """
        ids = list(item_ids)
        found: dict[str, bytes] = {}
        for lo in range(0, len(ids), 500):
            part = ids[lo : lo + 500]
            q = (
                "SELECT item_id, vec FROM vectors WHERE modality = ? "
                f"AND item_id IN ({','.join('?' * len(part))})"
            )
            found.update(self._conn.execute(q, [modality, *part]))
        by_dim: dict[int, list[str]] = {}
        for item, b in found.items():
            by_dim.setdefault(len(b) // 4, []).append(item)
        if len(by_dim) > 1:
            detail = "; ".join(f"{d}-d: {', '.join(v[:3])}" for d, v in sorted(by_dim.items()))
            raise StoreError(
                f"{modality} vectors of different sizes ({detail}): the encoder changed between "
                "runs; run avrec analyze --force to rebuild these items"
            )
        dim = next(iter(by_dim), 0)
        out = np.zeros((len(ids), dim), np.float32)
        for i, item in enumerate(ids):
            b = found.get(item)
            if b is not None:
                out[i] = np.frombuffer(b, dtype=np.float32)
        return out

    def attach(self, dataset, modalities: Sequence[str] | None = None) -> list[str]:  # noqa: ANN001
        """Set ``dataset.item_features`` from the analysed vectors (rows in item order).

        Items that were not analysed get zero rows. Returns the modalities attached.
        """
        names = list(modalities) if modalities is not None else self.modalities()
        ids = dataset.items.lookup(np.arange(dataset.n_items))
        for m in names:
            dataset.set_item_features(m, self.vectors(m, list(ids)))
        dataset.item_texts = self.texts(set(ids))
        return names

    def texts(self, item_ids: set[str] | None = None) -> dict[str, dict[str, str]]:
        """``item_id -> {transcript, ocr, keywords, mentions}``: the words the analysis found
        in each item (speech, on-screen text, keywords) and the people it found named there
        without a credit, for search and the knowledge graph."""
        out = {}
        for item, info in self.infos().items():
            if item_ids is not None and item not in item_ids:
                continue
            kw = " ".join(str(k[0]) for k in info.get("keywords") or [] if k)
            tags = " ".join(str(t.get("tag", "")) for t in info.get("tags") or [] if t)
            named = [
                str(p.get("name", ""))
                for p in info.get("people") or []
                if isinstance(p, dict) and not p.get("credited")
            ]
            doc = {
                "transcript": info.get("transcript") or "",
                "ocr": info.get("ocr_text") or "",
                "keywords": " ".join(x for x in (kw, tags) if x),
                "mentions": "\n".join(n for n in named if n),  # people named, not credited
            }
            doc = {k: v for k, v in doc.items() if v}
            if doc:
                out[item] = doc
        return out

    def modalities(self) -> list[str]:
        return [r[0] for r in self._conn.execute("SELECT DISTINCT modality FROM vectors")]
