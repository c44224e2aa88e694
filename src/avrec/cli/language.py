"""``avrec search`` and ``avrec ask``: the catalogue searched, and recommendations asked for in
words, from the workspace's active pipeline bundle."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.table import Table

from avrec.cli._common import console, err_console
from avrec.cli.recommend import _filter, _load


def _pipeline(ctx: typer.Context) -> tuple[Any, Any]:
    from avrec.errors import ConfigError
    from avrec.pipeline.pipeline import Pipeline

    m, ws = _load(ctx, "pipeline")
    if not isinstance(m, Pipeline) or getattr(m, "search", None) is None:
        ws.close()
        raise ConfigError("the active bundle has no search index: run avrec train again")
    return m, ws


def _say_truncated(truncated: bool) -> None:
    if truncated:
        from avrec.language import MAX_QUERY_CHARS

        err_console.print(
            f"[yellow]note: the query is longer than {MAX_QUERY_CHARS:,} characters; "
            "only its beginning is read[/yellow]"
        )


def search(
    ctx: typer.Context,
    query: str = typer.Argument(..., help='what to look for, e.g. "cat" or "toy stroy"'),
    k: int = typer.Option(10, min=1),
    mode: str = typer.Option("hybrid", help="hybrid, keyword or semantic"),
    category: str | None = typer.Option(
        None, help="only these categories or tags (comma-separated)"
    ),
    language: str | None = typer.Option(None, help="only these languages (comma-separated)"),
    min_duration: float | None = typer.Option(None, min=0, help="seconds"),
    max_duration: float | None = typer.Option(None, min=0, help="seconds"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Search the catalogue: BM25 keywords (typos forgiven) and e5 meaning, fused."""
    from avrec.language import clip_query

    query, truncated = clip_query(query)
    _say_truncated(truncated)
    m, ws = _pipeline(ctx)
    try:
        flt = _filter(category, language, min_duration, max_duration)
        allowed = m.facts.mask(flt, m.features.timeline.now)
        hits = m.search.search(query, k=k, allowed=allowed, mode=mode)
        ids = m.items.lookup([h.item for h in hits])
        rows = [
            {
                "item_id": i,
                "title": m.titles[h.item] or "",
                "score": round(h.score, 6),
                "found_by": sorted(h.ranks, key=h.ranks.get),
                "matched": h.matched,
            }
            for i, h in zip(ids, hits, strict=True)
        ]
        if as_json:
            out = {"query": query, "query_truncated": truncated, "items": rows}
            console.print_json(json.dumps(out, ensure_ascii=False))
            return
        t = Table(title=f"search: {query}")
        for col in ("#", "item", "title", "found by", "matched"):
            t.add_column(col)
        for j, r in enumerate(rows, start=1):
            matched = "; ".join(f"{f}: {', '.join(w)}" for f, w in r["matched"].items())
            t.add_row(str(j), r["item_id"], r["title"], ", ".join(r["found_by"]), matched)
        console.print(t if rows else "nothing found")
    finally:
        ws.close()


def ask(
    ctx: typer.Context,
    query: str = typer.Argument(..., help='e.g. "我喜欢节奏感强的电子音乐" or "a funny cat video"'),
    user: str | None = typer.Option(None, "--user", "-u", help="personalise for this user"),
    k: int = typer.Option(10, min=1),
    weight: float | None = typer.Option(
        None, min=0.0, max=1.0, help="how much the user's taste counts (default 0.3)"
    ),
    lang: str | None = typer.Option(None, help="explanation language (default: the query's)"),
    conversation: str | None = typer.Option(
        None, "--conversation", "-c", help="continue this conversation (kept for an hour)"
    ),
    llm_backend: str | None = typer.Option(
        None, "--llm", help="none, openai or llama-cpp (default: [llm] in avrec.toml)"
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Recommendations for a request in words, with the constraints it states (duration,
    language, years, genres, "not X", "like <title>") applied; with --conversation, each
    request refines the last ("more like the second one", "shorter", "not that one")."""
    from avrec.language.ask import Asker
    from avrec.language.conversation import Conversation

    m, ws = _pipeline(ctx)
    try:
        from avrec.errors import ConfigError
        from avrec.language.llm import LanguageModel

        cfg = ws.config.llm
        if llm_backend is not None:
            if llm_backend not in ("none", "openai", "llama-cpp"):
                raise ConfigError(f"--llm must be none, openai or llama-cpp, not {llm_backend!r}")
            cfg = cfg.model_copy(update={"backend": llm_backend})
        try:
            llm = LanguageModel.from_config(cfg)
        except ConfigError as exc:  # no LLM installed: the rules answer alone
            err_console.print(f"[yellow]no LLM ({exc}); the rules read the request[/yellow]")
            llm = None
        kw: dict[str, Any] = {"llm": llm, "llm_explain": 3 if llm is not None else 0}
        if weight is not None:
            kw["personal_weight"] = weight
        asker = Asker(m, **kw)
        user = ws.stored_user(user) if user else user
        words = ws.store.user_texts(user) if user else []  # their searches and comments
        if conversation:
            res = Conversation(asker, ws.store).turn(
                conversation, query, user=user, k=k, lang=lang, user_words=words
            )
        else:
            res = asker.ask(query, user=user, k=k, lang=lang, user_words=words)
        _say_truncated(res.query_truncated)
        lst = res.items
        rows = []
        for j, (item, score) in enumerate(zip(lst.ids, lst.scores.tolist(), strict=True)):
            rows.append(
                {
                    "item_id": item,
                    "title": m.titles[m.items.index([item])[0]] or "",
                    "score": round(score, 6),
                    "sources": lst.fields["sources"][j],
                    "explanation": lst.fields["explanation"][j],
                }
            )
        constraints = res.constraints.model_dump(exclude_defaults=True)
        check = llm.grounding_check() if llm is not None else None
        if as_json:
            out: dict[str, Any] = {
                "query": res.query,
                "query_truncated": res.query_truncated,
                "text": res.parsed.text,
                "constraints": constraints,
            }
            if llm is not None:
                out["llm"] = {
                    "backend": llm.backend.name,
                    "failures": llm.failures,
                    "grounding_check": check.to_dict(),
                    "sentences": res.llm_sentences,
                }
            console.print_json(json.dumps({**out, "items": rows}, ensure_ascii=False))
            return
        said = ", ".join(f"{k}={v}" for k, v in constraints.items()) or "none"
        if llm is not None:
            used = (
                "answered" if llm.failures == 0 else f"{llm.failures} call(s) gave nothing usable"
            )
            console.print(f"LLM ({llm.backend.name}): {used}")
            n = res.llm_sentences
            if check.passed:
                console.print(
                    f"LLM sentences: {n['shown']} shown, {n['rejected']} rejected as not "
                    f"grounded in the item's facts (start-up check: {check})"
                )
            else:
                console.print(
                    f"LLM sentences: none written: the model failed the start-up grounding "
                    f"check ({check}); the explanations are the templates'"
                )
        console.print(
            f"searching for: {res.parsed.text or '(constraints only)'}; constraints: {said}"
        )
        t = Table(title=f"for {user or 'anyone'}: {res.query}")
        for col in ("#", "item", "title", "score", "why"):
            t.add_column(col)
        for j, r in enumerate(rows, start=1):
            t.add_row(
                str(j), r["item_id"], r["title"], f"{r['score']:.3f}", r["explanation"]["text"]
            )
        console.print(t if rows else "nothing matches")
    finally:
        ws.close()


def graph(
    ctx: typer.Context,
    item: str = typer.Option(..., "--item", "-i", help="the item whose neighbourhood to show"),
    user: str | None = typer.Option(
        None, "--user", "-u", help="also the paths from this user's items to the item"
    ),
    k: int = typer.Option(10, min=1, help="neighbours to list"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """An item's people (with roles), genres, tags, language and series, the items nearest
    through them, and (with --user) the paths from what the user played to it."""
    from avrec.errors import ConfigError

    m, ws = _pipeline(ctx)
    try:
        g = getattr(m, "graph", None)
        if g is None:
            raise ConfigError("the active bundle has no knowledge graph: run avrec train again")
        idx = int(m.items.index([item])[0])
        hood = g.neighbourhood(idx, k)
        ids = m.items.lookup([n["item"] for n in hood["neighbours"]])
        for n, i in zip(hood["neighbours"], ids, strict=True):
            n["item"] = i
            n["title"] = m.titles[m.items.index([i])[0]] or ""
        out: dict[str, Any] = {"item_id": item, "title": m.titles[idx] or "", **hood}
        if user is not None:
            hist = m.user_batch([ws.stored_user(user)]).sequence_list()[0]
            out["paths"] = [
                {
                    "from": m.items.lookup([p.source])[0],
                    "from_title": m.titles[p.source] or "",
                    "via": g.describe(p),
                    "weight": round(p.weight, 4),
                }
                for p in g.paths(hist, idx)
            ]
        if as_json:
            console.print_json(json.dumps(out, ensure_ascii=False))
            return
        console.print(f"[bold]{item}[/bold] {out['title']}")
        t = Table(title="entities")
        for col in ("type", "name", "role", "weight", "items"):
            t.add_column(col)
        for e in hood["entities"]:
            t.add_row(e["type"], e["name"], e["role"], f"{e['weight']:.2f}", str(e["items"]))
        console.print(t)
        t = Table(title="nearest through them")
        for col in ("item", "title", "score", "via"):
            t.add_column(col)
        for n in hood["neighbours"]:
            t.add_row(n["item"], n["title"], f"{n['score']:.2f}", ", ".join(n["via"][:3]))
        console.print(t)
        for p in out.get("paths", []):
            console.print(f"{p['from']} {p['from_title']} -> {p['via']} -> {item}")
    finally:
        ws.close()
