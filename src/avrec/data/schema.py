"""The data model: items, people, users and events.

These pydantic models document and validate the canonical form of avrec's data. Ingestion accepts
files whose columns use the canonical names below (or are mapped onto them) and turns every row into
these shapes; the store keeps them; loaders for public datasets produce them.

Canonical item columns: ``item_id, title, description, tags, categories, language, duration,
created_at, video, audio, image, subtitles, people, available_from, available_until``; any other
column is kept in ``attributes``.

Canonical event columns: ``user_id, item_id, event, value, timestamp, session_id, text, context``;
any other column is kept in ``context``.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "BUILTIN_EVENT_TYPES",
    "EVENT_COLUMNS",
    "ITEM_COLUMNS",
    "ITEM_LIST_COLUMNS",
    "ITEM_STORE_SCHEMA",
    "MEDIA_COLUMNS",
    "USER_COLUMNS",
    "Event",
    "EventType",
    "Item",
    "MediaRef",
    "Person",
    "Role",
    "MAX_ID_CHARS",
    "User",
    "check_id",
    "parse_timestamp",
    "split_list",
]


class EventType(StrEnum):
    """Built-in event types. Custom types are declared in the workspace config."""

    PLAY = "play"
    VIEW = "view"
    LIKE = "like"
    DISLIKE = "dislike"
    COMMENT = "comment"
    SHARE = "share"
    SEARCH = "search"
    SKIP = "skip"
    RATE = "rate"
    COMPLETE = "complete"


BUILTIN_EVENT_TYPES: tuple[str, ...] = tuple(t.value for t in EventType)


class Role(StrEnum):
    """Roles a person can have on an item."""

    ACTOR = "actor"
    DIRECTOR = "director"
    WRITER = "writer"
    ARTIST = "artist"
    CREATOR = "creator"
    HOST = "host"
    GUEST = "guest"
    COMPOSER = "composer"


ITEM_COLUMNS: tuple[str, ...] = (
    "item_id",
    "title",
    "description",
    "tags",
    "categories",
    "language",
    "duration",
    "created_at",
    "video",
    "audio",
    "image",
    "subtitles",
    "people",
    "available_from",
    "available_until",
)
ITEM_LIST_COLUMNS: tuple[str, ...] = ("tags", "categories")
MEDIA_COLUMNS: tuple[str, ...] = ("video", "audio", "image", "subtitles")
EVENT_COLUMNS: tuple[str, ...] = (
    "user_id",
    "item_id",
    "event",
    "value",
    "timestamp",
    "session_id",
    "text",
    "context",
)
USER_COLUMNS: tuple[str, ...] = ("user_id",)

#: Item columns as stored and exchanged between ingestion and stores: list and object fields as
#: JSON text, times and durations in seconds.
ITEM_STORE_SCHEMA: dict[str, Any] = {
    "item_id": pl.String,
    "title": pl.String,
    "description": pl.String,
    "tags": pl.String,
    "categories": pl.String,
    "language": pl.String,
    "duration": pl.Float64,
    "created_at": pl.Float64,
    "video": pl.String,
    "audio": pl.String,
    "image": pl.String,
    "subtitles": pl.String,
    "people": pl.String,
    "available_from": pl.Float64,
    "available_until": pl.Float64,
    "attributes": pl.String,
}


MAX_ID_CHARS = 256
#: the times a datetime can show: 0001-01-01 to 9999-12-31T23:59:59 UTC
TIMESTAMP_RANGE = (-62135596800.0, 253402300799.0)


def check_id(value: Any, name: str = "id") -> str:
    """An external id as stored: text, stripped, 1 to :data:`MAX_ID_CHARS` characters and no
    control characters (a NUL or newline in an id breaks files, logs and URLs downstream).

    Raises:
        ValueError: the id is empty, too long or holds a control character.
    """
    text = str(value).strip() if isinstance(value, int | float | str) else None
    if not text:
        raise ValueError(f"{name} is empty")
    if len(text) > MAX_ID_CHARS:
        raise ValueError(f"{name} is {len(text):,} characters long; at most {MAX_ID_CHARS}")
    bad = next((c for c in text if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        raise ValueError(f"{name} holds the control character {bad!r}")
    return text


def _in_range(ts: float, value: Any) -> float:
    if not math.isfinite(ts):
        raise ValueError(f"timestamp {value!r} is not finite")
    if not TIMESTAMP_RANGE[0] <= ts <= TIMESTAMP_RANGE[1]:
        raise ValueError(f"timestamp {value!r} is outside the years 1 to 9999")
    return ts


def parse_timestamp(value: Any) -> float | None:
    """Turn an ISO 8601 string, a datetime or Unix seconds into Unix seconds (UTC).

    Naive ISO times are taken as UTC. Returns ``None`` for empty input.

    Raises:
        ValueError: the value is not a timestamp.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=UTC)
        return _in_range(dt.timestamp(), value)
    if isinstance(value, int | float):
        return _in_range(float(value), value)
    text = str(value).strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return _in_range(number, value)
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"unparsable timestamp {value!r} (use ISO 8601 or Unix seconds)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return _in_range(dt.timestamp(), value)


def split_list(value: Any) -> list[str]:
    """Parse a list field: a JSON list, a ``|``-separated string, or a Python list."""
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if v is not None and str(v).strip()]
    text = str(value).strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"list field is not valid JSON: {exc.msg}") from None
        if not isinstance(parsed, list):
            raise ValueError("list field must be a JSON list")
        return [str(v).strip() for v in parsed if v is not None and str(v).strip()]
    return [part.strip() for part in text.split("|") if part.strip()]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Person(_Model):
    """A person credited on an item."""

    name: str = Field(min_length=1)
    role: Role = Role.CREATOR


class MediaRef(_Model):
    """A reference to a media file: a local path or an http(s) URL."""

    uri: str = Field(min_length=1)

    @field_validator("uri")
    @classmethod
    def _scheme(cls, uri: str) -> str:
        if "://" in uri and not uri.lower().startswith(("http://", "https://", "file://")):
            raise ValueError(f"unsupported media URL scheme in {uri!r} (use a path or http(s))")
        return uri

    @property
    def is_remote(self) -> bool:
        return self.uri.lower().startswith(("http://", "https://"))


class Item(_Model):
    """A recommendable item: a video, a track, an episode, a live stream.

    Attributes:
        item_id: the external id.
        duration: length in seconds.
        created_at: release or upload time, Unix seconds.
        available_from, available_until: the window (Unix seconds) in which the item may be
            recommended; ``None`` means open on that side. Live streams and expiring items use it.
        attributes: any other fields of the source row.
    """

    item_id: str = Field(min_length=1)
    title: str | None = None
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    categories: list[str] = Field(default_factory=list)
    language: str | None = None
    duration: float | None = Field(default=None, ge=0)
    created_at: float | None = None
    video: MediaRef | None = None
    audio: MediaRef | None = None
    image: MediaRef | None = None
    subtitles: MediaRef | None = None
    people: list[Person] = Field(default_factory=list)
    available_from: float | None = None
    available_until: float | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)

    @field_validator("item_id", mode="before")
    @classmethod
    def _id(cls, v: Any) -> Any:
        return check_id(v, "item_id")

    @field_validator("tags", "categories", mode="before")
    @classmethod
    def _lists(cls, v: Any) -> list[str]:
        return split_list(v)

    @field_validator("created_at", "available_from", "available_until", mode="before")
    @classmethod
    def _times(cls, v: Any) -> float | None:
        return parse_timestamp(v)

    @field_validator("duration", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float | None:
        return parse_duration(v)

    @field_validator("video", "audio", "image", "subtitles", mode="before")
    @classmethod
    def _media(cls, v: Any) -> Any:
        if v is None or (isinstance(v, str) and not v.strip()):
            return None
        return {"uri": v} if isinstance(v, str) else v

    @field_validator("people", mode="before")
    @classmethod
    def _people(cls, v: Any) -> Any:
        if v is None or (isinstance(v, str) and not v.strip()):
            return []
        if isinstance(v, str):
            try:
                v = json.loads(v)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f'people must be a JSON list like [{{"name": ..., "role": ...}}]: {exc.msg}'
                ) from None
        if not isinstance(v, list):
            raise ValueError("people must be a list")
        return v

    @model_validator(mode="after")
    def _window(self) -> Item:
        if (
            self.available_from is not None
            and self.available_until is not None
            and self.available_until < self.available_from
        ):
            raise ValueError("available_until is before available_from")
        return self

    def is_available(self, at: float) -> bool:
        """Whether the item may be recommended at Unix time ``at``."""
        if self.available_from is not None and at < self.available_from:
            return False
        return not (self.available_until is not None and at >= self.available_until)


def parse_duration(v: Any) -> float | None:
    """Seconds from a number, ``"HH:MM:SS"``/``"MM:SS"``, or ``"1h 46min"``-style text."""
    if v is None:
        return None
    if isinstance(v, int | float):
        return float(v)
    text = str(v).strip().lower()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    if ":" in text:
        parts = text.split(":")
        try:
            nums = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"unparsable duration {v!r}") from None
        total = 0.0
        for n in nums:
            total = total * 60 + n
        return total
    import re

    match = re.fullmatch(r"(?:(\d+)\s*h)?\s*(?:(\d+)\s*min)?\s*(?:(\d+)\s*s)?", text)
    if match and any(match.groups()):
        h, m, s = (int(g) if g else 0 for g in match.groups())
        return float(h * 3600 + m * 60 + s)
    raise ValueError(f"unparsable duration {v!r} (seconds, HH:MM:SS or '1h 46min')")


class User(_Model):
    """A user: the external id and free attributes (age band, region, ...)."""

    user_id: str = Field(min_length=1)
    attributes: dict[str, Any] = Field(default_factory=dict)

    @field_validator("user_id", mode="before")
    @classmethod
    def _id(cls, v: Any) -> Any:
        return check_id(v, "user_id")


class Event(_Model):
    """One behaviour event.

    Attributes:
        event: a built-in :class:`EventType` value or a custom type declared in the config.
        value: a rating, watch seconds or completion ratio, depending on the type.
        text: a comment or a search query.
        timestamp: Unix seconds (UTC).
        context: free context (device, page, ...).
    """

    user_id: str = Field(min_length=1)
    item_id: str | None = None
    event: str = EventType.PLAY.value
    value: float | None = None
    timestamp: float
    session_id: str | None = None
    text: str | None = None
    context: dict[str, Any] = Field(default_factory=dict)

    @field_validator("timestamp", mode="before")
    @classmethod
    def _ts(cls, v: Any) -> float | None:
        return parse_timestamp(v)

    @model_validator(mode="after")
    def _item_needed(self) -> Event:
        if self.item_id is None and self.event != EventType.SEARCH:
            raise ValueError(f"event type {self.event!r} needs an item_id")
        return self
