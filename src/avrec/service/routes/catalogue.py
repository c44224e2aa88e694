"""Items and users: create, update, get, delete; a user's erasure (right to be forgotten)."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import polars as pl
from fastapi import APIRouter, Body, Depends, Path, Request
from fastapi.responses import FileResponse, RedirectResponse

from avrec.data.schema import ITEM_STORE_SCHEMA, check_id
from avrec.errors import MediaError
from avrec.media.source import MediaSource
from avrec.service.deps import (
    ApiError,
    act_for,
    require,
    scrub_paths,
    service_state,
    settings,
)
from avrec.service.parts import stored_list
from avrec.service.routes.recommend import cover_url
from avrec.service.schemas import (
    ConsentIn,
    ConsentResponse,
    ErasureResponse,
    ItemIn,
    ItemOut,
    ItemPatch,
    UserIn,
)
from avrec.service.security import Principal
from avrec.service.settings import ServiceSettings
from avrec.service.state import ServiceState

router = APIRouter(prefix="/v1", tags=["catalogue"])
MEDIA = ("image", "video", "audio")


def _media(st: ServiceState) -> MediaSource:
    """The workspace's media rules, as the analysis applies them."""
    with st.lock:
        return st.ws.media_source()


def _check_media(st: ServiceState, item: ItemIn) -> None:
    """Media references as the analysis accepts them: http(s), or paths inside the
    workspace's media roots (its media/ folder, ``[content] media_roots`` and the loaded
    datasets' folders); anything else is a 422 naming the field."""
    source = _media(st)
    for name in MEDIA:
        ref = getattr(item, name)
        if ref:
            try:
                source.check(ref)
            except MediaError as exc:
                raise ApiError(422, "invalid_media", f"{name}: {scrub_paths(str(exc))}") from None


def _row(item: ItemIn, base: dict[str, Any] | None = None) -> dict[str, Any]:
    row = dict(base or {})
    for k, v in item.model_dump(exclude_unset=True).items():
        row[k] = json.dumps(v, ensure_ascii=False) if k in ("tags", "categories", "people") else v
    row["item_id"] = item.item_id
    return row


def _write_items(st: ServiceState, rows: list[dict[str, Any]]) -> tuple[int, int]:
    cols = sorted({k for r in rows for k in r} & set(ITEM_STORE_SCHEMA) | {"item_id"})
    df = pl.DataFrame(
        [{c: r.get(c) for c in cols} for r in rows],
        schema={c: ITEM_STORE_SCHEMA[c] for c in cols},
    )
    with st.lock:
        created, updated = st.store.upsert_items(df)
        for r in rows:
            st.store.record_change("item", r["item_id"])
    return created, updated


def _public_url(ref: str | None) -> str | None:
    """An http(s) media reference as it is; a local path never leaves the server."""
    if ref and urllib.parse.urlparse(ref).scheme.lower() in ("http", "https"):
        return ref
    return None


def _people(raw: Any) -> list[dict[str, Any]]:
    if not raw:
        return []
    try:
        got = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return []
    return [p for p in got if isinstance(p, dict)] if isinstance(got, list) else []


def _out(st: ServiceState, row: dict[str, Any]) -> ItemOut:
    b = st.bundle
    known = b is not None and b.model.items.index([row["item_id"]], missing="ignore")[0] >= 0
    media = ("image", "video", "audio")
    return ItemOut(
        **{k: row.get(k) for k in ItemOut.model_fields
           if k not in ("tags", "categories", "people", "in_model", *media)},
        people=_people(row.get("people")),
        tags=stored_list(row.get("tags")),
        categories=stored_list(row.get("categories")),
        image=cover_url(row["item_id"], row.get("image")),
        video=_public_url(row.get("video")),
        audio=_public_url(row.get("audio")),
        in_model=bool(known),
    )  # fmt: skip


@router.post("/items", status_code=201, summary="Create or update items (one or a list)")
def create_items(
    body: ItemIn | list[ItemIn] = Body(),
    st: ServiceState = Depends(service_state),
    cfg: ServiceSettings = Depends(settings),
    _: Principal = Depends(require("write")),
) -> dict[str, Any]:
    """Items are stored at once; items the served model does not know yet are offered by
    the content sources (their text) until the next training learns them."""
    items = body if isinstance(body, list) else [body]
    if len(items) > cfg.max_batch:
        raise ApiError(413, "batch_too_large", f"{len(items)} items; at most {cfg.max_batch}")
    for it in items:
        _check_media(st, it)
    created, updated = _write_items(st, [_row(it) for it in items])
    return {"created": created, "updated": updated, "item_ids": [it.item_id for it in items]}


def _get_row(st: ServiceState, item_id: str) -> dict[str, Any]:
    with st.lock:
        rows = st.store.get_items([item_id]).to_dicts()
    if not rows:
        raise ApiError(404, "unknown_item", f"no item {item_id!r}")
    return rows[0]


@router.get("/items/{item_id}", response_model=ItemOut, summary="An item")
def get_item(
    item_id: str = Path(min_length=1, max_length=256),
    st: ServiceState = Depends(service_state),
    _: Principal = Depends(require("read")),
) -> ItemOut:
    return _out(st, _get_row(st, item_id))


@router.patch("/items/{item_id}", response_model=ItemOut, summary="Update an item")
def update_item(
    body: ItemPatch,
    item_id: str = Path(min_length=1, max_length=256),
    st: ServiceState = Depends(service_state),
    _: Principal = Depends(require("write")),
) -> ItemOut:
    _get_row(st, item_id)
    item = ItemIn.model_validate({**body.model_dump(exclude_unset=True), "item_id": item_id})
    _check_media(st, item)
    _write_items(st, [_row(item)])
    return _out(st, _get_row(st, item_id))


@router.delete("/items/{item_id}", summary="Delete an item and its events")
def delete_item(
    item_id: str = Path(min_length=1, max_length=256),
    st: ServiceState = Depends(service_state),
    _: Principal = Depends(require("write")),
) -> dict[str, Any]:
    """It is never recommended again, by any process, from the next request on."""
    with st.lock:
        out = st.store.delete_items([item_id])
    if not out["items"]:
        raise ApiError(404, "unknown_item", f"no item {item_id!r}")
    st.refresh()
    return {"item_id": item_id, "deleted": out}


@router.get(
    "/items/{item_id}/image",
    summary="An item's cover",
    response_class=FileResponse,
    responses={307: {"description": "the cover is a URL"}, 404: {"description": "none"}},
)
def item_image(
    item_id: str = Path(min_length=1, max_length=256),
    st: ServiceState = Depends(service_state),
    _: Principal = Depends(require("read", users=True)),
) -> Any:
    """The cover file, only from inside the media roots, whatever path is stored (a path
    outside them, or a symlink that leaves them, is a 404 that names no path)."""
    ref = _get_row(st, item_id).get("image")
    if not ref:
        raise ApiError(404, "no_image", f"item {item_id!r} has no cover")
    if urllib.parse.urlparse(ref.strip()).scheme.lower() in ("http", "https"):
        return RedirectResponse(ref.strip(), status_code=307)
    try:
        path = _media(st).resolve(ref)
    except MediaError:
        raise ApiError(404, "no_image", f"item {item_id!r}: its cover cannot be served") from None
    return FileResponse(path)


# -- users ---------------------------------------------------------------------------------------
@router.post("/users", status_code=201, summary="Create or update a user")
def create_user(
    body: UserIn,
    st: ServiceState = Depends(service_state),
    _: Principal = Depends(require("write")),
) -> dict[str, Any]:
    df = pl.DataFrame(
        {"user_id": [body.user_id], "attributes": [json.dumps(body.attributes)]},
        schema={"user_id": pl.String, "attributes": pl.String},
    )
    with st.lock:
        created, _updated = st.store.upsert_users(df)
    return {"user_id": body.user_id, "created": bool(created)}


@router.get("/users/{user_id}", summary="A user")
def get_user(
    user_id: str = Path(min_length=1, max_length=256),
    st: ServiceState = Depends(service_state),
    _: Principal = Depends(require("read")),
) -> dict[str, Any]:
    with st.lock:
        row = st.store.get_user(user_id)
    if row is None:
        raise ApiError(404, "unknown_user", f"no user {user_id!r}")
    return {**row, "in_model": st.knows(user_id)}


@router.put("/users/{user_id}/consent", response_model=ConsentResponse,
            summary="Consent to personalisation, given or withdrawn")  # fmt: skip
def set_consent(
    body: ConsentIn,
    user_id: str = Path(min_length=1, max_length=256),
    st: ServiceState = Depends(service_state),
    who: Principal = Depends(require("write", users=True)),
) -> ConsentResponse:
    """Without consent, every node answers the user as an anonymous visitor (``personalised:
    false``), their kept page is deleted, and their events (still stored, still erasable
    and exported) stay out of the next training. Given back, the next training uses them
    again. A user token may set its own user's consent."""
    act_for(who, user_id)
    try:
        check_id(user_id, "user_id")
    except ValueError as exc:
        raise ApiError(422, "invalid", str(exc)) from exc
    with st.lock:
        out = st.store.set_consent(user_id, body.personalisation)
    st.refresh()  # this process now; the others from the change log
    return ConsentResponse(**out)


@router.delete("/users/{user_id}", response_model=ErasureResponse, summary="Erase a user")
def erase_user(
    request: Request,
    user_id: str = Path(min_length=1, max_length=256),
    st: ServiceState = Depends(service_state),
    cfg: ServiceSettings = Depends(settings),
    _: Principal = Depends(require("admin")),
) -> ErasureResponse:
    """The right to be forgotten: the user's events, conversations and row are deleted from
    the store; the served model's history and per-user vectors of them are cleared in every
    process; and a retraining starts so that the items' parameters forget them too."""
    with st.lock:
        out: dict[str, Any] = st.store.erase_user(user_id)
    st.refresh()  # this process forgets now, from the change log; the others when told
    out["model"] = st.forgotten.pop(user_id, [])
    if not (out["events"] or out["user"] or out["conversations"]):
        raise ApiError(404, "unknown_user", f"no user {user_id!r}")
    if cfg.retrain_on_erasure:  # queued behind a running one, which may have read them
        retrain = st.retrain()
    else:
        retrain = "not started (AVREC_RETRAIN_ON_ERASURE is off): run avrec train"
    return ErasureResponse(user_id=user_id, erased=out, retrain=retrain)


@router.get(
    "/releases/{name}", summary="A differentially private release (popular, trending, stats)"
)
def get_release(
    name: str = Path(pattern="^(popular|trending|stats)$"),
    st: ServiceState = Depends(service_state),
    _: Principal = Depends(require("read")),
) -> dict[str, Any]:
    """The last list ``avrec release popular|trending`` released with user-level
    differential privacy (items, epsilon, delta, the mechanism; with ``counts``, also the
    noisy counts and the bound per user, which ``top_k`` leaves null), or the last
    ``avrec release stats`` (the workspace's counts about people, noisy). Serving it
    again spends no budget: it is post-processing of a release already paid for."""
    from avrec.privacy.release import RELEASE_KIND

    with st.lock:
        rel = st.store.get_state(RELEASE_KIND, name)
    if rel is None:
        raise ApiError(404, "no_release", f"nothing released as {name!r}: run avrec release")
    return rel
