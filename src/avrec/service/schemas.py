"""Request and response bodies of the HTTP API (pydantic; their examples appear in /docs)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from avrec.language import MAX_QUERY_CHARS

__all__ = [
    "AnonymousRequest",
    "AskRequest",
    "AskResponse",
    "ErasureResponse",
    "EventIn",
    "EventsIn",
    "EventsResult",
    "ItemIn",
    "ItemPatch",
    "ItemOut",
    "RecommendationResponse",
    "RecommendedItem",
    "SearchResponse",
    "TokenRequest",
    "TokenResponse",
    "UserIn",
]


class RecommendedItem(BaseModel):
    item_id: str = Field(examples=["50"])
    score: float = Field(examples=[0.93])
    title: str = Field("", examples=["Star Wars (1977)"])
    image: str | None = Field(None, description="cover or key frame URL or path")
    tags: list[str] = Field(default_factory=list, examples=[["Action", "Sci-Fi"]])
    reasons: list[dict[str, Any]] = Field(
        default_factory=list, description="structured reasons (kind, value)"
    )
    explanation: str = Field("", examples=['Because you watched "Return of the Jedi"'])
    sources: list[str] = Field(default_factory=list, examples=[["collaborative", "next"]])


class RecommendationResponse(BaseModel):
    user_id: str | None = Field(None, examples=["196"])
    items: list[RecommendedItem]
    model_version: str = Field(examples=["pipeline-v3"])
    variant: str | None = Field(
        None, description="the A/B experiment's arm the list was served under (experiment:arm)"
    )
    fallback: bool = Field(
        False, description="the user is unknown: these are the fallback recommendations"
    )
    offset: int = 0
    precomputed: bool = Field(
        False,
        description="the page was kept ahead by avrec precompute (the user has had no event "
        "since), not computed for this request",
    )
    personalised: bool = Field(
        True,
        description="false when the user withdrew consent to personalisation "
        "(PUT /v1/users/{id}/consent): the list an anonymous visitor gets",
    )


class AnonymousEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    item_id: str = Field(min_length=1, max_length=256, examples=["50"])
    event: str = Field(
        "play", max_length=64, examples=["like"], validation_alias=AliasChoices("event", "type")
    )
    value: float | None = None


class AnonymousRequest(BaseModel):
    """A session without an account: what it played, in order."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"items": ["50", "181"], "k": 5}]},
    )
    items: list[str] = Field(default_factory=list, max_length=500, description="played, in order")
    events: list[AnonymousEvent] = Field(default_factory=list, max_length=500)
    k: int = Field(10, ge=1, le=200)
    offset: int = Field(0, ge=0, le=10_000)
    exclude: list[str] = Field(default_factory=list, max_length=1000)
    category: list[str] = Field(default_factory=list, max_length=50)
    language: list[str] = Field(default_factory=list, max_length=50)
    explain: bool = True
    lang: str = Field("en", pattern="^(en|zh)$")


class EventIn(BaseModel):
    """One event, with the field names of event files (``event``, ``timestamp``; ``type``
    and ``ts`` are accepted as aliases). Send an ``idempotency_key`` to make retries safe: a
    key seen before is acknowledged as a duplicate and not counted again."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={
            "examples": [
                {"user_id": "196", "item_id": "50", "event": "like", "idempotency_key": "e-1"}
            ]
        },
    )
    user_id: str = Field(min_length=1, max_length=256)
    item_id: str | None = Field(None, min_length=1, max_length=256)
    event: str = Field(
        "play", min_length=1, max_length=64, validation_alias=AliasChoices("event", "type")
    )
    timestamp: float | None = Field(
        None,
        ge=0,
        le=32503680000,
        description="unix seconds or ISO 8601, as in event files (default: now)",
        validation_alias=AliasChoices("timestamp", "ts"),
    )
    value: float | None = Field(None, description="completion, seconds, rating ...")
    text: str | None = Field(None, max_length=10_000, description="a search query or comment")
    session_id: str | None = Field(None, max_length=256)
    idempotency_key: str | None = Field(None, min_length=1, max_length=256)
    request_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="the X-Request-ID of the list that showed the item: attributes the event "
        "to that impression (kept in the event's context)",
    )

    @field_validator("timestamp", mode="before")
    @classmethod
    def _timestamp(cls, v: Any) -> float | None:
        from avrec.data.schema import parse_timestamp

        if isinstance(v, bool):
            raise ValueError("a timestamp is unix seconds or ISO 8601, not a boolean")
        return parse_timestamp(v)


class EventsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[EventIn] = Field(min_length=1)


class EventResult(BaseModel):
    index: int
    status: str = Field(examples=["accepted"], description="accepted, duplicate or rejected")
    reason: str | None = None


class EventsResult(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    results: list[EventResult]


class PersonIn(BaseModel):
    """A person credited on an item (a live room's host, a film's director ...)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=500)
    role: Literal["actor", "director", "writer", "artist", "creator", "host", "guest",
                  "composer"] = "creator"  # fmt: skip


class ItemPatch(BaseModel):
    """What an update changes (the fields it sends)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"title": "A new title", "tags": ["piano"]}]},
    )
    title: str | None = Field(None, max_length=2000)
    description: str | None = Field(None, max_length=100_000)
    tags: list[str] | None = Field(None, max_length=200)
    categories: list[str] | None = Field(None, max_length=50)
    language: str | None = Field(None, max_length=16)
    duration: float | None = Field(None, ge=0)
    created_at: float | None = Field(None, ge=0)
    image: str | None = Field(None, max_length=2048, description="cover URL or media path")
    video: str | None = Field(None, max_length=2048)
    audio: str | None = Field(None, max_length=2048)
    people: list[PersonIn] | None = Field(None, max_length=200)
    available_from: float | None = Field(
        None, ge=0, description="unix seconds: not recommended before (a live room's start)"
    )
    available_until: float | None = Field(
        None, ge=0, description="unix seconds: never recommended after (a live room's end)"
    )


class ItemIn(ItemPatch):
    """A catalogue item (all fields but the id optional; an update changes what it sends)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "item_id": "v-1001",
                    "title": "Relaxing piano for studying",
                    "tags": ["piano", "study"],
                    "categories": ["Music"],
                    "language": "en",
                    "duration": 3600,
                }
            ]
        },
    )
    item_id: str = Field(min_length=1, max_length=256)


class ItemOut(BaseModel):
    item_id: str
    title: str | None = None
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    categories: list[str] = Field(default_factory=list)
    language: str | None = None
    duration: float | None = None
    created_at: float | None = None
    image: str | None = None
    video: str | None = None
    audio: str | None = None
    people: list[dict[str, Any]] = Field(default_factory=list)
    available_from: float | None = None
    available_until: float | None = None
    in_model: bool = Field(False, description="the served bundle was trained with it")


class UserIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"user_id": "u-42", "attributes": {"country": "FR"}}]},
    )
    user_id: str = Field(min_length=1, max_length=256)
    attributes: dict[str, Any] = Field(default_factory=dict)


class ConsentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    personalisation: bool = Field(
        description="whether answers may use what is known of the user, and their events "
        "may train the models",
        examples=[False],
    )


class ConsentResponse(BaseModel):
    user_id: str
    personalisation: bool
    excluded: bool = Field(description="the user's events are kept out of training")


class ErasureResponse(BaseModel):
    user_id: str
    erased: dict[str, Any] = Field(
        description="what went: events, conversations, the user row, and what the served "
        "model held of them"
    )
    retrain: str = Field(
        description="the retraining that forgets the rest: started, or queued behind one "
        "running (which may have read the user's events before they went)"
    )


class SearchHitOut(BaseModel):
    item_id: str
    title: str = ""
    score: float
    found_by: list[str] = Field(default_factory=list, examples=[["keyword", "title"]])
    matched: dict[str, list[str]] = Field(default_factory=dict)
    image: str | None = None


_TRUNCATED = (
    f"the query was longer than {MAX_QUERY_CHARS:,} characters: only its beginning was read "
    "(and ``query`` echoes that part)"
)


class SearchResponse(BaseModel):
    query: str
    query_truncated: bool = Field(False, description=_TRUNCATED)
    items: list[SearchHitOut]
    model_version: str


class AskRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"query": "a comedy from the 90s, not romance", "user_id": "196", "k": 5},
                {"query": "更短一点", "conversation_id": "c1"},
            ]
        },
    )
    query: str = Field(
        min_length=1, description=f"cut to its first {MAX_QUERY_CHARS:,} characters when longer"
    )
    user_id: str | None = Field(None, max_length=256)
    conversation_id: str | None = Field(None, min_length=1, max_length=128)
    k: int = Field(10, ge=1, le=200)
    weight: float | None = Field(None, ge=0, le=1, description="how much the user's taste counts")
    lang: str | None = Field(None, pattern="^(en|zh)$")


class AskResponse(BaseModel):
    query: str
    query_truncated: bool = Field(False, description=_TRUNCATED)
    text: str = Field(description="what was searched for, constraints taken out")
    constraints: dict[str, Any]
    items: list[RecommendedItem]
    model_version: str
    conversation_id: str | None = None


class TokenRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"user_id": "196", "ttl_s": 3600}]}
    )
    user_id: str = Field(min_length=1, max_length=256)
    ttl_s: float = Field(3600.0, gt=0, le=31_536_000, description="life in seconds (capped "
                         "by AVREC_TOKEN_MAX_TTL_S)")  # fmt: skip


class TokenResponse(BaseModel):
    token: str
    token_type: str = "bearer"
    user_id: str
    expires_at: float = Field(description="unix seconds")
