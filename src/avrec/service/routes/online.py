"""Online metrics and A/B experiments: what people did with what they were shown (operator
data, admin only)."""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter, Body, Depends, Path, Query
from pydantic import ValidationError

from avrec.service.deps import ApiError, require, service_state
from avrec.service.mixes import rooms
from avrec.service.security import Principal
from avrec.service.state import ServiceState

router = APIRouter(prefix="/v1", tags=["admin"])


@router.get("/metrics/online", summary="CTR, completion, watch time ... of what was shown")
def online(
    since: float | None = Query(None, ge=0, description="unix seconds (default: 7 days ago)"),
    until: float | None = Query(None, ge=0, description="unix seconds (default: now)"),
    every: Literal["hour", "day"] | None = Query(None, description="one row per hour or day"),
    flush: bool = Query(True, description="store this process's pending impressions first"),
    st: ServiceState = Depends(service_state),
    _: Principal = Depends(require("admin")),
) -> dict[str, Any]:
    """Per surface, model version and variant: impressions, lists, CTR, completion, seconds
    watched, likes, dislikes and skips per impression, coverage and novelty of what was
    shown. Events are attributed to an impression within ``[online]
    attribution_window_s`` of it (same user, same item) or by an echoed ``request_id``."""
    from avrec.online.metrics import online_metrics

    cfg = st.ws.config.online
    if flush and st.impressions is not None:
        st.impressions.flush()
    with st.lock:
        rows = online_metrics(
            st.store, since, until, cfg.attribution_window_s, tuple(cfg.click_events),
            cfg.completion_at, every,
        )  # fmt: skip
    return {"window_s": cfg.attribution_window_s, "rows": rows}


EXPERIMENT = "experiment"


def _experiment(st: ServiceState, name: str) -> Any:
    from avrec.online.experiments import ExperimentConfig

    with st.lock:
        raw = st.store.get_state(EXPERIMENT, name)
    if raw is None:
        raise ApiError(404, "unknown_experiment", f"no experiment {name!r}")
    return ExperimentConfig(**raw)


@router.put("/admin/experiments/{name}", summary="Start (or change) an A/B experiment")
def put_experiment(
    name: str = Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$"),
    body: dict[str, Any] = Body(
        openapi_examples={
            "two arms": {
                "value": {
                    "variants": [
                        {"name": "control", "share": 0.5},
                        {"name": "diverse", "share": 0.5, "diversity": 0.3},
                    ],
                }
            }
        },
    ),  # fmt: skip
    st: ServiceState = Depends(service_state),
    _: Principal = Depends(require("admin")),
) -> dict[str, Any]:
    """Arms (the first is the control) with their shares of users, each served a registered
    pipeline version (``model_version``) or the active one, with its own ``diversity``.
    Users are assigned by a salted hash of their id: the same arm on every node. Starts now
    unless ``started_at`` says when."""
    from avrec.online.experiments import ExperimentConfig

    try:
        exp = ExperimentConfig(**{**body, "name": name})
    except (ValidationError, TypeError) as exc:
        raise ApiError(422, "invalid", str(exc)) from exc
    if exp.started_at is None:
        exp.started_at = time.time()
    with st.lock:
        st.store.put_state(EXPERIMENT, name, exp.model_dump())
    st.experiments_changed()  # this process sees it at once; the others within seconds
    return exp.model_dump()


@router.post("/admin/experiments/{name}/stop", summary="Stop an A/B experiment")
def stop_experiment(
    name: str = Path(min_length=1, max_length=64),
    st: ServiceState = Depends(service_state),
    _: Principal = Depends(require("admin")),
) -> dict[str, Any]:
    exp = _experiment(st, name)
    exp.stopped_at = time.time()
    with st.lock:
        st.store.put_state(EXPERIMENT, name, exp.model_dump())
    st.experiments_changed()
    return exp.model_dump()


@router.get("/admin/experiments", summary="The A/B experiments")
def list_experiments(
    st: ServiceState = Depends(service_state), _: Principal = Depends(require("admin"))
) -> dict[str, Any]:
    with st.lock:
        raw = st.store.states(EXPERIMENT)
    return {"experiments": [raw[k] for k in sorted(raw)]}


@router.get("/admin/experiments/{name}", summary="An A/B experiment's statistics")
def experiment_results(
    name: str = Path(min_length=1, max_length=64),
    st: ServiceState = Depends(service_state),
    _: Principal = Depends(require("admin")),
) -> dict[str, Any]:
    """Per arm: users, mean clicks per impression, the effect against the control with a
    95% interval and its CUPED-adjusted twin, the always-valid p-value (mSPRT: looking
    every day keeps its error rate), and the sample-ratio check. Each call is a look."""
    from avrec.online.experiments import results

    exp = _experiment(st, name)
    cfg = st.ws.config.online
    if st.impressions is not None:
        st.impressions.flush()
    with st.lock:
        return results(st.store, exp, time.time(), cfg.attribution_window_s,
                       list(cfg.click_events), completion_at=cfg.completion_at)  # fmt: skip


@router.get("/admin/overview", summary="Everything the operator dashboard shows")
def overview(
    days: float = Query(7.0, gt=0, le=400, description="the online metrics' span"),
    st: ServiceState = Depends(service_state),
    _: Principal = Depends(require("admin")),
) -> dict[str, Any]:
    """Catalogue and event counts, the last ingests, the registered model versions with
    their offline metrics, what this node serves, the last retraining, the online metrics
    per hour (two days or less) or per day, the experiments with their statistics (a glance,
    not a recorded look) and the rooms live now (:func:`avrec.service.mixes.rooms`: the catalogue is
    not read whole)."""
    from avrec.online.experiments import ExperimentConfig, results
    from avrec.online.metrics import online_metrics

    cfg = st.ws.config.online
    now = time.time()
    if st.impressions is not None:
        st.impressions.flush()
    b = st.bundle
    with st.lock:
        store = st.store
        counts = store.counts()
        by_type = store.event_type_counts()
        ingests = [
            {"kind": r.kind, "source": r.source, "rows": r.rows, "accepted": r.accepted,
             "rejected": r.rejected, "finished_at": r.finished_at}
            for r in store.ingests()[-5:]
        ]  # fmt: skip
        models = [
            {"version": r.version, "kind": r.kind, "active": r.active, "created_at": r.created_at,
             "metrics": {k: v for k, v in r.metrics.items()
                         if isinstance(v, int | float) and not k.startswith("last_")}}
            for r in store.models(st.model_name)
        ]  # fmt: skip
        every = "hour" if days <= 2 else "day"
        online_rows = online_metrics(
            store, now - days * 86400.0, now, cfg.attribution_window_s,
            tuple(cfg.click_events), cfg.completion_at, every,
        )  # fmt: skip
        experiments = []
        for _name, raw in sorted(store.states(EXPERIMENT).items()):
            exp = ExperimentConfig(**raw)
            experiments.append({
                "config": exp.model_dump(),
                "results": results(store, exp, now, cfg.attribution_window_s,
                                   list(cfg.click_events), record=False,
                                   completion_at=cfg.completion_at),
            })  # fmt: skip
    live: list[str] = []
    if b is not None:
        st.refresh()  # the rooms opened or closed through any node since the last request
        live = sorted(rooms(st, b))
    return {
        "now": now,
        "counts": counts,
        "events_by_type": by_type,
        "ingests": ingests,
        "models": models,
        "serving": {"model_version": b.label if b else None, "live_events": st.live.count},
        "retrain": st.retrain_state,
        "online": {"every": every, "rows": online_rows},
        "experiments": experiments,
        "live_now": {"count": len(live), "items": live[:20]},
    }
