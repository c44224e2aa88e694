"""``avrec analyze``: understand the catalogue's media and text (resumable, cached)."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from avrec.cli._common import console, err_console, state

_STAGES = {
    "media": "media (frames, speech, OCR, audio)",
    "text": "text vectors",
    "assemble": "tags, keywords, fusion",
}


def analyze(
    ctx: typer.Context,
    item: list[str] = typer.Option(None, "--item", "-i", help="only these item ids"),
    show: bool = typer.Option(False, "--show", help="print what avrec understood of --item"),
    force: bool = typer.Option(
        False,
        "--force",
        help="rebuild every item; media with problems is analysed again (caches still apply)",
    ),
    workers: int = typer.Option(
        None, min=0, help="media processes (default: [content] workers; 0: one per core)"
    ),
    limit: int = typer.Option(
        None, min=1, help="analyse at most this many items (those never analysed first)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the report (or --show) as JSON"),
    engine: str = typer.Option(
        None,
        "--engine",
        help="local (processes here) or ray (a Ray cluster: RAY_ADDRESS, or a local one); "
        "default: [compute] engine",
    ),
    address: str = typer.Option(
        None, "--address", help="the Ray cluster to join (default: RAY_ADDRESS)"
    ),
) -> None:
    """Turn items' video, audio, images and text into vectors, tags, transcripts and keywords.

    Runs over every item not yet analysed (or changed since); safe to stop and run again.
    """
    from avrec.content.analyze import workspace_analyzer, workspace_inputs
    from avrec.errors import ConfigError

    ws = state(ctx).open_workspace()
    if show and not item:
        raise ConfigError("--show needs --item ID")
    items, catalogue = workspace_inputs(ws, item or None)
    analyzer = workspace_analyzer(ws, workers=workers, engine=engine, address=address)
    if limit is not None:
        done = analyzer.store.item_keys()
        items = (
            [it for it in items if it.item_id not in done]
            + [it for it in items if it.item_id in done]
        )[:limit]
    try:
        if not (show and not force and _all_done(analyzer, items)):
            report = _run(analyzer, items, catalogue, force, quiet=as_json and show)
            if not show:
                if as_json:
                    console.print_json(json.dumps(report.to_dict(), default=str))
                else:
                    _print_report(report)
        if show:
            results = [analyzer.store.item(it.item_id) for it in items]
            if as_json:
                for r in results:
                    if r:
                        r.pop("vectors")
                console.print_json(json.dumps(results, ensure_ascii=False, default=str))
            else:
                for r in results:
                    if r:
                        _show(r)
    finally:
        analyzer.store.close()
        ws.close()


def _all_done(analyzer, items) -> bool:  # noqa: ANN001
    keys = analyzer.store.item_keys()
    return all(it.item_id in keys for it in items)


def _run(analyzer, items, catalogue, force: bool, quiet: bool):  # noqa: ANN001, ANN202
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=quiet,
    ) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(_STAGES.get(stage, stage), total=total, rate="")
            task = tasks[stage]
            elapsed = bar.tasks[task].elapsed or 0.0
            rate = f"{done / elapsed:.1f} items/s" if elapsed > 0 and done else ""
            bar.update(task, completed=done, total=total, rate=rate)

        return analyzer.run(items, catalogue=catalogue, force=force, progress=progress)


def _print_report(report) -> None:  # noqa: ANN001
    t = Table(title="avrec analyze", show_header=False)
    t.add_row("items", f"{report.total:,}")
    t.add_row("analysed", f"{report.analysed:,}")
    t.add_row("unchanged (skipped)", f"{report.unchanged:,}")
    if report.reassembled:
        t.add_row("re-assembled (catalogue changed)", f"{report.reassembled:,}")
    t.add_row("media analysed / cached", f"{report.media_analysed:,} / {report.media_cached:,}")
    t.add_row(
        "text segments encoded / cached",
        f"{report.segments_encoded:,} / {report.segments_cached:,}",
    )
    if report.media_seconds:
        t.add_row("media processed", f"{report.media_seconds:,.1f} s")
    for stage, s in sorted(report.stage_seconds.items()):
        t.add_row(f"time in {stage}", f"{s:,.2f} s")
    t.add_row("wall time", f"{report.seconds:,.2f} s")
    t.add_row("items with problems", f"{len(report.errors):,}")
    console.print(t)
    for item_id, errs in list(report.errors.items())[:20]:
        console.print(f"[yellow]{item_id}[/]: " + "; ".join(errs))
    if len(report.errors) > 20:
        console.print(f"... and {len(report.errors) - 20} more (avrec analyze --item ID --show)")


def _show(r: dict[str, Any]) -> None:
    info = r["info"]
    t = Table(show_header=False, box=None)
    colour = {"ok": "green", "partial": "yellow", "error": "red"}[r["status"]]
    t.add_row("status", f"[{colour}]{r['status']}[/]")
    for e in r["errors"]:
        t.add_row("problem", f"[red]{e}[/]")
    t.add_row("language", str(info.get("language") or "-"))
    if info.get("duration"):
        t.add_row("duration", f"{info['duration']:.1f} s")
    if info.get("tags"):
        t.add_row(
            "tags",
            ", ".join(f"{x['tag']} ({x['score']:.2f}, {x['source']})" for x in info["tags"]),
        )
    if info.get("keywords"):
        t.add_row("keywords", ", ".join(w for w, _ in info["keywords"]))
    if info.get("labels"):
        t.add_row("in the picture", ", ".join(f"{lab} ({p:.2f})" for lab, p in info["labels"]))
    if info.get("speech_ratio") is not None:
        t.add_row(
            "speech",
            f"{info['speech_ratio']:.0%} of the audio"
            + (f", language {info['speech_language']}" if info.get("speech_language") else ""),
        )
    if info.get("transcript"):
        t.add_row("transcript", _clip(info["transcript"]))
    if info.get("ocr_text"):
        t.add_row("text on screen", _clip(info["ocr_text"]))
    if info.get("audio"):
        a = info["audio"]
        t.add_row("sound", ", ".join(f"{k} {v:g}" for k, v in a.items()))
    if info.get("people"):
        t.add_row(
            "people",
            ", ".join(
                f"{p['name']} ({'/'.join(p['roles'])}, in {p['source']})" for p in info["people"]
            ),
        )
    if info.get("sentiment"):
        s = info["sentiment"]
        t.add_row("comments", f"{int(s['count'])}, sentiment {s['mean']:+.2f}")
    t.add_row("vectors", ", ".join(f"{m} {len(v)}" for m, v in sorted(r["vectors"].items())))
    console.print(Panel(t, title=f"item {r['item_id']}", expand=False))


def _clip(text: str, n: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
