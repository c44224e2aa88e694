"""Liveness, readiness, metrics, and the admin's retraining."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response

from avrec.service.deps import ApiError, require, service_state
from avrec.service.metrics import CONTENT_TYPE_LATEST, render
from avrec.service.security import Principal
from avrec.service.state import ServiceState

router = APIRouter(tags=["health"])


@router.get("/health/live", summary="The process answers")
def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/health/ready", summary="A model bundle is loaded")
def ready(st: ServiceState = Depends(service_state)) -> dict[str, Any]:
    b = st.bundle
    if b is None:
        raise ApiError(503, "not_ready", "no model bundle loaded: run avrec train")
    return {"status": "ready", "model_version": b.label, "live_events": st.live.count}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics() -> Response:
    return Response(render(), media_type=CONTENT_TYPE_LATEST)


@router.post("/v1/admin/retrain", status_code=202, tags=["admin"], summary="Retrain now")
def retrain(
    st: ServiceState = Depends(service_state), _: Principal = Depends(require("admin"))
) -> dict[str, Any]:
    """Train a new bundle in the background; every process swaps to it when it is
    registered, without dropping a request. While one runs, another is queued to follow
    it (``"retrain": "queued"``)."""
    how = st.retrain()
    return {"retrain": how, "started": how == "started", **st.retrain_state}


@router.get("/v1/admin/retrain", tags=["admin"], summary="The last retraining")
def retrain_status(
    st: ServiceState = Depends(service_state), _: Principal = Depends(require("admin"))
) -> dict[str, Any]:
    b = st.bundle
    return {**st.retrain_state, "model_version": b.label if b else None}
