"""``avrec users``: what the store holds about a person (the right of access)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from avrec.cli._common import console, state
from avrec.errors import UnknownEntityError

app = typer.Typer(help="People: export what is held about one.", no_args_is_help=True)


@app.command("export")
def export(
    ctx: typer.Context,
    user_id: str = typer.Argument(..., help="the user's id"),
    out: Path | None = typer.Option(None, "--out", help="write the JSON here (default: print)"),
) -> None:
    """Everything the workspace's store holds about USER_ID as JSON: the user's row, every
    event (searches and comments in their own words included), conversations and the
    precomputed page; the same set `DELETE /v1/users/{id}` erases."""
    ws = state(ctx).open_workspace()
    try:
        held = ws.store.export_user(ws.stored_user(user_id))
    finally:
        ws.close()
    if held is None:
        raise UnknownEntityError(f"nothing is held about user {user_id!r}")
    text = json.dumps(held, indent=2, ensure_ascii=False, default=str)
    if out is None:
        console.print_json(text)
        return
    out.write_text(text + "\n", encoding="utf-8")
    console.print(f"wrote {len(held['events']):,} events of {user_id!r} to {out}")
