"""Shared CLI plumbing: the console, options, workspace lookup and progress bars."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from avrec.config import Settings
from avrec.workspace import Workspace

console = Console()
err_console = Console(stderr=True)


@dataclass
class State:
    """Options given before the verb."""

    workspace: Path | None = None
    debug: bool = False

    def settings(self) -> Settings:
        return Settings()

    def open_workspace(self) -> Workspace:
        return Workspace.find(self.workspace, self.settings())


def state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    if not isinstance(obj, State):
        obj = State()
        ctx.find_root().obj = obj
    return obj


@contextmanager
def byte_progress(description: str, total: int) -> Iterator[Any]:
    """A progress bar over bytes; yields ``advance(n)``."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


@contextmanager
def count_progress(description: str, total: int) -> Iterator[Any]:
    """A progress bar over rows; yields ``advance(n)``."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)
