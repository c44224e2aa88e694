"""Reports: Markdown and a self-contained HTML page with plots (matplotlib).

Plots: each metric at its K with bootstrap intervals, metric against K, metric by user group,
and the training popularity of the recommended items.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from avrec.eval.experiment import ExperimentResult

__all__ = ["markdown_report", "write_report"]


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 100 else f"{v:,.1f}"
    return str(v)


def _main_table(res: ExperimentResult) -> tuple[list[str], list[list[str]]]:
    """One row per metric, one column per model."""
    models = res.table["model"].unique(maintain_order=True).to_list()
    header = ["metric", *models]
    rows = []
    for metric in res.table["metric"].unique(maintain_order=True).to_list():
        sub = res.table.filter(pl.col("metric") == metric)
        cells = [metric]
        for model in models:
            r = sub.filter(pl.col("model") == model)
            if r.height == 0:
                cells.append("-")
                continue
            rec = r.row(0, named=True)
            text = _fmt(rec["value"])
            if rec.get("ci_low") is not None:
                text += f" [{_fmt(rec['ci_low'])}, {_fmt(rec['ci_high'])}]"
            if rec.get("is_best"):
                text = f"**{text}**"
            elif rec.get("significant_vs_best") is False:
                text += " (ns)"
            cells.append(text)
        rows.append(cells)
    return header, rows


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def markdown_report(res: ExperimentResult, images: dict[str, str] | None = None) -> str:
    """The report as Markdown; ``images`` maps plot names to relative paths."""
    p = res.meta.get("protocol", {})
    ds = res.meta.get("dataset", {})
    lines = [
        f"# Evaluation: {ds.get('name', '')}",
        "",
        f"- protocol: {p.get('ranking')}, stage `{p.get('stage')}`, history at test: "
        f"{p.get('history_at_test')}; ties: {p.get('ties')}",
        f"- split: `{json.dumps(p.get('split', {}))}`",
        f"- dataset: {ds.get('users', '?'):,} users, {ds.get('items', '?'):,} items, "
        f"{ds.get('events', '?'):,} events",
        f"- seed {res.meta.get('seed')}, {res.meta.get('n_bootstrap')} bootstrap resamples; "
        f"versions: `{json.dumps(res.meta.get('versions', {}))}`",
        "",
        "Value [95% bootstrap interval over users]. Best per metric in **bold** (lowest for "
        "arp); (ns) = not significantly different from the best (paired bootstrap, p >= 0.05).",
        "",
        _md_table(*_main_table(res)),
        "",
        "## Models",
        "",
        _md_table(
            ["model", "config", "fit s", "eval s"],
            [
                [n, f"`{json.dumps(m['config'])}`", _fmt(m["fit_seconds"]), _fmt(m["eval_seconds"])]
                for n, m in res.meta.get("models", {}).items()
            ],
        ),
    ]
    if res.comparisons.height:
        lines += [
            "",
            "## Paired tests against the best model",
            "",
            _md_table(
                [
                    "metric",
                    "best",
                    "model",
                    "diff",
                    "95% CI",
                    "p (bootstrap)",
                    "p (t)",
                    "p (Wilcoxon)",
                ],
                [
                    [
                        r["metric"],
                        r["best"],
                        r["model"],
                        _fmt(r["diff"]),
                        f"{_fmt(r['ci_low'])} .. {_fmt(r['ci_high'])}",
                        _fmt(r["p_value"]),
                        _fmt(r["p_ttest"]),
                        _fmt(r["p_wilcoxon"]),
                    ]
                    for r in res.comparisons.iter_rows(named=True)
                ],
            ),
        ]
    if res.by_user_group.height:
        main = _main_metric(res)
        g = res.by_user_group.filter(pl.col("metric") == main)
        groups = g["group"].unique(maintain_order=True).to_list()
        lines += [
            "",
            f"## {main} by user history length",
            "",
            _md_table(
                ["model", *[f"{x} ({_users(g, x)})" for x in groups]],
                [
                    [m, *[_fmt(_cell(g, m, x, "group")) for x in groups]]
                    for m in g["model"].unique(maintain_order=True).to_list()
                ],
            ),
        ]
    if res.by_item_bucket.height:
        main = _main_metric(res)
        b = res.by_item_bucket.filter(pl.col("metric") == main)
        buckets = b["bucket"].unique(maintain_order=True).to_list()
        lines += [
            "",
            f"## {main} by popularity of the target item",
            "",
            _md_table(
                ["model", *buckets],
                [
                    [m, *[_fmt(_cell(b, m, x, "bucket")) for x in buckets]]
                    for m in b["model"].unique(maintain_order=True).to_list()
                ],
            ),
        ]
    for name, path in (images or {}).items():
        lines += ["", f"![{name}]({path})"]
    return "\n".join(lines) + "\n"


def _users(g: pl.DataFrame, group: str) -> str:
    r = g.filter(pl.col("group") == group)
    return f"{int(r['users'][0]):,} users" if r.height else ""


def _cell(df: pl.DataFrame, model: str, key: str, col: str) -> float | None:
    r = df.filter((pl.col("model") == model) & (pl.col(col) == key))
    return float(r["value"][0]) if r.height else None


def _cell_of(rows: pl.DataFrame, metric: str, column: str) -> float:
    hit = rows.filter(pl.col("metric") == metric)
    return float(hit[column][0]) if hit.height else float("nan")


def _main_metric(res: ExperimentResult) -> str:
    names = res.table["metric"].to_list()
    for pref in ("ndcg@10", "ndcg@20", "hr@10"):
        if pref in names:
            return pref
    return next((n for n in names if n.startswith("ndcg")), names[0])


def _figures(res: ExperimentResult) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, bytes] = {}
    t = res.table
    models = t["model"].unique(maintain_order=True).to_list()

    def save(fig: Any, name: str) -> None:
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        out[name] = buf.getvalue()

    # 1. metric bars with intervals
    per_user = t.filter(pl.col("ci_low").is_not_null() & pl.col("k").is_not_null())
    metrics: list[str] = []
    ks = sorted(set(per_user["k"].to_list()))
    accuracy = ("hr@", "recall@", "precision@", "f1@", "ndcg@", "mrr@", "map@")
    if per_user.height and ks:
        k0 = 10 if 10 in ks else ks[0]
        sub = per_user.filter(
            (pl.col("k") == k0)
            & pl.any_horizontal([pl.col("metric").str.starts_with(a) for a in accuracy])
        )
        metrics = sub["metric"].unique(maintain_order=True).to_list()
    if per_user.height and ks and metrics:
        fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(metrics) * max(1, len(models)) / 2), 4))
        width = 0.8 / len(models)
        x = np.arange(len(metrics))
        for j, m in enumerate(models):
            r = sub.filter(pl.col("model") == m)
            cols = {c: [_cell_of(r, q, c) for q in metrics] for c in ("value", "ci_low", "ci_high")}
            vals, lo, hi = cols["value"], cols["ci_low"], cols["ci_high"]
            err = np.array([np.subtract(vals, lo), np.subtract(hi, vals)])
            ax.bar(x + j * width, vals, width, yerr=err, capsize=3, label=m)
        ax.set_xticks(x + width * (len(models) - 1) / 2, metrics, rotation=30, ha="right")
        ax.set_title(f"metrics at K={k0} (95% bootstrap intervals)")
        ax.legend()
        save(fig, "metrics")
    # 2. metric vs K
    main = _main_metric(res).split("@")[0]
    vs_k = t.filter(pl.col("metric").str.starts_with(main + "@"))
    if len(set(vs_k["k"].to_list())) > 1:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for m in models:
            r = vs_k.filter(pl.col("model") == m).sort("k")
            ax.plot(r["k"].to_list(), r["value"].to_list(), marker="o", label=m)
        ax.set_xlabel("K")
        ax.set_ylabel(main)
        ax.set_title(f"{main} against K")
        ax.legend()
        save(fig, "metric_vs_k")
    # 3. by user group
    g = (
        res.by_user_group.filter(pl.col("metric") == _main_metric(res))
        if res.by_user_group.height
        else res.by_user_group
    )
    if g.height:
        groups = g["group"].unique(maintain_order=True).to_list()
        fig, ax = plt.subplots(figsize=(6, 3.5))
        width = 0.8 / len(models)
        x = np.arange(len(groups))
        for j, m in enumerate(models):
            vals = [_cell(g, m, q, "group") or 0.0 for q in groups]
            ax.bar(x + j * width, vals, width, label=m)
        ax.set_xticks(x + width * (len(models) - 1) / 2, groups)
        ax.set_xlabel("user history length")
        ax.set_title(f"{_main_metric(res)} by user group")
        ax.legend()
        save(fig, "by_user_group")
    # 4. popularity of recommended items
    exposures = {m: ev.exposure for m, ev in res.evals.items() if ev.exposure is not None}
    item_users = res.item_users
    if exposures and item_users is not None:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for m, expo in exposures.items():
            pops = np.repeat(item_users, expo.astype(np.int64))
            if len(pops):
                ax.hist(np.log10(pops + 1), bins=40, histtype="step", label=m, density=True)
        ax.set_xlabel("log10(1 + training users of the recommended item)")
        ax.set_ylabel("share of recommendations")
        ax.set_title("popularity of recommended items")
        ax.legend()
        save(fig, "popularity")
    return out


def write_report(res: ExperimentResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.md`` (with PNG plots beside it), ``report.html`` (self-contained) and
    ``results.json`` into ``out_dir``. Returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figs = _figures(res)
    images = {}
    for name, data in figs.items():
        (out / f"{name}.png").write_bytes(data)
        images[name] = f"{name}.png"
    md = markdown_report(res, images)
    (out / "report.md").write_text(md, encoding="utf-8")
    (out / "report.html").write_text(_html(md, figs), encoding="utf-8")
    res.to_json(out / "results.json")
    return {
        "markdown": out / "report.md",
        "html": out / "report.html",
        "json": out / "results.json",
    }


def _html(md: str, figs: dict[str, bytes]) -> str:
    """A small Markdown-to-HTML for our own report (tables, headings, lists, images)."""
    body: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            body.append("<ul>" + "".join(items) + "</ul>")
            continue
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                if not lines[i].startswith("|---"):
                    rows.append([c.strip() for c in lines[i].strip("|").split("|")])
                i += 1
            head = "".join(f"<th>{_inline(c)}</th>" for c in rows[0])
            rest = "".join(
                "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows[1:]
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rest}</tbody></table>")
            continue
        elif line.startswith("!["):
            name = line[2 : line.index("]")]
            data = base64.b64encode(figs.get(name, b"")).decode()
            body.append(
                f'<figure><img alt="{html.escape(name)}" '
                f'src="data:image/png;base64,{data}"></figure>'
            )
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
        i += 1
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;"
        "padding:0 1em}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid "
        "#ccc;padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:"
        "left}code{font-size:85%}img{max-width:100%}"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>avrec evaluation</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )


def _inline(text: str) -> str:
    import re

    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)
