"""Every store test runs against both backends: SQLite, and a real PostgreSQL server started
for the session on loopback (Debian's ``postgresql``; ``make test`` installs it when missing).
Each PostgreSQL test gets a database of its own."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from avrec.storage import open_store
from avrec.storage.pglocal import LocalPostgres, postgres_bindir

_names = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[LocalPostgres]:
    if postgres_bindir() is None:
        pytest.skip("PostgreSQL is not installed (make test installs Debian's postgresql)")
    with LocalPostgres() as pg:
        yield pg


@pytest.fixture()
def pg_url(pg_server: LocalPostgres) -> str:
    """The URL of a new, empty database on the session's server."""
    return pg_server.create_database(f"t{next(_names)}")


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'avrec.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture()
def store(store_url: str):
    s = open_store(store_url)
    yield s
    s.close()
