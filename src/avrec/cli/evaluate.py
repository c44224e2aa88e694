"""``avrec evaluate``: models x split x metrics -> table, JSON and report."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import typer
from rich.table import Table

from avrec.cli._common import console, count_progress, state
from avrec.errors import ConfigError


def _list_lengths(value: str | None) -> str | None:
    """``--k``: comma-separated positive integers (a usage error otherwise)."""
    if value is None:
        return None
    for part in value.split(","):
        try:
            n = int(part)
        except ValueError:
            n = 0
        if n < 1:
            raise typer.BadParameter(f"{part.strip()!r} is not a positive whole number")
    return value


def evaluate(
    ctx: typer.Context,
    config: Path | None = typer.Option(None, "--config", help="experiment TOML file"),
    dataset: str | None = typer.Option(None, help="public dataset (default: the workspace)"),
    split: str | None = typer.Option(
        None, help="loo | fixed | temporal | random | cold-items | cold-users"
    ),
    split_file: Path | None = typer.Option(None, help="user_id, valid_item, test_item TSV"),
    order: str = typer.Option("time", help="loo order: time or sequence"),
    models: str | None = typer.Option(None, help="comma-separated model names"),
    pipeline: Path | None = typer.Option(
        None,
        "--pipeline",
        help="a pipeline file: evaluate the pipeline against each of its model sources alone",
    ),
    k: str | None = typer.Option(
        None, "--k", callback=_list_lengths, help="list lengths, e.g. 10,20"
    ),
    metrics: str | None = typer.Option(None, help="e.g. hr,ndcg,mrr,auc,coverage"),
    sampled: int | None = typer.Option(
        None, min=1, help="rank against N sampled negatives (labelled)"
    ),
    include_seen: bool = typer.Option(
        False, "--include-seen", help="rank the user's history items too (default: left out)"
    ),
    bootstrap: int | None = typer.Option(None, min=0, help="bootstrap resamples (default 1000)"),
    seed: int | None = typer.Option(None),
    output: Path | None = typer.Option(None, help="write results as JSON"),
    report: Path | None = typer.Option(None, help="write report.md/.html and plots here"),
) -> None:
    """Fit models on a split and report full-ranking metrics with confidence intervals."""
    # imported here so that `avrec --help` and the other verbs start fast
    from avrec.data.weighting import EventWeighting
    from avrec.eval.config import ExperimentConfig, MetricsSpec, build_models, build_split
    from avrec.eval.experiment import Experiment

    cfg = ExperimentConfig.load(config) if config else ExperimentConfig()
    if dataset:
        cfg.dataset = dataset
    if split_file:
        cfg.split = {"kind": "fixed", "file": str(split_file.resolve())}
    elif split:
        cfg.split = {"kind": split, **({"order": order} if split == "loo" else {})}
    if models:
        cfg.models = [{"name": m.strip()} for m in models.split(",") if m.strip()]
    if k or metrics:
        cfg.metrics = MetricsSpec(
            names=[m.strip() for m in metrics.split(",")] if metrics else cfg.metrics.names,
            k=[int(x) for x in k.split(",")] if k else cfg.metrics.k,  # checked by the callback
        )
    if sampled is not None:
        cfg.sampled = sampled
    if include_seen:
        cfg.exclude_history = False
    if bootstrap is not None:
        cfg.n_bootstrap = bootstrap
    if seed is not None:
        cfg.seed = seed
    st = state(ctx)
    if cfg.dataset:
        from avrec.data.loaders import load_dataset

        data = load_dataset(cfg.dataset, settings=st.settings())
        ws = None
    else:
        from avrec.data.dataset import Dataset

        ws = st.open_workspace()
        try:
            data = Dataset.from_store(ws.store, EventWeighting.binary())
        finally:
            ws.close()
        if data.n_events == 0:
            raise ConfigError("the workspace has no events to evaluate on; ingest some first")
    if cfg.stage not in ("valid", "test"):
        raise ConfigError(f"stage must be valid or test, got {cfg.stage!r}")
    model_objs = build_models(cfg.models) if (models or not pipeline) else {}
    if pipeline:
        model_objs.update(_pipeline_models(pipeline, data, ws))
    with count_progress("fit + evaluate", len(model_objs)) as advance:
        exp = Experiment(
            build_split(cfg),
            model_objs,
            cfg.metrics.names,
            cfg.metrics.k,
            stage=cfg.stage,
            sampled=cfg.sampled,  # type: ignore[arg-type]
            exclude_history=cfg.exclude_history,
            n_bootstrap=cfg.n_bootstrap,
            seed=cfg.seed,
            progress=lambda name: advance(1),
        )
        res = exp.run(data)
    res.meta["experiment"] = cfg.model_dump(mode="json")
    _print(res)
    out = output or (cfg.resolve(cfg.output) if cfg.output else None)
    if out:
        res.to_json(out)
        console.print(f"results written to {out}")
    rep = report or (cfg.resolve(cfg.report) if cfg.report else None)
    if rep:
        from avrec.eval.report import write_report

        paths = write_report(res, rep)
        console.print(f"report written to {paths['html']} and {paths['markdown']}")


def _pipeline_models(path: Path, data, ws) -> dict:  # noqa: ANN001
    """The pipeline of ``path`` and, beside it, each of its model sources as a model."""
    from avrec.cli.train import _attach_content
    from avrec.models import create_model
    from avrec.pipeline.pipeline import Pipeline, PipelineConfig

    cfg = PipelineConfig.from_toml(path)
    if _attach_content(data, ws) and cfg.feature in data.item_features:
        cfg = cfg.with_content_sources()
    out = {}
    for sc in cfg.sources:
        if sc.kind == "model":
            kind = sc.params.get("model", "ease")  # ModelSource's default
            params = {k: v for k, v in sc.params.items() if k != "model"}
            label = sc.name or kind
            out[f"{label} (source)" if label == "pipeline" else label] = create_model(
                kind, **params
            )
    out["pipeline"] = Pipeline(**cfg.model_dump())
    return out


def _print(res) -> None:  # noqa: ANN001
    p = res.meta["protocol"]
    console.print(
        f"[bold]{res.meta['dataset']['name']}[/]: {p['ranking']}, split "
        f"{p['split']['split']}, stage {p['stage']}; ties count against the target"
    )
    models = res.table["model"].unique(maintain_order=True).to_list()
    t = Table("metric", *models)
    for metric in res.table["metric"].unique(maintain_order=True).to_list():
        cells = []
        for m in models:
            r = res.table.filter((pl.col("model") == m) & (pl.col("metric") == metric))
            if r.height == 0:
                cells.append("-")
                continue
            rec = r.row(0, named=True)
            text = f"{rec['value']:.4f}" if abs(rec["value"]) < 100 else f"{rec['value']:.1f}"
            if rec.get("ci_low") is not None:
                text += f" ±{(rec['ci_high'] - rec['ci_low']) / 2:.4f}"
            if rec.get("is_best"):
                text = f"[bold green]{text}[/]"
            elif rec.get("significant_vs_best") is False:
                text += " (ns)"
            cells.append(text)
        t.add_row(metric, *cells)
    console.print(t)
    for name, m in res.meta["models"].items():
        console.print(f"  {name}: fit {m['fit_seconds']:.2f}s, evaluate {m['eval_seconds']:.2f}s")
        dp = m.get("privacy")
        if dp:  # the accounting of a differentially private model
            console.print(
                f"    {dp['unit']}-level ({dp['epsilon']:g}, {dp['delta']:g})-DP: "
                f"{dp['mechanism']}, at most {dp['items_per_user']} items per user, "
                f"noise scale {dp['noise_scale']:.3g}"
            )
