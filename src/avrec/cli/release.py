"""``avrec release``: popular and trending lists, and the workspace's statistics, released
with user-level differential privacy (:mod:`avrec.privacy.release`), spent from the day's
budget."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from avrec.cli._common import console, state

app = typer.Typer(
    help="Differentially private releases: what the most people played.", no_args_is_help=True
)


def _release(ctx: typer.Context, k: int, epsilon: float | None, days: float | None,
             as_json: bool) -> None:  # fmt: skip
    from avrec.privacy.release import release_popular

    ws = state(ctx).open_workspace()
    cfg = ws.config.privacy
    try:
        rel = release_popular(
            ws.store, k=k, epsilon=cfg.release_epsilon if epsilon is None else epsilon,
            items_per_user=cfg.release_items_per_user, budget=cfg.release_budget_per_day,
            window_days=days, mechanism=cfg.release_mechanism, delta=cfg.release_delta,
        )  # fmt: skip
    finally:
        ws.close()
    if as_json:
        console.print_json(json.dumps(rel.to_dict(), ensure_ascii=False))
        return
    how = (
        "noisy top-k, every user's items counted once"
        if rel.counts is None
        else f"noisy counts, each user counted for at most {rel.items_per_user} items"
    )
    t = Table(
        title=f"{rel.name}: epsilon {rel.epsilon:g} (delta {rel.delta:g}), {how}; "
        f"{rel.budget_left:g} of today's budget left"
    )
    t.add_column("#", justify="right")
    t.add_column("item")
    if rel.counts is not None:
        t.add_column("users (noisy)", justify="right")
    for i, item in enumerate(rel.items, start=1):
        t.add_row(str(i), item, *([] if rel.counts is None else [f"{rel.counts[i - 1]:,}"]))
    console.print(t)


@app.command("popular")
def popular(
    ctx: typer.Context,
    k: int = typer.Option(50, min=1, max=1000, help="items released"),
    epsilon: float | None = typer.Option(None, min=0.0, help="default: [privacy] release_epsilon"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The k items the most users played, over all time, with user-level DP ([privacy]
    release_mechanism: top_k, (epsilon, release_delta); counts, pure epsilon); kept in
    the store, where `GET /v1/releases/popular` serves it without spending more."""
    _release(ctx, k, epsilon, None, as_json)


@app.command("trending")
def trending(
    ctx: typer.Context,
    k: int = typer.Option(50, min=1, max=1000, help="items released"),
    days: float = typer.Option(1.0, min=0.0, help="the window: the last this many days"),
    epsilon: float | None = typer.Option(None, min=0.0, help="default: [privacy] release_epsilon"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The k items the most users played in the last `days`, with user-level DP (as popular);
    `GET /v1/releases/trending` serves it."""
    _release(ctx, k, epsilon, days, as_json)


@app.command("stats")
def stats(
    ctx: typer.Context,
    epsilon: float | None = typer.Option(None, min=0.0, help="default: [privacy] release_epsilon"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """`avrec stats`'s figures about people (users, active users, events, events by type,
    user-item pairs, items with events) with user-level epsilon-DP, each user bounded to
    [privacy] release_events_per_user events; `GET /v1/releases/stats` serves it."""
    from avrec.privacy.release import release_stats

    ws = state(ctx).open_workspace()
    cfg = ws.config.privacy
    try:
        rel = release_stats(
            ws.store, sorted(ws.config.weighting.rules),
            epsilon=cfg.release_epsilon if epsilon is None else epsilon,
            events_per_user=cfg.release_events_per_user, budget=cfg.release_budget_per_day,
        )  # fmt: skip
    finally:
        ws.close()
    if as_json:
        console.print_json(json.dumps(rel, ensure_ascii=False))
        return
    p = rel["privacy"]
    t = Table("what", "value (noisy)", title=f"workspace statistics: epsilon {p['epsilon']:g} "
              f"(delta 0), each user bounded to {p['events_per_user']} events; "
              f"{rel['budget_left']:g} of today's budget left")  # fmt: skip
    for k in ("users", "active_users", "events", "pairs", "active_items", "items"):
        t.add_row(k.replace("_", " "), f"{rel[k]:,}")
    for k, v in rel["events_by_type"].items():
        t.add_row(f"events: {k}", f"{v:,}")
    t.add_row("events per active user (mean)", f"{rel['events_per_user']['mean']:.1f}")
    console.print(t)
