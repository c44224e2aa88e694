"""``avrec train`` and ``avrec tune``: fit a model on a dataset or the workspace and save it."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from avrec.cli._common import console, state
from avrec.errors import ConfigError


def _params(spec: str | None) -> dict:
    out: dict = {}
    for part in (spec or "").split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise ConfigError(f"--params entry {part!r} must look like name=value")
        k, v = (x.strip() for x in part.split("=", 1))
        for cast in (int, float):
            try:
                out[k] = cast(v)
                break
            except ValueError:
                continue
        else:
            out[k] = {"true": True, "false": False}.get(v.lower(), v)
    return out


def _data(ctx: typer.Context, dataset: str | None) -> tuple[object, object | None]:
    from avrec.data.dataset import Dataset

    st = state(ctx)
    if dataset:
        from avrec.data.loaders import load_dataset

        return load_dataset(dataset, settings=st.settings()), None
    ws = st.open_workspace()
    days = ws.config.privacy.retention_days
    if days is not None:  # what is past the retention period is deleted, then not trained on
        gone = ws.store.apply_retention(days)
        console.print(f"retention: {gone['events']:,} events older than {days:g} days deleted")
    # read before the events: a server adds to the bundle the events after these marks
    marks = {
        "last_event_id": ws.store.last_event_id(),
        "last_change_id": ws.store.last_change_id(),
    }
    data = Dataset.from_store(ws.store, ws.config.weighting)
    data.store_marks = marks  # type: ignore[attr-defined]
    if data.n_events == 0 and data.n_items == 0:
        ws.close()
        raise ConfigError("the workspace is empty: ingest a catalogue or events first")
    if data.n_events == 0:
        console.print(
            "no events yet: training the catalogue (search, ask, content and fresh items);"
            " train again once events arrive for the full pipeline"
        )
    return data, ws


def _attach_content(data, ws) -> bool:  # noqa: ANN001
    """Attach the workspace's analysed content vectors to ``data`` (when there are any)."""
    if ws is None or not (ws.root / "content.db").exists():
        return False
    from avrec.content.store import ContentStore

    with ContentStore(ws.root / "content.db") as cs:
        if not cs.modalities():
            return False
        cs.attach(data)
    return True


def _search_vectors(data, ws, budget: int) -> int:  # noqa: ANN001
    """Give every item a text vector for semantic search and mood playlists: analysed items
    keep theirs; the others get e5 vectors of their title, tags and description, cached in
    the workspace's content.db by text (a second training encodes nothing). Returns how
    many were encoded now."""
    from avrec.cli._common import count_progress
    from avrec.content.store import ContentStore
    from avrec.language.search import fill_text_vectors, item_documents

    docs = item_documents(data, data.item_texts)
    with ContentStore(ws.root / "content.db") as cs:
        x, n = fill_text_vectors(
            docs, data.item_features.get("text"), budget, cache=cs, progress=count_progress
        )
    if x is not None:
        data.set_item_features("text", x)
    return n


def train(
    ctx: typer.Context,
    model: str | None = typer.Option(
        None, "--model", help="one model (ease, als, sasrec ...); default: the pipeline"
    ),
    pipeline: Path | None = typer.Option(
        None, "--pipeline", help="pipeline file (default: configs/default.toml's settings)"
    ),
    dataset: str | None = typer.Option(None, help="public dataset (default: the workspace)"),
    params: str | None = typer.Option(None, help="e.g. dim=64,layers=2"),
    output: Path | None = typer.Option(None, help="bundle folder (default: in the workspace)"),
) -> None:
    """Fit the recommendation pipeline (or one model) and save it as a versioned bundle,
    registered and made active in the workspace when there is one.

    The pipeline's ranker learns from each user's last events (``ranker_holdout``), with the
    sources fitted without them; the sources are then refitted on every event. For one model,
    every user's last event is held out for the models that stop early.
    """
    from avrec.eval.splits import LeaveOneOut
    from avrec.models.base import create_model

    if model and pipeline:
        raise ConfigError("give --model or --pipeline, not both")
    data, ws = _data(ctx, dataset)
    name = model or "pipeline"
    if model:
        m = create_model(model, **_params(params))
    else:
        from avrec.pipeline.pipeline import Pipeline, PipelineConfig

        cfg = PipelineConfig.from_toml(pipeline) if pipeline else PipelineConfig()
        if params:
            raise ConfigError("--params is for --model; a pipeline takes its settings from a file")
        if _attach_content(data, ws) and cfg.feature in data.item_features:
            cfg = cfg.with_content_sources()
            console.print("content vectors found: neighbours and interests sources added")
        if ws is not None and cfg.search and cfg.search_encode_max:
            n = _search_vectors(data, ws, cfg.search_encode_max)
            if n:
                console.print(f"text vectors for search: {n} items encoded (cached)")
            cfg = cfg.model_copy(update={"search_encode_max": 0})  # nothing left to encode
        m = Pipeline(**cfg.model_dump())
    cache = None
    if ws is not None and not model:
        from avrec.content.store import ContentStore

        # e5 vectors of the items' tags and transcripts for search, kept by text
        cache = ContentStore(ws.root / "content.db")
        m.text_cache = cache  # type: ignore[attr-defined]
    marks = getattr(data, "store_marks", {})  # what the bundle was trained on
    with console.status(f"training {name} on {data} ..."):
        start = time.perf_counter()
        if model or not m.config.ranker_holdout:  # type: ignore[attr-defined]
            # the last event of each user validates early stopping (or, for a pipeline
            # without held-out tails, teaches its ranker)
            split = LeaveOneOut(valid=False, min_events=2).split(data)
            m.fit(split.train, data.select(split.masks["test"]))
        else:  # the pipeline holds out each user's last events for its ranker itself
            m.fit(data)
        seconds = time.perf_counter() - start
    if cache is not None:
        cache.close()
        del m.text_cache  # type: ignore[attr-defined]
    console.print(f"{name} trained in {seconds:.1f}s")
    for attr in ("best_valid_ndcg_", "best_epoch_", "ranker_recall"):
        if getattr(m, attr, None) is not None:
            console.print(f"  {attr.rstrip('_')}: {getattr(m, attr)}")
    if output is None and ws is None:
        output = Path("bundles") / name / time.strftime("%Y%m%d-%H%M%S")
    if output is None:
        assert ws is not None
        version = len(ws.store.models(name)) + 1  # type: ignore[attr-defined]
        output = ws.root / "artifacts" / "models" / name / str(version)  # type: ignore[attr-defined]
    path = m.save(output)
    console.print(f"saved to {path}")
    if ws is not None:
        store = ws.store  # type: ignore[attr-defined]
        rec = store.register_model(
            name, m.name, str(path), m.config.model_dump(), {"fit_seconds": seconds, **marks},
            activate=False,
        )  # fmt: skip
        # a shared store keeps the bundle's files too, for serving nodes on other machines;
        # it becomes active (and every node swaps to it) only once they are there
        if store.put_bundle(name, rec.version, path):
            console.print(f"bundle stored in {store.url} for every serving node")
        store.activate_model(name, rec.version)
        console.print(f"registered as {rec.name} v{rec.version} (active)")
        ws.close()  # type: ignore[attr-defined]


def tune(
    ctx: typer.Context,
    model: str = typer.Option(..., "--model"),
    dataset: str | None = typer.Option(None, help="public dataset (default: the workspace)"),
    trials: int = typer.Option(20, min=1),
    timeout: float | None = typer.Option(
        None, min=0, help="stop the search after this many seconds"
    ),
    fixed: str | None = typer.Option(None, help="parameters held constant, e.g. epochs=20"),
    engine: str | None = typer.Option(
        None, "--engine", help="local, or ray: trials in parallel on a Ray cluster"
    ),
    address: str | None = typer.Option(
        None, "--address", help="the Ray cluster to join (default: RAY_ADDRESS)"
    ),
) -> None:
    """Search hyperparameters on a leave-one-out validation split (the test items unseen)."""
    import os

    from avrec.config import ComputeConfig
    from avrec.data.weighting import EventWeighting
    from avrec.errors import ConfigError
    from avrec.eval.splits import LeaveOneOut
    from avrec.models.tuning import tune as run_tune

    data, ws = _data(ctx, dataset)
    compute = ws.config.compute if ws is not None else ComputeConfig()  # type: ignore[attr-defined]
    if ws is not None:
        ws.close()  # type: ignore[attr-defined]
    eng = engine or compute.engine
    if eng not in ("local", "ray"):
        raise ConfigError(f"unknown engine {eng!r}: local or ray")
    split = LeaveOneOut().split(data.with_weighting(EventWeighting.binary()))
    with console.status(f"tuning {model}: {trials} trials ({eng}) ..."):
        res = run_tune(
            model, split, trials, timeout, fixed=_params(fixed), engine=eng,
            address=address or os.environ.get("RAY_ADDRESS") or compute.address,
        )  # fmt: skip
    console.print(
        f"best valid {res.metric} = {res.best_value:.4f} after {len(res.trials)} "
        f"trials in {res.seconds:.0f}s"
    )
    console.print(f"  params: {res.best_params}")
