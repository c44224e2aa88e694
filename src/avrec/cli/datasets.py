"""``avrec datasets list|info|load``."""

from __future__ import annotations

import typer
from rich.table import Table

from avrec.cli._common import console, count_progress, state
from avrec.data.loaders import DATASETS, get_loader
from avrec.ingest.pipeline import ingest_public

app = typer.Typer(
    help="Public datasets: MovieLens-100K, MicroLens-50k, Last.fm 2K, KuaiRec captions.",
    no_args_is_help=True,
)


@app.command("list")
def list_(ctx: typer.Context) -> None:
    """The datasets avrec can load, and whether their files are present."""
    settings = state(ctx).settings()
    table = Table("name", "description", "present", "source")
    for name, loader in sorted(DATASETS.items()):
        try:
            folder = loader.locate(settings.data_dir, settings.cache_dir, offline=True)
            present, where = "yes", str(folder)
        except Exception:  # noqa: BLE001 - absence is the answer here
            present, where = "no", loader.download_url or loader.homepage
        table.add_row(name, loader.description, present, where)
    console.print(table)


@app.command()
def info(ctx: typer.Context, name: str) -> None:
    """Check a dataset's files and counts and show what it converts to."""
    settings = state(ctx).settings()
    loader = get_loader(name)
    data = loader.load(settings.data_dir, settings.cache_dir, settings.offline)
    console.print(f"[bold]{name}[/]: {loader.description}")
    console.print(f"  source {data.meta['source']}; terms: {loader.terms}")
    for f, n in data.meta.get("files", {}).items():
        console.print(f"  {f}: {n:,} rows (as published)")
    console.print(
        f"  {data.items.height:,} items, {data.users.height:,} users, {data.events.height:,} events"
    )
    for note in data.notes:
        console.print(f"  note: {note}")


@app.command()
def load(ctx: typer.Context, name: str) -> None:
    """Check a dataset and ingest it into the workspace (idempotent)."""
    st = state(ctx)
    settings = st.settings()
    loader = get_loader(name)
    data = loader.load(settings.data_dir, settings.cache_dir, settings.offline)
    ws = st.open_workspace()
    total = data.items.height + data.users.height + data.events.height
    try:
        with count_progress(f"load {name}", total) as adv:
            reports = ingest_public(ws.store, data, ws.config, progress=adv)
        for folder in data.media_roots:  # its posters or clips may be read and served
            ws.register_media_root(folder, f"dataset:{name}")
    finally:
        ws.close()
    files = ", ".join(f"{k}: {v:,}" for k, v in data.meta.get("files", {}).items())
    console.print(f"[bold]{name}[/] checked ({files})")
    for r in reports:
        console.print(r.summary())
    for note in data.notes:
        console.print(f"  note: {note}")
