"""Online metrics: what people did with what they were shown (operator data, admin only)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query

from avrec.service.deps import require, service_state
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
