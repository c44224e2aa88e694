"""Search and requests in words."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from avrec.language import MAX_QUERY_CHARS, clip_query
from avrec.service.deps import ApiError, act_for, bundle, require, service_state
from avrec.service.routes.recommend import _filters, _split, cover_url, present
from avrec.service.schemas import AskRequest, AskResponse, SearchHitOut, SearchResponse
from avrec.service.security import Principal
from avrec.service.state import Bundle, ServiceState

router = APIRouter(prefix="/v1", tags=["language"])


def _search_index(b: Bundle) -> Any:
    s = getattr(b.model, "search", None)
    if s is None:
        raise ApiError(409, "no_search", "the served bundle has no search index: train it again")
    return s


@router.get("/search", response_model=SearchResponse, summary="Search the catalogue")
def search(
    request: Request,
    q: str = Query(
        min_length=1,
        examples=["toy stroy"],
        description=f"cut to its first {MAX_QUERY_CHARS:,} characters when longer",
    ),
    k: int = Query(10, ge=1, le=200),
    mode: str = Query("hybrid", pattern="^(hybrid|keyword|semantic)$"),
    category: str | None = Query(None, max_length=2000),
    language: str | None = Query(None, max_length=200),
    st: ServiceState = Depends(service_state),
    b: Bundle = Depends(bundle),
    who: Principal = Depends(require("read", users=True)),
) -> SearchResponse:
    """BM25 keywords (typos forgiven) and e5 meaning, fused by reciprocal rank."""
    idx = _search_index(b)
    q, truncated = clip_query(q)
    m = b.model
    allowed = m.facts.mask(_filters(_split(category), _split(language)), time.time())
    gone = m.items.index(sorted(st.deleted), missing="ignore") if st.deleted else []
    hits = idx.search(q, k=k, allowed=allowed, mode=mode, exclude=[i for i in gone if i >= 0])
    ids = m.items.lookup([h.item for h in hits])
    rows = st.item_rows(list(ids))
    items = [
        SearchHitOut(
            item_id=i,
            title=m.titles[h.item] or "",
            score=round(h.score, 6),
            found_by=sorted(h.ranks, key=h.ranks.get),
            matched=h.matched,
            image=cover_url(i, rows.get(i, {}).get("image")),
        )
        for i, h in zip(ids, hits, strict=True)
    ]
    st.shown(request, "search", list(ids), who.user if who.is_user else None, b.label)
    return SearchResponse(query=q, query_truncated=truncated, items=items, model_version=b.label)


@router.post("/ask", response_model=AskResponse, summary="Recommendations asked for in words")
def ask(
    request: Request,
    body: AskRequest,
    st: ServiceState = Depends(service_state),
    b: Bundle = Depends(bundle),
    who: Principal = Depends(require("read", users=True)),
) -> AskResponse:
    """Constraints (duration, language, years, genres, "not X", "like <title>") are read by
    rules (and the configured LLM, time-boxed); the rest is matched by meaning and keywords,
    then blended with the user's taste. With ``conversation_id`` each request refines the
    last ("more like the second one", "shorter", "not that one")."""
    from avrec.language.ask import Asker
    from avrec.language.conversation import Conversation

    _search_index(b)
    if b.asker is None:
        llm = None
        if st.ws.config.llm.backend != "none":
            from avrec.errors import ConfigError
            from avrec.language.llm import LanguageModel

            try:
                llm = LanguageModel.from_config(st.ws.config.llm)
            except ConfigError:
                llm = None
        # as in the CLI, the LLM writes the first three sentences, each shown only when
        # grounded in the item's facts (and by a model that passed the start-up check)
        b.asker = Asker(b.model, llm=llm, llm_explain=3 if llm is not None else 0)
    asker = b.asker
    act_for(who, body.user_id)
    user = who.user if who.is_user else body.user_id
    if user is not None and not st.personalises(user):
        user = None  # no consent to personalisation: asked as an anonymous visitor
    conversation = body.conversation_id
    if conversation and who.is_user:  # a token's conversations are its user's alone
        conversation = f"user:{who.user}:{conversation}"
    words: list[str] = []
    if user:
        with st.lock:
            words = st.store.user_texts(user)
    if conversation:  # the conversation's state lives in the store
        res = Conversation(asker, st.locked_store).turn(
            conversation, body.query, user=user, k=body.k, lang=body.lang,
            user_words=words,
        )  # fmt: skip
    else:
        live = st.live.positive.get(user, []) if user else []
        res = asker.ask(
            body.query,
            user=st.request_user(user) if user else None,
            k=body.k,
            lang=body.lang,
            weight=body.weight,
            user_words=words,
            session_items=live or None,
            exclude=st.excluded_items(user),
        )
    if asker.llm is not None:
        from avrec.service.metrics import LLM_SENTENCES

        for status, n in res.llm_sentences.items():
            LLM_SENTENCES.labels(status=status).inc(n)
    st.shown(request, "ask", list(res.items.ids), user, b.label)
    return AskResponse(
        query=res.query,
        query_truncated=res.query_truncated,
        text=res.parsed.text,
        constraints=res.constraints.model_dump(exclude_defaults=True),
        items=present(st, b, res.items, True),
        model_version=b.label,
        conversation_id=body.conversation_id,
    )
