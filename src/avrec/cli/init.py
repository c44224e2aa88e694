"""``avrec init``: create a workspace."""

from __future__ import annotations

from pathlib import Path

import typer

from avrec.cli._common import console
from avrec.storage.base import redact_url
from avrec.workspace import Workspace


def init(
    path: Path = typer.Argument(Path("."), help="folder for the workspace"),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="keep an existing workspace"),
) -> None:
    """Create a workspace: avrec.toml, the store and the artifacts folder."""
    ws = Workspace.init(path, exist_ok=exist_ok)
    console.print(f"workspace ready at [bold]{ws.root}[/] (store: {redact_url(ws.store_url)})")
    ws.close()
