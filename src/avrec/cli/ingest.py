"""``avrec ingest items|events|users FILE``."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer

from avrec.cli._common import byte_progress, console, err_console, state
from avrec.ingest.pipeline import IngestReport, ingest_file
from avrec.ingest.validate import parse_mapping

app = typer.Typer(
    help="Load a catalogue, behaviour log or user file into the workspace.", no_args_is_help=True
)


def _run(
    ctx: typer.Context, kind: str, file: Path, mapping: str | None, fmt: str | None
) -> IngestReport:
    ws = state(ctx).open_workspace()
    # the workspace's [ingest.mapping.<kind>] first, then --map on top
    columns = {**ws.config.ingest.mapping.get(kind, {}), **parse_mapping(mapping)}  # type: ignore[call-overload]
    cancel = threading.Event()

    def on_ctrl_c(signum: int, frame: object) -> None:
        if cancel.is_set():  # a second Ctrl-C: stop now, whatever is in progress
            raise KeyboardInterrupt
        cancel.set()  # the ingest stops before its next block and rolls back

    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        with byte_progress(f"ingest {kind}", file.stat().st_size if file.exists() else 0) as adv:
            report = ingest_file(
                ws.store,
                file,
                kind,
                ws.config,
                columns,
                fmt,  # type: ignore[arg-type]
                ws.rejects_dir,
                progress=adv,
                cancel=cancel,
            )
    except KeyboardInterrupt:
        err_console.print(
            f"interrupted: nothing from {file} was kept (a file is ingested whole or not at all)",
            markup=False,
            highlight=False,
        )
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
        ws.close()
    console.print(report.summary(), markup=False, highlight=False)
    console.print(f"  {report.rows_per_second:,.0f} rows/s")
    if cancel.is_set():
        err_console.print("interrupted after the last row was written: the file was kept whole")
    return report


_MAP = typer.Option(None, "--map", help="canonical=column pairs, e.g. item_id=video_id,title=name")
_FMT = typer.Option(None, "--format", help="csv, tsv, jsonl or parquet (default: extension)")


@app.command()
def items(
    ctx: typer.Context,
    file: Path,
    map: str | None = _MAP,  # noqa: A002
    format: str | None = _FMT,
) -> None:  # noqa: A002
    """Items: item_id, title, description, tags, categories, language, duration, created_at,
    video, audio, image, subtitles, people, available_from, available_until."""
    _run(ctx, "items", file, map, format)


@app.command()
def events(
    ctx: typer.Context,
    file: Path,
    map: str | None = _MAP,  # noqa: A002
    format: str | None = _FMT,
) -> None:  # noqa: A002
    """Events: user_id, item_id, event, value, timestamp, session_id, text, context."""
    _run(ctx, "events", file, map, format)


@app.command()
def users(
    ctx: typer.Context,
    file: Path,
    map: str | None = _MAP,  # noqa: A002
    format: str | None = _FMT,
) -> None:  # noqa: A002
    """Users: user_id and any attribute columns."""
    _run(ctx, "users", file, map, format)
