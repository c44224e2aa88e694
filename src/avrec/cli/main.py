"""The ``avrec`` command."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import typer
from rich.markup import escape

from avrec import __version__
from avrec.cli import datasets, ingest, release, store, users
from avrec.cli._common import State, err_console
from avrec.cli.analyze import analyze
from avrec.cli.anomalies import anomalies
from avrec.cli.evaluate import evaluate
from avrec.cli.init import init
from avrec.cli.language import ask, graph, search
from avrec.cli.recommend import playlist, precompute, recommend, similar
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


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    workspace: Path | None = typer.Option(
        None, "--workspace", "-w", help="workspace folder (default: AVREC_WORKSPACE or the cwd)"
    ),
    debug: bool = typer.Option(False, "--debug", help="show tracebacks and debug logs"),
    version: bool = typer.Option(
        False,
        "--version",
        is_eager=True,  # before click asks for a command
        callback=_print_version,
        help="print the version and exit",
    ),
) -> None:
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
app.command()(precompute)
app.command()(search)
app.command()(ask)
app.command()(graph)
app.command()(serve)
app.command()(store.migrate)
app.add_typer(keys_app, name="keys")
app.add_typer(ingest.app, name="ingest")
app.add_typer(datasets.app, name="datasets")
app.add_typer(store.app, name="store")
app.add_typer(users.app, name="users")
app.add_typer(release.app, name="release")


def _click_errors() -> tuple[type[Exception], ...]:
    """The exception classes click's usage errors derive from: typer 0.2x carries its own copy
    of click (``typer._click``), whose exceptions are not ``click.ClickException``; older
    typers use click itself."""
    import click

    classes: list[type[Exception]] = [click.ClickException]
    try:
        from typer._click.exceptions import ClickException
    except ImportError:
        pass
    else:
        classes.append(ClickException)
    return tuple(classes)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``exc`` was raised while handling (or from) an exception of ``kind``."""
    return isinstance(exc.__cause__, kind) or isinstance(exc.__context__, kind)


def _run(args: list[str]) -> None:
    """The app without click's own handling of errors, which :func:`main` does instead: click
    (and typer, even with ``standalone_mode=False``) turns Ctrl-C into a silent exit code
    and an ``EOFError`` into an abort."""
    cmd = typer.main.get_command(app)
    with cmd.make_context("avrec", args) as ctx:
        cmd.invoke(ctx)


def main() -> None:
    """Entry point: user mistakes become one red line; ``--debug`` shows the traceback.

    Usage errors (an unknown command or option, a bad or missing value) print click's usage
    message and exit 2. Ctrl-C prints "aborted" and exits 130; input that ends too soon (an
    ``EOFError``) is an error, exit 1.
    """
    debug = "--debug" in sys.argv
    try:
        _run(sys.argv[1:])
    except AvrecError as exc:
        if debug:
            raise
        err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(1)
    except typer.Exit as exc:  # --help, --version
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("aborted")
        sys.exit(130)
    except (EOFError, typer.Abort) as exc:  # a prompt turns EOF into an abort
        if isinstance(exc, EOFError) or _caused_by(exc, EOFError):
            if debug:
                raise
            err_console.print("[red]error:[/] unexpected end of input")
            sys.exit(1)
        err_console.print("aborted")
        sys.exit(130)
    except BrokenPipeError:  # the reader went away (``| head``): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except Exception as exc:  # click usage errors carry their own message and code
        if isinstance(exc, _click_errors()):
            exc.show()  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        raise


if __name__ == "__main__":
    main()
