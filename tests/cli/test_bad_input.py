"""Bad and hostile input at the command line (issue #16), run as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from avrec.language import MAX_QUERY_CHARS
from tests.cli.test_cli import run, song_workspace
from tests.conftest import write


def _events_workspace(tmp_path: Path) -> Path:
    """A workspace of 20 users who each played six of twelve items."""
    ws = tmp_path / "ws"
    assert run("init", str(ws)).returncode == 0
    lines = ["user_id,item_id,timestamp"]
    lines += [f"u{u},i{(u + k) % 12},{1000 * u + k}" for u in range(20) for k in range(6)]
    r = run("-w", str(ws), "ingest", "events", str(write(tmp_path / "e.csv", "\n".join(lines))))
    assert r.returncode == 0, r.stderr
    return ws


def test_a_symlink_loop_marks_its_item_and_the_analysis_goes_on(tmp_path):
    """Bug #16: one item whose image was a symlink loop inside the media root stopped
    ``avrec analyze`` for every item with ``RuntimeError: Symlink loop``."""
    ws = tmp_path / "ws"
    assert run("init", str(ws)).returncode == 0
    media = ws / "media"  # a workspace's own media folder is an allowed root
    media.mkdir(exist_ok=True)
    (media / "a.png").symlink_to(media / "b.png")
    (media / "b.png").symlink_to(media / "a.png")
    items = write(
        tmp_path / "items.csv",
        "item_id,title,image\n"
        "piano,Relaxing piano music for studying,\n"
        f"loop,A looping picture,{media / 'a.png'}\n",
    )
    assert run("-w", str(ws), "ingest", "items", str(items)).returncode == 0
    r = run("-w", str(ws), "analyze", "--json")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    report = json.loads(r.stdout)
    assert report["total"] == report["analysed"] == 2
    assert report["errors"] == {"loop": [f"image: {media / 'a.png'}: symlink loop"]}
    shown = run("-w", str(ws), "analyze", "--item", "loop", "--show", "--json")
    [loop] = json.loads(shown.stdout)
    assert loop["status"] == "error" and loop["errors"] == report["errors"]["loop"]
    [piano] = json.loads(
        run("-w", str(ws), "analyze", "--item", "piano", "--show", "--json").stdout
    )
    assert piano["status"] == "ok"


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("recommend", "--user", "u1", "--k", "0"), "'--k'"),
        (("recommend", "--user", "u1", "--k", "abc"), "'--k'"),
        (("analyze", "--workers", "-1"), "'--workers'"),
        (("evaluate", "--k", "10,abc"), "'--k'"),
        (("evaluate", "--sampled", "0"), "'--sampled'"),
        (("anomalies", "--top", "0"), "'--top'"),
        (("stats", "--bogus"), "--bogus"),
        (("bogus",), "'bogus'"),
        (("recommend",), "'--user'"),
        (("evaluate", "--split-file"), "'--split-file'"),
    ],
)
def test_usage_errors_are_click_messages_not_tracebacks(tmp_path, args, named):
    """Bug #16: typer 0.29 raises its own copy of click's exceptions, which ``main()`` did not
    recognise, so every usage error printed a traceback and exited 1."""
    r = run(*args, cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    assert "Error:" in r.stderr and named in r.stderr, r.stderr
    assert r.stdout == ""


_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from avrec.cli.main import app, main

    @app.command("eof")
    def _eof() -> None:
        raise EOFError  # input that ends too soon, as a cut gzip stream raised it

    @app.command("wait")
    def _wait() -> None:
        print("ready", flush=True)
        time.sleep(60)

    sys.argv = ["avrec", sys.argv[1]]
    main()
    """
)


def test_end_of_input_is_an_error_and_only_ctrl_c_aborts(tmp_path):
    """Bug #16: click turns an ``EOFError`` into an abort, so a truncated gzip printed
    "aborted" and exited 130 as if the user had pressed Ctrl-C. No real component raises
    a bare EOFError any more, so two commands are added to the real app for the test."""
    env = {**os.environ, "COLUMNS": "200"}
    r = subprocess.run(
        [sys.executable, "-c", _SCRIPT, "eof"], capture_output=True, text=True, env=env, timeout=60
    )
    assert r.returncode == 1, r.stderr
    assert "error: unexpected end of input" in r.stderr
    assert "aborted" not in r.stderr and "Traceback" not in r.stderr
    proc = subprocess.Popen(
        [sys.executable, "-c", _SCRIPT, "wait"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert err.strip() == "aborted"


def test_version_prints_the_version(tmp_path):
    """``avrec --version`` asked for a command (and showed a traceback) instead."""
    from avrec import __version__

    r = run("--version", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == __version__, r.stderr


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"\x89PNG\r\n\x1a\n\xff\xfe", "not a text file (invalid UTF-8 at line 1)"),
        (b"user_id\tvalid_item\ttest_item\n", "the split file has no rows"),
        (b"u1\ti1\ti2\nu2\ti2\ti3\nu1\ti2\ti3\n", "user 'u1' is listed twice (lines 1 and 3)"),
    ],
)
def test_a_bad_split_file_is_one_error_line(tmp_path, content, why):
    """Bug #16: a binary split file gave a traceback, an empty one a table of NaN, and a
    user listed twice was accepted."""
    ws = _events_workspace(tmp_path)
    split = tmp_path / "split.tsv"
    split.write_bytes(content)
    r = run("-w", str(ws), "evaluate", "--models", "pop", "--split-file", str(split))
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "nan" not in r.stdout.lower()
    [line] = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert line.endswith(f"split.tsv: {why}") or line.endswith(f"split.tsv:3: {why}"), line


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> Path:
    """A workspace with the default pipeline trained (its search index is bm25s')."""
    return song_workspace(tmp_path_factory.mktemp("songs"))


def test_train_prints_no_debug_lines(songs):
    """Bug #16: bm25s sets its own logger to DEBUG when imported, so ``avrec train``
    printed "DEBUG bm25s: Building index from tokens" without ``--debug``."""
    ws = songs
    r = run("-w", str(ws), "train")
    assert r.returncode == 0, r.stderr
    assert "DEBUG" not in r.stdout + r.stderr
    debug = run("--debug", "-w", str(ws), "train")
    assert "DEBUG bm25s" in debug.stderr  # --debug still shows it


def test_a_long_query_is_cut_and_the_cli_says_so(songs):
    """Bug #16: a 100 kB search query took up to a minute and 600 MB, and was echoed back
    whole."""
    ws = songs
    query = "quiet piano trio " * 6000  # 102,000 characters
    r = run("-w", str(ws), "search", query, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["query_truncated"] is True and len(out["query"]) <= MAX_QUERY_CHARS
    assert out["items"] and "only its beginning is read" in r.stderr
    r = run("-w", str(ws), "ask", query, "--json", "--llm", "none")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["query_truncated"] is True and len(out["query"]) <= MAX_QUERY_CHARS
    assert "only its beginning is read" in r.stderr
    short = json.loads(run("-w", str(ws), "search", "piano", "--json").stdout)
    assert short["query"] == "piano" and short["query_truncated"] is False
