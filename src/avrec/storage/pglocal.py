"""A throwaway PostgreSQL server in one folder, on loopback, from Debian's ``postgresql``.

For the tests, the benchmarks and trying the PostgreSQL store on one machine: ``initdb`` into
a fresh folder with a random password (SCRAM over TCP and over the Unix socket, which lies in
the folder; the folder and the password file are private), ``pg_ctl start`` on
``127.0.0.1`` and a free port, ``stop`` removes it all. The
server refuses to run as root, so as root it runs as the ``postgres`` user and its folder is
made under ``/tmp`` (the user must be able to reach it).

    with LocalPostgres() as pg:
        store = open_store(pg.url("mydb"))
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from avrec.errors import StoreError

__all__ = ["LocalPostgres", "postgres_bindir"]


def postgres_bindir() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl`` (Debian keeps them out of ``PATH``), or
    ``None`` when PostgreSQL is not installed."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalPostgres:
    """One PostgreSQL server, started by :meth:`start`, removed by :meth:`stop`.

    Args:
        folder: where the cluster goes (a fresh temporary folder by default).
        port: the TCP port (a free one by default).
        settings: extra server settings (``{"fsync": "off"}``).
    """

    user = "avrec"

    def __init__(
        self,
        folder: str | Path | None = None,
        port: int | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.bindir = postgres_bindir()
        if self.bindir is None:
            raise StoreError(
                "PostgreSQL is not installed: apt-get install postgresql (Debian), or point "
                "[store] url at a server"
            )
        self.as_root = os.geteuid() == 0
        self.owned = folder is None
        self.root = Path(folder or tempfile.mkdtemp(prefix="avrec-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.port = port or _free_port()
        self.password = secrets.token_urlsafe(16)
        self.settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.root),
            "max_connections": "200",
            **(settings or {}),
        }
        self.started = False

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        kw: dict = {}
        if self.as_root:  # the server refuses root
            kw = {"user": "postgres", "group": "postgres", "extra_groups": []}
        return subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            check=check,
            cwd=self.root,
            **kw,
        )

    def start(self) -> LocalPostgres:
        """initdb (the first time) and start; returns self."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)  # the server's user (and root) only
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
        if not (self.data / "PG_VERSION").exists():
            pw = self.root / "pw"
            pw.touch(mode=0o600)
            pw.write_text(self.password + "\n")
            if self.as_root:
                shutil.chown(pw, "postgres", "postgres")
            res = self._run(
                "initdb", "-D", str(self.data), "-U", self.user, f"--pwfile={pw}",
                "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8",
                "--no-locale", "--no-sync", check=False,
            )  # fmt: skip
            pw.unlink()
            if res.returncode:
                raise StoreError(f"initdb failed: {res.stderr.strip() or res.stdout.strip()}")
            (self.root / "password").touch(mode=0o600)
            (self.root / "password").write_text(self.password)
        else:
            self.password = (self.root / "password").read_text()
        opts = " ".join(f"-c {k}={v}" for k, v in self.settings.items())
        res = self._run(
            "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data),
            "-l", str(self.root / "server.log"), "-o", f"-p {self.port} {opts}",
            check=False,
        )  # fmt: skip
        if res.returncode:
            log = (self.root / "server.log").read_text()[-2000:] if (
                self.root / "server.log").exists() else ""  # fmt: skip
            raise StoreError(f"PostgreSQL did not start: {res.stderr.strip()} {log}")
        self.started = True
        return self

    def url(self, database: str = "postgres", password: bool = True) -> str:
        """A ``postgresql://`` URL for ``database`` on this server."""
        secret = f":{self.password}" if password else ""
        return f"postgresql://{self.user}{secret}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create ``name`` (from ``template0``) and return its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def kill(self) -> None:
        """Stop the server at once (``immediate``: like a crash, it recovers from its WAL)."""
        self._run("pg_ctl", "stop", "-m", "immediate", "-D", str(self.data), check=False)

    def stop(self, remove: bool | None = None) -> None:
        """Stop the server and, by default when its folder was made here, remove it."""
        if self.started:
            self._run("pg_ctl", "stop", "-m", "fast", "-w", "-D", str(self.data), check=False)
            self.started = False
        if remove if remove is not None else self.owned:
            shutil.rmtree(self.root, ignore_errors=True)

    def restart(self) -> None:
        """Stop (fast) and start again, keeping the data."""
        self.stop(remove=False)
        self.start()

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
