"""Configuration in layers (see ``STYLE.md``).

- :class:`Settings`: runtime settings from ``AVREC_*`` environment variables, built by the CLI or
  the app factory, never at import time.
- :class:`WorkspaceConfig`: the workspace's ``avrec.toml``; each section is the pydantic config of
  one component with documented defaults. ``avrec.example.toml`` lists every key.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from avrec.data.weighting import EventWeighting
from avrec.errors import ConfigError
from avrec.language.llm import LLMConfig

__all__ = ["EventsConfig", "IngestConfig", "Settings", "StoreConfig", "WorkspaceConfig"]


M = TypeVar("M", bound=BaseModel)


class Settings(BaseSettings):
    """Runtime settings, read from ``AVREC_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="AVREC_", extra="ignore")

    data_dir: Path | None = Field(None, description="where public datasets live (AVREC_DATA_DIR)")
    workspace: Path | None = Field(None, description="default workspace (AVREC_WORKSPACE)")
    cache_dir: Path = Field(Path.home() / ".cache" / "avrec", description="downloads and caches")
    offline: bool = Field(False, description="never download public datasets")
    store_url: str | None = Field(
        None, description="the store, over the workspace's [store] url (AVREC_STORE_URL)"
    )
    log_level: str = "WARNING"


class StoreConfig(BaseModel):
    """``[store]``: where the catalogue, users, events and model registry live."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        "sqlite:///avrec.db",
        description="relative paths are inside the workspace; postgresql://user:password@host"
        ":port/database for several serving nodes on one database (AVREC_STORE_URL wins)",
    )


class ComputeConfig(BaseModel):
    """``[compute]``: where the heavy commands run (``avrec analyze``)."""

    model_config = ConfigDict(extra="forbid")

    engine: Literal["local", "ray"] = Field(
        "local",
        description="local: processes on this machine; ray: a Ray cluster (the scale extra)",
    )
    address: str | None = Field(
        None,
        description="the Ray cluster to join (RAY_ADDRESS wins; neither: a local one)",
    )


class EventsConfig(BaseModel):
    """``[events]``: accepted event types."""

    model_config = ConfigDict(extra="forbid")

    custom_types: list[str] = Field(default_factory=list, description="types beyond the built-ins")
    default_type: str = Field("play", description="type of rows with no event column")


class IngestConfig(BaseModel):
    """``[ingest]``: how files are read."""

    model_config = ConfigDict(extra="forbid")

    chunk_bytes: int = Field(16 * 1024 * 1024, gt=0, description="bytes read per chunk")
    rejects_dir: str = Field("rejects", description="where rejects files go (in the workspace)")
    max_reject_ratio: float = Field(
        1.0, ge=0, le=1, description="fail the ingest when more than this share of rows is rejected"
    )
    mapping: dict[Literal["items", "events", "users"], dict[str, str]] = Field(
        default_factory=dict,
        description="per kind, canonical name -> column in your files; --map overrides it",
    )
    max_row_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="a longer line (or quoted record) is rejected with its line, unread; "
        "with chunk_bytes it bounds the memory one file can take",
    )
    max_columns: int = Field(
        1000, ge=1, description="a file with a wider header is refused before any row is read"
    )
    timestamp_unit: Literal["s", "ms", "us"] = Field(
        "s", description="unit of numeric event timestamps (ISO 8601 text is unaffected)"
    )
    earliest_event: str = Field(
        "1970-01-01T00:00:00Z", description="events timed before this are rejected (ISO 8601)"
    )
    latest_event_ahead_s: float = Field(
        86400.0, ge=0, description="events timed more than this many seconds after now are rejected"
    )

    @field_validator("earliest_event")
    @classmethod
    def _earliest(cls, v: str) -> str:
        from avrec.data.schema import parse_timestamp

        try:
            parse_timestamp(v)
        except ValueError as exc:
            raise ValueError(f"earliest_event: {exc}") from None
        return v

    def event_window(self, now: float | None = None) -> tuple[float, float]:
        """The times (Unix seconds) an event may carry: from ``earliest_event`` to
        ``latest_event_ahead_s`` past ``now``."""
        import time

        from avrec.data.schema import parse_timestamp

        lo = parse_timestamp(self.earliest_event)
        assert lo is not None
        return lo, (time.time() if now is None else now) + self.latest_event_ahead_s


class ContentConfig(BaseModel):
    """``[content]``: how ``avrec analyze`` turns media and text into vectors and tags."""

    model_config = ConfigDict(extra="forbid")

    text_encoder: str = Field("e5-small", description="registry name of the text encoder")
    image_encoder: str = Field("efficientnet-lite0", description="key frames, covers, posters")
    speech: bool = Field(True, description="speech recognition, language and voice embedding")
    audio_features: bool = Field(True, description="librosa signal statistics")
    ocr: bool = Field(True, description="text on screen, in key frames and covers")
    max_frames: int = Field(8, ge=1, le=64, description="key frames per video")
    ocr_frames: int = Field(
        4, ge=0, le=64, description="key frames read by OCR (evenly spread), besides covers"
    )
    max_audio_seconds: float = Field(600.0, gt=0, description="audio analysed per item")
    media_roots: list[str] = Field(
        default_factory=list,
        description="folders local media may come from, besides the workspace's media/ "
        "folder and the folders of public datasets loaded into it (no other path is read)",
    )
    media_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="internal hosts (names, addresses or CIDR networks) media may be "
        "downloaded from; any other host must resolve to public addresses only",
    )
    max_download_mb: int = Field(500, gt=0, description="largest http(s) media download")
    download_timeout_s: float = Field(30.0, gt=0, description="network timeout per read")
    download_total_s: float = Field(
        300.0, gt=0, description="the most one download may take, redirects included"
    )
    workers: int = Field(1, ge=0, description="processes analysing media (0: one per core)")
    text_weights: dict[str, float] = Field(
        default_factory=lambda: {"primary": 1.0, "transcript": 0.6, "ocr": 0.3, "comments": 0.3},
        description="weight of each text segment in the text vector",
    )
    fusion_weights: dict[str, float] = Field(
        default_factory=lambda: {"text": 1.0, "visual": 0.5, "audio": 0.3, "audio_signal": 0.2},
        description="weight of each modality in the fused vector",
    )
    tag_vocabulary: list[str] = Field(
        default_factory=list, description="zero-shot tags (empty: the catalogue's tags and genres)"
    )
    tag_min_items: int = Field(
        2, ge=1, description="default vocabulary: catalogue tags used by at least this many items"
    )
    tag_source_weights: dict[str, float] = Field(
        default_factory=lambda: {"text": 1.0, "speech": 0.6, "ocr": 0.3, "visual": 0.5},
        description="weight of each source of evidence in an item's tag scores",
    )
    max_tags: int = Field(5, ge=0, description="zero-shot tags kept per item")
    min_tag_score: float = Field(0.15, ge=0, le=1, description="smallest tag probability kept")
    max_keywords: int = Field(10, ge=0, description="keywords kept per item")


class PrivacyConfig(BaseModel):
    """``[privacy]``: what is kept about people, and for how long."""

    model_config = ConfigDict(extra="forbid")

    retention_days: float | None = Field(
        None,
        gt=0,
        description="events older than this many days are deleted before each training "
        "(avrec train, and so every scheduled retraining): rows in SQLite, whole months in "
        "PostgreSQL; None keeps them",
    )
    pseudonymous_ids: bool = Field(
        False,
        description="replace every user id at ingest, in the HTTP API and in the CLI by a "
        "keyed HMAC (avrec.privacy.pseudonyms), so the store never holds the platform's ids",
    )
    release_budget_per_day: float = Field(
        1.0,
        gt=0,
        description="the epsilon that differentially private releases (avrec release) may "
        "spend per UTC day, all together; the ledger in the store refuses more",
    )
    release_epsilon: float = Field(1.0, gt=0, description="one release's epsilon by default")
    release_mechanism: Literal["top_k", "counts"] = Field(
        "top_k",  # the best overlap@50 at epsilon 1 on MovieLens-100K (benchmarks/privacy.py)
        description="top_k: the ranked items alone, by OpenDP's noisy top-k over distinct "
        "users per item ((epsilon, release_delta)-DP, no user bounded); counts: the items "
        "and their noisy counts, each user bounded to release_items_per_user (pure DP)",
    )
    release_delta: float = Field(
        1e-6, gt=0, lt=1, description="the delta of a top_k release (its epsilon is spent)"
    )
    release_items_per_user: int = Field(
        10,  # the best overlap@50 at epsilon 1 on MovieLens-100K (benchmarks/privacy.py)
        ge=1,
        description="a counts release counts each user for at most this many distinct items "
        "(a uniform sample of theirs): the user-level sensitivity the noise is scaled to",
    )
    release_events_per_user: int = Field(
        500,  # the least error of events and pairs at epsilon 1 on MovieLens-100K
        ge=1,  # (benchmarks/privacy_stats.py)
        description="avrec release stats counts each user for at most this many events (a "
        "uniform sample): the sensitivity of its event counts",
    )
    id_key_env: str = Field(
        "AVREC_ID_KEY",
        min_length=1,
        description="the environment variable holding the pseudonyms' key (at least 16 "
        "bytes, the same on every machine; never stored)",
    )


class OnlineConfig(BaseModel):
    """``[online]``: impressions and online metrics (avrec.online)."""

    model_config = ConfigDict(extra="forbid")

    impressions: bool = Field(
        True, description="log every served list as impressions (what each person was shown)"
    )
    flush_s: float = Field(1.0, gt=0, le=300, description="seconds between moves to the store")
    attribution_window_s: float = Field(
        86400.0,
        gt=0,
        description="an event of the shown item by the same user within this many seconds "
        "after an impression is attributed to it (an echoed request_id always is)",
    )
    click_events: list[str] = Field(
        default_factory=lambda: ["play", "view"], description="what counts as a click"
    )
    completion_at: float = Field(
        0.9, gt=0, le=1, description="a play whose value (completion) reaches this completes"
    )
    explore_rate: float = Field(
        0.0,
        ge=0,
        le=1,
        description="how often a user's first page shows, at explore_slot, an item drawn from "
        "the fresh and cold ones (logged with its propensity); 0: never",
    )
    explore_slot: int = Field(2, ge=0, description="the exploring position (0: the first)")
    explore_fresh_share: float = Field(
        0.9, ge=0, le=1,
        description="of the explored slots, the share drawn from the fresh items (the rest "
        "from the cold ones), when there are both (0.9: chosen in the simulator, "
        "benchmarks/online_sim.py --sweep)",
    )  # fmt: skip
    mix_new: bool = Field(
        True, description="put new items close to a person's taste in their first pages"
    )
    fresh_days: float = Field(7.0, gt=0, description="an item created this recently is fresh")
    cold_impressions: int = Field(
        20, ge=1, description="an item shown fewer times than this (in 30 days) is cold"
    )
    live_category: str = Field("live", min_length=1, description="the category of live rooms")
    live_window_s: float = Field(
        600.0, gt=0, description="a room's engagement counts its events of these last seconds"
    )
    live_weights: dict[str, float] = Field(
        default_factory=lambda: {
            "join": 1.0,
            "chat": 1.0,
            "like": 2.0,
            "gift": 5.0,
            "play": 1.0,
        },  # fmt: skip
        description="engagement per event type (declare join, chat, gift in [events] custom_types)",
    )
    live_slots: int = Field(
        1, ge=0, description="rooms live now put first on a user's first page (0: none)"
    )
    host_weight: float = Field(
        1.0,
        ge=0,
        description="a room's score: log(1 + engagement) + host_weight * the user's liked "
        "items of the room's host",
    )


class WorkspaceConfig(BaseModel):
    """The whole ``avrec.toml``."""

    model_config = ConfigDict(extra="forbid")

    store: StoreConfig = Field(default_factory=StoreConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    weighting: EventWeighting = Field(default_factory=EventWeighting)
    content: ContentConfig = Field(default_factory=ContentConfig)
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    online: OnlineConfig = Field(default_factory=OnlineConfig)

    @classmethod
    def load(cls, path: Path) -> WorkspaceConfig:
        """Read and validate a TOML file.

        Raises:
            ConfigError: the file is missing, not TOML, or has an invalid key or value.
        """
        return load_toml_model(cls, path)

    def event_types(self) -> set[str]:
        """Every accepted event type: built-ins, custom types and types with a weighting rule."""
        from avrec.data.schema import BUILTIN_EVENT_TYPES

        return set(BUILTIN_EVENT_TYPES) | set(self.events.custom_types) | set(self.weighting.rules)


def load_toml_model(cls: type[M], path: str | Path, what: str = "config file") -> M:
    """A pydantic model read from a TOML file.

    Raises:
        ConfigError: the file is missing, not TOML, or has an invalid key or value (the message
            names the file and the key).
    """
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: [{where}] {first['msg']}") from None
