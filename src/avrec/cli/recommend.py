"""``avrec recommend`` and ``avrec similar``: answers from the active bundle of the workspace."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.table import Table

from avrec.cli._common import console, state


def _load(ctx: typer.Context, name: str) -> tuple[Any, Any]:
    from avrec.models import load_model

    ws = state(ctx).open_workspace()
    try:
        rec = ws.store.active_model(name)
    except Exception:
        ws.close()
        raise
    return load_model(rec.path), ws


def _split(value: str | None) -> list[str] | None:
    out = [x.strip() for x in (value or "").split(",") if x.strip()]
    return out or None


def _filter(category: str | None, language: str | None, lo: float | None, hi: float | None):  # noqa: ANN202
    """The CLI's filter options as an :class:`~avrec.pipeline.filters.ItemFilter`."""
    from avrec.pipeline.filters import ItemFilter

    return ItemFilter(
        categories=_split(category), languages=_split(language), min_duration=lo, max_duration=hi
    )


def _titles(ws: Any, ids: list[str]) -> dict[str, str]:
    items = ws.store.items()
    rows = items.filter(items["item_id"].is_in(ids)).select("item_id", "title").iter_rows()
    return {i: t or "" for i, t in rows}


def recommend(
    ctx: typer.Context,
    user: list[str] = typer.Option(..., "--user", "-u", help="user id (repeat for several)"),
    k: int = typer.Option(10, min=1),
    offset: int = typer.Option(0, min=0, help="page through the same list"),
    exclude: str | None = typer.Option(None, help="item ids already shown, comma-separated"),
    played: str | None = typer.Option(
        None, help="this session's plays (item ids, comma-separated, in order)"
    ),
    explain: bool = typer.Option(False, "--explain", help="say why, for every item"),
    lang: str = typer.Option("en", help="explanation language: en or zh"),
    diversity: float = typer.Option(0.0, min=0.0, max=1.0, help="MMR trade-off (0: ranker)"),
    category: str | None = typer.Option(
        None, help="only items with one of these categories or tags (comma-separated)"
    ),
    language: str | None = typer.Option(None, help="only these languages (comma-separated)"),
    min_duration: float | None = typer.Option(None, min=0, help="seconds"),
    max_duration: float | None = typer.Option(None, min=0, help="seconds"),
    model: str = typer.Option("pipeline", help="registered model name"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Recommendations for users from the workspace's active bundle (unknown users get the
    fallback, never an error)."""
    from avrec.errors import ConfigError
    from avrec.pipeline.pipeline import Pipeline

    flt = _filter(category, language, min_duration, max_duration)
    m, ws = _load(ctx, model)
    try:
        if not flt.empty and not isinstance(m, Pipeline):
            raise ConfigError("--category/--language/--*-duration need a pipeline bundle")
        ex = [x.strip() for x in (exclude or "").split(",") if x.strip()]
        session = [x.strip() for x in (played or "").split(",") if x.strip()]
        stored = [ws.stored_user(u) for u in user]  # pseudonyms, when they are on
        if isinstance(m, Pipeline):
            lists = m.recommend_explained(
                stored,
                k=k,
                offset=offset,
                exclude=ex,
                diversity=diversity,
                lang=lang,
                session_items=[session] * len(user) if session else None,
                filters=flt,
            )
        else:
            lists = m.recommend(stored, k=k + offset, exclude=ex or None)
            for lst in lists:
                lst.ids, lst.scores = lst.ids[offset:], lst.scores[offset:]
        titles = _titles(ws, [i for lst in lists for i in lst.ids])
        if as_json:
            out = []
            for u, lst in zip(user, lists, strict=True):
                rows = []
                for j, (item, score) in enumerate(zip(lst.ids, lst.scores.tolist(), strict=True)):
                    row: dict[str, Any] = {
                        "item_id": item,
                        "title": titles.get(item, ""),
                        "score": round(score, 6),
                    }
                    if "sources" in lst.fields:
                        row["sources"] = lst.fields["sources"][j]
                    if explain and "explanation" in lst.fields:
                        row["explanation"] = lst.fields["explanation"][j]
                    rows.append(row)
                out.append({"user_id": u, "items": rows})
            console.print_json(json.dumps(out, ensure_ascii=False))
            return
        for u, lst in zip(user, lists, strict=True):
            t = Table(title=f"for {u}")
            for col in ("#", "item", "title", "score", "sources", *(["why"] if explain else [])):
                t.add_column(col)
            for j, (item, score) in enumerate(zip(lst.ids, lst.scores.tolist(), strict=True)):
                cells = [
                    str(offset + j + 1),
                    item,
                    titles.get(item, ""),
                    f"{score:.3f}",
                    ", ".join(lst.fields.get("sources", [[]] * len(lst))[j]),
                ]
                if explain:
                    exp = lst.fields.get("explanation")
                    cells.append(exp[j]["text"] if exp else "")
                t.add_row(*cells)
            console.print(t)
    finally:
        ws.close()


def playlist(
    ctx: typer.Context,
    seed: str | None = typer.Option(None, "--seed", help="the item the playlist starts with"),
    user: str | None = typer.Option(None, "--user", "-u", help="whose taste (and history)"),
    mood: str | None = typer.Option(
        None, "--mood", help='a text, e.g. "relaxing piano for studying" (needs avrec analyze)'
    ),
    n: int = typer.Option(20, "--n", min=1, help="length"),
    flow: float = typer.Option(
        0.3, min=0.0, max=1.0, help="weight of similarity to the previous item"
    ),
    max_per_creator: int = typer.Option(0, min=0, help="at most this many per person (0: any)"),
    category: str | None = typer.Option(None, help="only these categories or tags"),
    language: str | None = typer.Option(None, help="only these languages"),
    min_duration: float | None = typer.Option(None, min=0, help="seconds"),
    max_duration: float | None = typer.Option(None, min=0, help="seconds"),
    model: str = typer.Option("pipeline", help="registered pipeline name"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """An ordered playlist (autoplay) from a seed item, a user and/or a mood, flowing from each
    item to the next, never repeating."""
    from avrec.errors import ConfigError
    from avrec.pipeline.pipeline import Pipeline

    flt = _filter(category, language, min_duration, max_duration)
    m, ws = _load(ctx, model)
    try:
        if not isinstance(m, Pipeline):
            raise ConfigError(f"{model!r} is not a pipeline bundle: playlists need one")
        lst = m.playlist(
            seed=seed,
            user=ws.stored_user(user) if user else user,
            n=n,
            flow=flow,
            filters=flt,
            max_per_group=max_per_creator,
            mood=mood,
        )
        titles = _titles(ws, lst.ids)
        if as_json:
            rows = [
                {
                    "position": j + 1,
                    "item_id": item,
                    "title": titles.get(item, ""),
                    "score": round(score, 6),
                    "after": lst.fields["after"][j],
                    "sources": lst.fields["sources"][j],
                }
                for j, (item, score) in enumerate(zip(lst.ids, lst.scores.tolist(), strict=True))
            ]
            console.print_json(json.dumps(rows, ensure_ascii=False))
            return
        start = seed or (f'"{mood}"' if mood else "the top pick")
        t = Table(title=f"playlist from {start}{f' for {user}' if user else ''}")
        for col in ("#", "item", "title", "score", "sources"):
            t.add_column(col)
        for j, (item, score) in enumerate(zip(lst.ids, lst.scores.tolist(), strict=True)):
            t.add_row(
                str(j + 1),
                item,
                titles.get(item, ""),
                f"{score:.3f}",
                ", ".join(lst.fields["sources"][j]),
            )
        console.print(t)
    finally:
        ws.close()


def similar(
    ctx: typer.Context,
    item: list[str] = typer.Option(..., "--item", "-i", help="item id (repeat for several)"),
    k: int = typer.Option(10, min=1),
    model: str = typer.Option("pipeline", help="registered model name"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Items similar to an item, from the workspace's active bundle."""
    m, ws = _load(ctx, model)
    try:
        lists = m.similar_items(item, k=k)
        titles = _titles(ws, [i for lst in lists for i in lst.ids] + list(item))
        if as_json:
            out = [
                {
                    "item_id": it,
                    "similar": [
                        {"item_id": i, "title": titles.get(i, ""), "score": round(s, 6)}
                        for i, s in zip(lst.ids, lst.scores.tolist(), strict=True)
                    ],
                }
                for it, lst in zip(item, lists, strict=True)
            ]
            console.print_json(json.dumps(out, ensure_ascii=False))
            return
        for it, lst in zip(item, lists, strict=True):
            t = Table(title=f"like {it} {titles.get(it, '')}")
            for col in ("#", "item", "title", "score"):
                t.add_column(col)
            for j, (i, s) in enumerate(zip(lst.ids, lst.scores.tolist(), strict=True)):
                t.add_row(str(j + 1), i, titles.get(i, ""), f"{s:.3f}")
            console.print(t)
    finally:
        ws.close()


def precompute(
    ctx: typer.Context,
    k: int = typer.Option(20, min=1, max=200, help="items kept per user (two pages of 10)"),
    lang: str = typer.Option("en", help="explanation language: en or zh"),
    batch: int = typer.Option(256, min=1, help="users per batch"),
    limit: int | None = typer.Option(None, min=1, help="only the first N users"),
    engine: str = typer.Option(None, "--engine", help="local or ray (default: [compute] engine)"),
    address: str | None = typer.Option(
        None, "--address", help="the Ray cluster to join (default: RAY_ADDRESS)"
    ),
    workers: int | None = typer.Option(None, min=1, help="Ray actors (default: one per CPU)"),
    model: str = typer.Option("pipeline", help="registered model name"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Every known user's page ahead of time, kept in the store: every serving node answers
    those users from it until their next event (the answer says `precomputed`)."""
    import os

    from avrec.cli._common import count_progress
    from avrec.errors import ConfigError
    from avrec.pipeline.pipeline import Pipeline
    from avrec.pipeline.precompute import precompute as run

    if lang not in ("en", "zh"):
        raise ConfigError(f"--lang must be en or zh, not {lang!r}")
    ws = state(ctx).open_workspace()
    try:
        rec = ws.store.active_model(model)
        from avrec.models import load_model

        m = load_model(rec.path)
        if not isinstance(m, Pipeline):
            raise ConfigError("precompute needs a pipeline bundle (avrec train)")
        compute = ws.config.compute
        eng = engine or compute.engine
        if eng not in ("local", "ray"):
            raise ConfigError(f"unknown engine {eng!r}: local or ray")
        users = list(m.users.ids)[:limit] if limit else None
        total = len(users) if users is not None else len(m.users)
        with count_progress("pages", total) as advance:
            seen = {"n": 0}

            def progress(done: int, _total: int) -> None:
                advance(done - seen["n"])
                seen["n"] = done

            report = run(
                m, ws.store, f"{rec.name}-v{rec.version}", k=k, lang=lang, users=users,
                batch=batch, progress=progress, engine=eng, bundle_path=str(rec.path),
                address=address or os.environ.get("RAY_ADDRESS") or compute.address,
                workers=workers,
            )  # fmt: skip
    finally:
        ws.close()
    if as_json:
        console.print_json(json.dumps(report.to_dict()))
    else:
        rate = report.pages / report.seconds if report.seconds else 0.0
        console.print(
            f"{report.pages:,} pages of {k} for {rec.name}-v{rec.version} in "
            f"{report.seconds:.1f} s ({rate:,.0f} users/s, {report.engine})"
        )
