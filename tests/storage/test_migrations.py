"""Versioned schemas on both backends: a store written by this release opens after an
upgrade that adds a migration, every row kept; a newer store is refused, not damaged."""

from __future__ import annotations

import importlib

import polars as pl
import pytest

from avrec.errors import StoreError
from avrec.storage import open_store


def backend(url: str):
    return importlib.import_module(
        "avrec.storage.sqlite" if url.startswith("sqlite") else "avrec.storage.postgres"
    )


def test_a_store_of_this_release_opens_after_an_upgrade(store_url, monkeypatch):
    mod = backend(store_url)
    with open_store(store_url) as s:  # written by this release
        assert s.schema_version() == mod.SCHEMA_VERSION
        s.add_events(pl.DataFrame({"user_id": ["u"], "item_id": ["i"], "event": ["play"],
                                   "ts": [1.0]}))  # fmt: skip
        s.upsert_items(pl.DataFrame({"item_id": ["i"], "title": ["One"]}))
    # the next release adds a column
    nxt = mod.SCHEMA_VERSION + 1
    step = (nxt, "a column", "ALTER TABLE items ADD COLUMN rights TEXT;")
    monkeypatch.setattr(mod, "MIGRATIONS", [*mod.MIGRATIONS, step])
    monkeypatch.setattr(mod, "SCHEMA_VERSION", nxt)
    with open_store(store_url) as s:  # opening migrates
        assert s.schema_version() == nxt
        assert s.migrate() == []  # once only
        assert s.counts()["events"] == 1 and s.get_items(["i"])["title"].to_list() == ["One"]
    monkeypatch.undo()
    # the older avrec refuses the newer store with one clear line
    with pytest.raises(StoreError, match="newer than this avrec"):
        open_store(store_url)


def test_avrec_migrate_says_what_ran(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from avrec.cli.main import app
    from avrec.storage import sqlite

    runner = CliRunner()
    ws = tmp_path / "ws"
    assert runner.invoke(app, ["init", str(ws)]).exit_code == 0
    res = runner.invoke(app, ["-w", str(ws), "migrate"])
    assert res.exit_code == 0 and "up to date" in res.output
    nxt = sqlite.SCHEMA_VERSION + 1
    step = (nxt, "a column", "ALTER TABLE items ADD COLUMN rights TEXT;")
    monkeypatch.setattr(sqlite, "MIGRATIONS", [*sqlite.MIGRATIONS, step])
    monkeypatch.setattr(sqlite, "SCHEMA_VERSION", nxt)
    res = runner.invoke(app, ["-w", str(ws), "migrate"])
    assert res.exit_code == 0 and f"schema version {nxt} (ran {nxt})" in res.output
