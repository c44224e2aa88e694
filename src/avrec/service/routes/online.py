"""Online metrics and A/B experiments: what people did with what they were shown (operator
data, admin only)."""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter, Body, Depends, Path, Query
from pydantic import ValidationError

from avrec.service.deps import ApiError, require, service_state
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
    st._experiments_at = -1e9  # this process sees it at once; the others within seconds
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
    st._experiments_at = -1e9
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
                       list(cfg.click_events))  # fmt: skip
