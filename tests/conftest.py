from __future__ import annotations

import os
from pathlib import Path

import pytest

from avrec.storage.sqlite import SQLiteStore

# Tests never download anything.
os.environ.setdefault("AVREC_OFFLINE", "1")


@pytest.fixture
def store(tmp_path: Path):
    s = SQLiteStore(tmp_path / "avrec.db")
    yield s
    s.close()


def _data_dir() -> Path | None:
    raw = os.environ.get("AVREC_DATA_DIR")
    if raw and Path(raw).is_dir():
        return Path(raw)
    here = Path(__file__).resolve().parents[2] / "shared" / "datasets"
    return here if here.is_dir() else None


@pytest.fixture
def data_dir() -> Path:
    """The real datasets (../shared/datasets); tests using it are marked realdata."""
    d = _data_dir()
    if d is None:
        pytest.skip("real datasets not found: set AVREC_DATA_DIR")
    return d


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path
