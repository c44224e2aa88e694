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

from tests.cli.test_cli import AVREC, song_workspace

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


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Path:
    return song_workspace(tmp_path_factory.mktemp("served"))


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
