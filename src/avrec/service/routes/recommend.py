"""Recommendations: for a user, for an anonymous session, and items like an item."""

from __future__ import annotations

import time
import urllib.parse
import uuid
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Path, Query, Request

from avrec.service.deps import ApiError, act_for, bundle, require, service_state
from avrec.service.metrics import PAGES
from avrec.service.mixes import liked_hosts, mix_live, mix_new, rooms
from avrec.service.parts import stored_list
from avrec.service.schemas import AnonymousRequest, RecommendationResponse, RecommendedItem
from avrec.service.security import Principal
from avrec.service.state import Bundle, ServiceState

router = APIRouter(prefix="/v1", tags=["recommendations"])


def _split(value: str | None) -> list[str]:
    return [x.strip() for x in (value or "").split(",") if x.strip()]


def _filters(category: list[str], language: list[str]) -> Any:
    from avrec.pipeline.filters import ItemFilter

    return ItemFilter(categories=category or None, languages=language or None)


def cover_url(item_id: str, ref: str | None) -> str | None:
    """What answers give for an item's cover: the URL of its cover route, never the
    server's path (the route serves the file, or redirects to an http(s) cover)."""
    if not ref:
        return None
    return f"/v1/items/{urllib.parse.quote(item_id, safe='')}/image"


def present(st: ServiceState, b: Bundle, lst: Any, explain: bool) -> list[RecommendedItem]:
    """An ItemList as the API's items: title, cover, tags from the catalogue."""
    rows = st.item_rows(list(lst.ids))
    titles = getattr(b.model, "titles", None)
    out = []
    for j, (item, score) in enumerate(zip(lst.ids, lst.scores.tolist(), strict=True)):
        row = rows.get(item, {})
        title = row.get("title")
        if title is None and titles is not None:
            idx = b.model.items.index([item], missing="ignore")[0]
            title = titles[idx] if idx >= 0 else ""
        exp = lst.fields.get("explanation", [None] * len(lst))[j] or {}
        out.append(
            RecommendedItem(
                item_id=item,
                score=round(float(score), 6),
                title=title or "",
                image=cover_url(item, row.get("image")),
                tags=[*stored_list(row.get("tags")), *stored_list(row.get("categories"))][:8],
                reasons=exp.get("reasons", []) if explain else [],
                explanation=exp.get("text", "") if explain else "",
                sources=list(lst.fields.get("sources", [[]] * len(lst))[j] or []),
            )
        )
    return out


def recommend_for(
    st: ServiceState,
    b: Bundle,
    user: str | None,
    played: list[str],
    k: int,
    offset: int,
    exclude: list[str],
    flt: Any,
    explain: bool,
    lang: str,
    diversity: float = 0.0,
) -> tuple[Any, bool]:
    """The page for ``user`` (``None``: anonymous) with this session's ``played`` items, and
    whether it is the fallback (nothing known of them)."""
    from avrec.pipeline.pipeline import Pipeline

    m = b.model
    live = st.live.positive.get(user, []) if user is not None else []
    history = [*live, *played]
    ex = [*exclude, *st.excluded_items(user)]
    asked = st.request_user(user) if user is not None else f"\x00anonymous:{uuid.uuid4().hex}"
    fallback = not history and (user is None or not st.knows(user))
    if isinstance(m, Pipeline):
        lst = m.recommend_explained(
            [asked],
            k=k,
            offset=offset,
            exclude=ex,
            diversity=diversity,
            lang=lang,
            session_items=[history] if history else None,
            filters=flt,
            available_at=time.time(),  # the windows now, not at the newest event trained on
        )[0]
    else:
        if not flt.empty:
            raise ApiError(400, "unsupported", "filters need a pipeline bundle")
        lst = m.recommend([asked], k=k + offset, exclude=ex or None)[0]
        lst.ids, lst.scores = lst.ids[offset:], lst.scores[offset:]
    if offset == 0 and len(st.new_items):  # items the bundle does not know yet, by content
        known = m.users.index([asked], missing="ignore")[0] if user is not None else -1
        past = []
        if known >= 0:
            seen = m.user_batch([asked]).sequence_list()[0]
            past = m.items.lookup(list(seen[-50:]))
        lst = mix_new(st, b, lst, [*past, *history], k, set(ex) | set(history), flt, lang)
    if offset == 0:  # rooms live now lead the first page
        lst = mix_live(st, b, lst, asked if user is not None else None, history, k,
                          set(ex) | set(history), flt, lang)  # fmt: skip
    return lst, fallback


@router.get(
    "/users/{user_id}/recommendations",
    response_model=RecommendationResponse,
    summary="Recommendations for a user",
    responses={401: {"description": "no valid key"}, 429: {"description": "rate limited"}},
)
def user_recommendations(
    request: Request,
    user_id: str = Path(min_length=1, max_length=256),
    k: int = Query(10, ge=1, le=200),
    offset: int = Query(0, ge=0, le=10_000),
    exclude: str | None = Query(None, max_length=20_000, description="item ids, comma-separated"),
    category: str | None = Query(None, max_length=2000, description="comma-separated"),
    language: str | None = Query(None, max_length=200, description="comma-separated"),
    explain: bool = Query(True, description="include reasons and a sentence"),
    lang: Literal["en", "zh"] = Query("en", description="explanation language"),
    diversity: float = Query(0.0, ge=0.0, le=1.0, description="MMR trade-off"),
    st: ServiceState = Depends(service_state),
    b: Bundle = Depends(bundle),
    who: Principal = Depends(require("read", users=True)),
) -> RecommendationResponse:
    """The user's next page: their history since training (events sent to this API count at
    once), what they disliked or skipped left out. An unknown user gets the fallback list
    with ``fallback: true``. A page is kept for ``AVREC_CACHE_S`` seconds unless the user's
    events or the catalogue change first."""
    act_for(who, user_id)
    arm = st.arm(user_id, "recommendations")  # a running A/B experiment's arm
    variant = None
    if arm is not None:
        variant, v = arm
        if v.model_version is not None:
            b = st.arm_bundle(v.model_version) or b
        if v.diversity is not None:
            diversity = v.diversity
    key = st.page_key(user_id, k, offset, exclude, category, language, explain, lang, diversity,
                      variant, b.label)  # fmt: skip
    hit = st.pages.get(key)
    PAGES.labels(cache="hit" if hit is not None else "miss").inc()
    if hit is not None:  # shown again: impressions again (and a new draw of the slot)
        return _explored(request, st, hit, user_id, offset, variant)
    personal = st.personalises(user_id)  # without consent: what an anonymous visitor gets
    pre = None
    if personal and arm is None and not (exclude or category or language or diversity):
        pre = st.precomputed(b, user_id, k, offset, lang)  # kept ahead?
    if pre is not None:
        lst, fallback = pre, False
    else:
        lst, fallback = recommend_for(
            st, b, user_id if personal else None, [], k, offset, _split(exclude),
            _filters(_split(category), _split(language)), explain, lang, diversity,
        )  # fmt: skip
    out = RecommendationResponse(
        user_id=user_id,
        items=present(st, b, lst, explain),
        model_version=b.label,
        fallback=fallback,
        offset=offset,
        precomputed=pre is not None,
        personalised=personal,
        variant=variant,
    )
    st.pages.put(key, out)  # the pipeline's page; exploration draws at every showing
    return _explored(request, st, out, user_id, offset, variant)


def _explored(
    request: Request, st: ServiceState, page: RecommendationResponse, user_id: str,
    offset: int, variant: str | None,
) -> RecommendationResponse:  # fmt: skip
    """The page as shown: on a first page, with ``[online] explore_rate``, the slot may
    show an item from the exploration pool instead; logged with every item's propensity."""
    from avrec.online.explore import SlotPolicy

    cfg = st.ws.config.online
    ids = [x.item_id for x in page.items]
    props = None
    if cfg.explore_rate > 0 and offset == 0 and st.personalises(user_id):
        policy = SlotPolicy(cfg.explore_rate, cfg.explore_slot, st.explore_rng,
                            cfg.explore_fresh_share)  # fmt: skip
        pool, gone = st.exploration.get()
        shown, props = policy.apply(ids, pool, excluded=gone)
        if shown != ids:
            new = shown[cfg.explore_slot]
            row = st.item_rows([new]).get(new, {})
            items = list(page.items)
            items[cfg.explore_slot] = RecommendedItem(
                item_id=new, score=0.0, title=row.get("title") or "",
                image=cover_url(new, row.get("image")),
                tags=[*stored_list(row.get("tags")), *stored_list(row.get("categories"))][:8],
                reasons=[{"kind": "explore", "value": "new"}],
                explanation="New here: shown to find out who likes it",
                sources=["explore"],
            )  # fmt: skip
            page = page.model_copy(update={"items": items})
            ids = shown
    st.shown(request, "recommendations", ids, user_id, page.model_version, offset, variant,
             props)  # fmt: skip
    return page


@router.post(
    "/recommendations",
    response_model=RecommendationResponse,
    summary="Recommendations for an anonymous session",
)
def anonymous_recommendations(
    request: Request,
    body: AnonymousRequest,
    st: ServiceState = Depends(service_state),
    b: Bundle = Depends(bundle),
    _: Principal = Depends(require("read")),
) -> RecommendationResponse:
    """For a visitor without an account: the items played in this session (``items``, or
    ``events`` with their types: a dislike leaves the item out) shape the list."""
    played, rejected = list(body.items), []
    signs = st.live.signs([e.event for e in body.events], [e.value for e in body.events])
    for e, sign in zip(body.events, signs.tolist(), strict=True):
        (rejected if sign < 0 else played).append(e.item_id)
    lst, fallback = recommend_for(
        st, b, None, played, body.k, body.offset, [*body.exclude, *rejected],
        _filters(body.category, body.language), body.explain, body.lang,
    )  # fmt: skip
    st.shown(request, "session", list(lst.ids), None, b.label, body.offset)
    return RecommendationResponse(
        items=present(st, b, lst, body.explain),
        model_version=b.label,
        fallback=fallback,
        offset=body.offset,
    )


@router.get(
    "/items/{item_id}/similar",
    response_model=RecommendationResponse,
    summary="Items like an item",
    responses={404: {"description": "the model does not know the item"}},
)
def similar(
    request: Request,
    item_id: str = Path(min_length=1, max_length=256),
    k: int = Query(10, ge=1, le=200),
    st: ServiceState = Depends(service_state),
    b: Bundle = Depends(bundle),
    _: Principal = Depends(require("read")),
) -> RecommendationResponse:
    m = b.model
    if m.items.index([item_id], missing="ignore")[0] < 0:
        raise ApiError(404, "unknown_item", f"the model does not know item {item_id!r}")
    lst = m.similar_items([item_id], k=k + len(st.deleted))[0]
    keep = [j for j, i in enumerate(lst.ids) if i not in st.deleted][:k]
    lst.ids = [lst.ids[j] for j in keep]
    lst.scores = lst.scores[keep]
    lst.fields = {}
    st.shown(request, "similar", list(lst.ids), None, b.label)
    return RecommendationResponse(items=present(st, b, lst, False), model_version=b.label)


@router.get("/live", response_model=RecommendationResponse, summary="Rooms live now")
def live_rooms(
    request: Request,
    k: int = Query(10, ge=1, le=200),
    user_id: str | None = Query(None, min_length=1, max_length=256, description="for affinity"),
    lang: Literal["en", "zh"] = Query("en"),
    st: ServiceState = Depends(service_state),
    b: Bundle = Depends(bundle),
    who: Principal = Depends(require("read", users=True)),
) -> RecommendationResponse:
    """The rooms live now (``[online] live_category`` inside their availability window),
    ranked by their engagement over the last ``live_window_s`` seconds, lifted by the user's
    liking of each room's host."""
    from avrec.models.base import ItemList
    from avrec.online.live import rank_rooms

    if user_id is not None:
        act_for(who, user_id)
    user = who.user if who.is_user else user_id
    if user is not None and not st.personalises(user):
        user = None
    cfg = st.ws.config.online
    open_now = {i: r for i, r in rooms(st, b).items() if i not in st.excluded_items(user)}
    liked = liked_hosts(st, b, st.request_user(user) if user else None,
                        st.live.positive.get(user, []) if user else [])  # fmt: skip
    ranked = rank_rooms(open_now, st.engagement, time.time(), liked, cfg.host_weight)[:k]
    text = "Live now: {n:g} in the last {m:g} minutes" if lang == "en" else "正在直播"
    lst = ItemList(
        [i for i, *_ in ranked],
        np.asarray([s for _, s, _, _ in ranked], np.float32),
        {"explanation": [{"reasons": [{"kind": "live", "value": e}],
                          "text": text.format(n=e, m=cfg.live_window_s / 60)}
                         for _, _, e, _ in ranked],
         "sources": [["live"]] * len(ranked)},
    )  # fmt: skip
    st.shown(request, "live", list(lst.ids), user, b.label)
    return RecommendationResponse(
        user_id=user, items=present(st, b, lst, True), model_version=b.label
    )
