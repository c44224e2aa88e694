"""A crash in the middle of an ingest leaves the old state or the new one, never a part."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from avrec.ingest.pipeline import ingest_file
from avrec.storage.sqlite import SQLiteStore
from tests.conftest import write


def _big_events(path: Path, n: int) -> Path:
    with open(path, "w") as fh:
        fh.write("user_id,item_id,event,value,timestamp\n")
        for k in range(n):
            fh.write(f"u{k % 5000},i{(k * 7919) % 20000},play,0.5,{1_600_000_000 + k}\n")
    return path


@pytest.mark.slow
def test_kill_mid_ingest_keeps_old_state(tmp_path):
    db = tmp_path / "avrec.db"
    s = SQLiteStore(db)
    ingest_file(
        s, write(tmp_path / "first.csv", "user_id,item_id,timestamp\nu1,i1,1\nu2,i2,2\n"), "events"
    )
    before = s.events()
    s.close()
    big = _big_events(tmp_path / "big.csv", 1_500_000)
    script = textwrap.dedent(f"""
        import sys
        from avrec.config import WorkspaceConfig, IngestConfig
        from avrec.ingest.pipeline import ingest_file
        from avrec.storage.sqlite import SQLiteStore
        cfg = WorkspaceConfig(ingest=IngestConfig(chunk_bytes=1_000_000))
        ingest_file(SQLiteStore({str(db)!r}), {str(big)!r}, "events", cfg,
                    progress=lambda n: print("chunk", flush=True))
        print("done", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    chunks = 0
    assert proc.stdout is not None
    while chunks < 10:  # well into the file, with rows written to the WAL
        line = proc.stdout.readline()
        assert line and line.strip() != "done", "ingest finished before it could be killed"
        chunks += 1
    wal = Path(str(db) + "-wal")
    deadline = time.time() + 30
    while (not wal.exists() or wal.stat().st_size < 1_000_000) and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    s = SQLiteStore(db)
    assert s.integrity_check() == "ok"
    assert s.events().equals(before)
    assert s.counts()["users"] == 2 and s.counts()["items"] == 2
    assert len(s.ingests()) == 1
    # and the same file ingests completely afterwards
    rep = ingest_file(s, big, "events")
    assert rep.inserted == 1_500_000 and s.counts()["events"] == 1_500_002
    s.close()
