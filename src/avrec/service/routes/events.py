"""Events in (one or a batch, idempotent) and a user's events out."""

from __future__ import annotations

import json
import time
from typing import Any

import polars as pl
from fastapi import APIRouter, Body, Depends, Path, Query, Request

from avrec.data.schema import check_id
from avrec.service.deps import ApiError, act_for, require, service_state, settings
from avrec.service.metrics import EVENTS
from avrec.service.schemas import EventIn, EventResult, EventsIn, EventsResult
from avrec.service.security import Principal
from avrec.service.settings import ServiceSettings
from avrec.service.state import ServiceState
from avrec.storage.base import event_rows

router = APIRouter(prefix="/v1", tags=["events"])


@router.post(
    "/events",
    response_model=EventsResult,
    summary="Record events (one, or a batch)",
    responses={
        413: {"description": "batch or body too large"},
        422: {"description": "invalid body, or every event rejected"},
    },
)
def post_events(
    request: Request,
    body: EventIn | EventsIn = Body(
        openapi_examples={
            "one": {"value": {"user_id": "196", "item_id": "50", "event": "play", "value": 0.9}},
            "batch": {
                "value": {
                    "events": [
                        {
                            "user_id": "196",
                            "item_id": "50",
                            "event": "like",
                            "idempotency_key": "k-1",
                        },
                        {"user_id": "196", "event": "search", "text": "space opera"},
                    ]
                }
            },
        }
    ),  # fmt: skip
    st: ServiceState = Depends(service_state),
    cfg: ServiceSettings = Depends(settings),
    who: Principal = Depends(require("write", users=True)),
) -> EventsResult:
    """Each event is acknowledged only once it is committed to the store (and, with the
    default durable setting, on disk). An event with an ``idempotency_key`` seen before is a
    ``duplicate``, not counted again. An event of an unknown type is ``rejected`` with its
    reason while the others are kept. The user's next recommendation follows at once."""
    events = body.events if isinstance(body, EventsIn) else [body]
    for e in events:  # a user token posts its own user's events only
        act_for(who, e.user_id)
    if len(events) > cfg.max_batch:
        raise ApiError(413, "batch_too_large", f"{len(events)} events; at most {cfg.max_batch}")
    types = st.ws.config.event_types()
    results: list[EventResult | None] = [None] * len(events)
    good: list[tuple[int, EventIn]] = []
    now = time.time()
    lo, hi = st.ws.config.ingest.event_window(now)
    for i, e in enumerate(events):
        problem = _id_problem(e.user_id, "user_id") or _id_problem(e.item_id, "item_id")
        if problem:
            results[i] = EventResult(index=i, status="rejected", reason=problem)
        elif e.event not in types:
            results[i] = EventResult(
                index=i, status="rejected", reason=f"unknown event type {e.event!r}"
            )
        elif e.timestamp is not None and not lo <= e.timestamp <= hi:
            results[i] = EventResult(
                index=i,
                status="rejected",
                reason=f"timestamp {e.timestamp!r} is outside the accepted window"
                " ([ingest] earliest_event, latest_event_ahead_s); send Unix seconds or ISO 8601",
            )
        elif e.item_id is None and e.event not in ("search",):
            results[i] = EventResult(
                index=i, status="rejected", reason=f"a {e.event!r} event needs an item_id"
            )
        else:
            good.append((i, e))
    if good:
        df = pl.DataFrame(
            {
                "user_id": [e.user_id for _, e in good],
                "item_id": [e.item_id for _, e in good],
                "event": [e.event for _, e in good],
                "ts": [e.timestamp if e.timestamp is not None else now for _, e in good],
                "value": [e.value for _, e in good],
                "session_id": [e.session_id for _, e in good],
                "text": [e.text for _, e in good],
                "context": [
                    json.dumps({"request_id": e.request_id}) if e.request_id else None
                    for _, e in good
                ],
            },
            schema={
                "user_id": pl.String, "item_id": pl.String, "event": pl.String,
                "ts": pl.Float64, "value": pl.Float64, "session_id": pl.String,
                "text": pl.String, "context": pl.String,
            },
        )  # fmt: skip
        keys = [e.idempotency_key for _, e in good]
        dup = st.writer.write(df, keys)  # committed (group commit) when it returns
        for (i, _e), d in zip(good, dup, strict=True):
            results[i] = EventResult(index=i, status="duplicate" if d else "accepted")
    done = [r for r in results if r is not None]
    counts = {s: sum(r.status == s for r in done) for s in ("accepted", "duplicate", "rejected")}
    for s, n in counts.items():
        if n:
            EVENTS.labels(status=s).inc(n)
    out = EventsResult(
        accepted=counts["accepted"],
        duplicates=counts["duplicate"],
        rejected=counts["rejected"],
        results=done,
    )
    if not good:
        raise ApiError(422, "rejected", "; ".join(r.reason or "" for r in done[:5]))
    return out


@router.get("/users/{user_id}/events", summary="A user's events, newest first (admin)")
def user_events(
    user_id: str = Path(min_length=1, max_length=256),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=1_000_000),
    st: ServiceState = Depends(service_state),
    _: Principal = Depends(require("admin")),
) -> dict[str, Any]:
    """A person's log holds their searches and comments in their own words: only an
    ``admin`` key reads it. Fields are named as in event files (``event``, ``timestamp``)."""
    with st.lock:
        df = st.store.user_events(user_id, limit=limit, offset=offset)
    return {"user_id": user_id, "events": event_rows(df), "offset": offset}


@router.get("/users/{user_id}/export", summary="Everything held about a user (admin)")
def export_user(
    user_id: str = Path(min_length=1, max_length=256),
    st: ServiceState = Depends(service_state),
    _: Principal = Depends(require("admin")),
) -> dict[str, Any]:
    """The right of access: the user's row, every event (their searches and comments in
    their own words included), their conversations and their precomputed page, as JSON
    (what erasure deletes). Only an ``admin`` key reads it; 404 when nothing is held."""
    with st.lock:
        out = st.store.export_user(user_id)
    if out is None:
        raise ApiError(404, "unknown_user", f"nothing is held about {user_id!r}")
    return out


def _id_problem(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    try:
        check_id(value, name)
    except ValueError as exc:
        return str(exc)
    return None
