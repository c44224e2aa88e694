"""``avrec anomalies``: users whose activity looks automated."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from avrec.cli._common import console, state
from avrec.ingest.anomaly import FEATURES, detect_anomalies


def anomalies(
    ctx: typer.Context,
    contamination: float = typer.Option(
        0.01, min=0.0001, max=0.5, help="share of users expected to be automated"
    ),
    top: int = typer.Option(20, min=1, help="rows to show"),
    output: Path | None = typer.Option(None, help="write the full report as CSV"),
    exclude: bool = typer.Option(
        False, "--exclude", help="mark the flagged users as excluded from training"
    ),
) -> None:
    """Score users with an IsolationForest on activity features; report, optionally exclude."""
    ws = state(ctx).open_workspace()
    try:
        report = detect_anomalies(ws.store.events(), contamination)
        flagged = report.flagged
        table = Table(
            "user",
            "score",
            *FEATURES,
            title=f"{len(flagged):,} users flagged of {report.table.height:,}",
        )
        for row in report.table.head(top).iter_rows(named=True):
            table.add_row(
                row["user_id"], f"{row['score']:.3f}", *(f"{row[f]:.3g}" for f in FEATURES)
            )
        console.print(table)
        if output:
            report.table.write_csv(output)
            console.print(f"report written to {output}")
        if exclude and flagged:
            n = ws.store.set_users_excluded(flagged, True, "anomalous activity (IsolationForest)")
            console.print(f"{n:,} users excluded from training")
    finally:
        ws.close()
