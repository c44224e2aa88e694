"""The ``avrec`` command."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer

from avrec import __version__
from avrec.cli import datasets, ingest
from avrec.cli._common import State, err_console
from avrec.cli.analyze import analyze
from avrec.cli.anomalies import anomalies
from avrec.cli.evaluate import evaluate
from avrec.cli.init import init
from avrec.cli.language import ask, graph, search
from avrec.cli.recommend import playlist, recommend, similar
from avrec.cli.serve import keys_app, serve
from avrec.cli.stats import stats
from avrec.cli.train import train, tune
from avrec.errors import AvrecError

app = typer.Typer(
    name="avrec",
    help="avrec: recommendations for audio and video catalogues.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    workspace: Path | None = typer.Option(
        None, "--workspace", "-w", help="workspace folder (default: AVREC_WORKSPACE or the cwd)"
    ),
    debug: bool = typer.Option(False, "--debug", help="show tracebacks and debug logs"),
    version: bool = typer.Option(False, "--version", help="print the version and exit"),
) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit()
    ctx.obj = State(workspace=workspace, debug=debug)
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


app.command()(init)
app.command()(stats)
app.command()(anomalies)
app.command()(analyze)
app.command()(evaluate)
app.command()(train)
app.command()(tune)
app.command()(recommend)
app.command()(similar)
app.command()(playlist)
app.command()(search)
app.command()(ask)
app.command()(graph)
app.command()(serve)
app.add_typer(keys_app, name="keys")
app.add_typer(ingest.app, name="ingest")
app.add_typer(datasets.app, name="datasets")


def main() -> None:
    """Entry point: user mistakes become one red line; ``--debug`` shows the traceback."""
    debug = "--debug" in sys.argv
    try:
        app(standalone_mode=False)
    except AvrecError as exc:
        if debug:
            raise
        err_console.print(f"[red]error:[/] {exc}")
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except Exception as exc:  # click usage errors carry their own message and code
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
