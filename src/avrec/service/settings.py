"""The service's runtime settings, from ``AVREC_*`` environment variables (built by the app
factory, never at import time)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ServiceSettings"]


class ServiceSettings(BaseSettings):
    """What ``avrec serve`` reads from the environment.

    Keys are given as ``AVREC_API_KEYS="key:scope,key:scope"`` (scopes ``read``, ``write``,
    ``admin``, each including the ones before it) or in a keys file (``avrec keys add``
    writes one, hashed). Outside dev mode a placeholder key is refused and at least one key
    is required.
    """

    model_config = SettingsConfigDict(env_prefix="AVREC_", extra="ignore")

    workspace: Path | None = Field(None, description="the workspace served (AVREC_WORKSPACE)")
    api_keys: str = Field("", description='"key:scope,key:scope"; hashed when read')
    api_keys_file: Path | None = Field(
        None, description="keys file (default: api-keys.txt in the workspace when present)"
    )
    dev: bool = Field(
        False, description="dev mode: placeholder keys allowed; no keys at all means open access"
    )
    cors_origins: str = Field("", description="comma-separated origins allowed by CORS")
    rate_limit: str = Field(
        "2000/second", description="per key (or per client address without keys), limits' syntax"
    )
    auth_fail_limit: int = Field(
        20,
        ge=0,
        description="failed authentications one client address may make in a window "
        "before all its requests are refused until the window ends (0: no limit); counted "
        "in the store, so across every worker",
    )
    auth_fail_window_s: float = Field(60.0, gt=0, description="the window of auth_fail_limit")
    token_secret: str = Field(
        "",
        description="secret that signs user tokens (default: the workspace's token-secret "
        "file, made once with a random secret)",
    )
    token_max_ttl_s: float = Field(
        86_400.0, gt=0, description="the longest life a user token may be given"
    )
    max_body_bytes: int = Field(1_000_000, gt=0, description="largest request body")
    max_batch: int = Field(1000, gt=0, description="most events in one POST /v1/events")
    max_k: int = Field(200, gt=0, description="most items one list may ask for")
    durable: bool = Field(True, description="every acknowledged write is fsynced to disk")
    refresh_s: float = Field(
        2.0, ge=0, description="how often a process looks for a newer active model bundle"
    )
    retrain_every_s: float = Field(
        0.0, ge=0, description="retrain on this schedule, in seconds (0: only on demand)"
    )
    retrain_on_erasure: bool = Field(
        True, description="erasing a user starts a retraining (their items' traces go too)"
    )
    cache_s: float = Field(
        300.0,
        ge=0,
        description="a user's page is reused this long unless their events or "
        "the catalogue change (0: never)",
    )
    threads: int = Field(
        4, ge=1, le=256, description="requests one process works on at once (the rest queue)"
    )
    model: str = Field("pipeline", description="the registered model served")
    store_wait_s: float = Field(
        60.0,
        ge=0,
        description="how long a starting process waits for a database store that cannot be "
        "reached yet (down or starting), saying so",
    )
    log_json: bool = Field(True, description="structured (JSON) request logs")
