"""``avrec migrate`` and ``avrec store``: the store's schema version, and moving a store
between backends (SQLite and PostgreSQL)."""

from __future__ import annotations

import typer
from rich.table import Table

from avrec.cli._common import console, state
from avrec.storage import open_store
from avrec.storage.base import redact_url

app = typer.Typer(help="The store: copy it between backends.", no_args_is_help=True)


def migrate(ctx: typer.Context) -> None:
    """Bring the workspace's store to this avrec's schema version and say what ran (any
    command that opens the store does the same, silently)."""
    ws = state(ctx).open_workspace()
    store = ws.store  # opening runs what is missing
    ran = store.migrated
    done = f"ran {', '.join(map(str, ran))}" if ran else "up to date"
    console.print(f"{redact_url(ws.store_url)}: schema version {store.schema_version()} ({done})")
    ws.close()


@app.command("copy")
def copy(
    src: str = typer.Argument(..., help="the store to copy, e.g. sqlite:////path/avrec.db"),
    dst: str = typer.Argument(..., help="an empty store, e.g. postgresql://user:pw@host/db"),
    batch: int = typer.Option(500_000, "--batch", min=1000, help="rows per copied block"),
) -> None:
    """Copy every table of SRC into the empty DST (keys kept), then compare each table's
    row count and checksum on both sides."""
    from rich.progress import Progress

    from avrec.storage.copy import copy_store

    with open_store(src) as a, open_store(dst) as b:
        with Progress(console=console, transient=True) as bar:
            tasks: dict[str, int] = {}

            def advance(name: str, n: int) -> None:
                if name not in tasks:
                    tasks[name] = bar.add_task(f"copying {name}", total=None)
                bar.advance(tasks[name], n)

            report = copy_store(a, b, batch=batch, progress=advance)
    table = Table(title=f"{redact_url(src)} -> {redact_url(dst)}: verified")
    table.add_column("table")
    table.add_column("rows", justify="right")
    table.add_column("checksum (both sides)")
    for name, n in report.rows.items():
        table.add_row(name, f"{n:,}", report.checksums[name])
    console.print(table)
