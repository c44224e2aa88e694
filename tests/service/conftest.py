"""A trained workspace served by the real ``avrec serve`` (uvicorn) on a loopback port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.cli.test_cli import AVREC, run
from tests.conftest import write

READ = "read-key-0123456789abcdef"
WRITE = "write-key-0123456789abcdef"
ADMIN = "admin-key-0123456789abcdef"
KEYS = f"{READ}:read,{WRITE}:write,{ADMIN}:admin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    ws: Path
    log: Path

    def client(self, key: str | None = READ) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start(ws: Path, env: dict[str, str] | None = None, workers: int = 1) -> Server:
    port = free_port()
    log = ws / f"server-{port}.log"
    proc = subprocess.Popen(
        [AVREC, "-w", str(ws), "serve", "--port", str(port), "--workers", str(workers)],
        stdout=open(log, "w"),  # noqa: SIM115 - the server owns it
        stderr=subprocess.STDOUT,
        env={**os.environ, "AVREC_API_KEYS": KEYS, "AVREC_RETRAIN_ON_ERASURE": "0",
             **(env or {})},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"avrec serve exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health/ready", timeout=2).status_code == 200:
                return Server(url, proc, ws, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"avrec serve did not get ready: {log.read_text()[-3000:]}")


def make_workspace(root: Path) -> Path:
    """24 songs (jazz i0-i11, rock i12-i23, English and French), 40 users who each play one
    genre, trained with the default pipeline."""
    ws = root / "ws"
    assert run("init", str(ws)).returncode == 0
    rows = ["item_id,title,description,categories,language,duration"]
    for i in range(24):
        cat = "jazz" if i < 12 else "rock"
        desc = "a quiet piano trio" if i < 12 else "loud electric guitars"
        rows.append(f"i{i},Song {i},{desc},{cat},{'fr' if i % 2 else 'en'},{60 * (i + 1)}")
    r = run("-w", str(ws), "ingest", "items", str(write(root / "items.csv", "\n".join(rows))))
    assert r.returncode == 0, r.stderr
    lines = ["user_id,item_id,timestamp"]
    for u in range(40):
        base = 0 if u % 2 == 0 else 12
        lines += [f"u{u},i{base + (u + 3 * k) % 12},{1000 * u + k}" for k in range(8)]
    r = run("-w", str(ws), "ingest", "events", str(write(root / "e.csv", "\n".join(lines))))
    assert r.returncode == 0, r.stderr
    r = run("-w", str(ws), "train")
    assert r.returncode == 0, r.stderr
    return ws


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Path:
    return make_workspace(tmp_path_factory.mktemp("served"))


@pytest.fixture()
def fresh_ws(trained, tmp_path) -> Path:
    """A copy of the trained workspace a test may change."""
    dst = tmp_path / "ws"
    shutil.copytree(trained, dst)
    for f in dst.glob("server-*.log"):
        f.unlink()
    return dst


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory) -> Iterator[Server]:
    """One server for a module's read-mostly tests, on its own copy of the workspace."""
    dst = tmp_path_factory.mktemp("srv") / "ws"
    shutil.copytree(trained, dst)
    srv = start(dst)
    yield srv
    srv.stop()
