"""What one serving process holds: the workspace's store, the active model bundle (swapped
whole when a newer one is registered), and the events since that bundle was trained.

Several processes (``--workers``) serve one workspace. Each keeps its own copy of the bundle
and learns of what the others wrote from the store: before a request it reads the events with
a larger id than it has seen (a range scan of the primary key, microseconds when nothing is
new) and the change log (items created, updated or deleted, users erased). So an event one
process acknowledged shapes the next request whichever process answers it.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from avrec.errors import StoreError, UnknownEntityError
from avrec.service.metrics import IMPRESSION_LOG, IMPRESSIONS
from avrec.service.mixes import ExplorationPool
from avrec.service.parts import EventWriter, LiveEvents, LockedStore, NewItems, PageCache
from avrec.storage.base import NO_CONSENT
from avrec.workspace import Workspace

log = logging.getLogger(__name__)

__all__ = ["Bundle", "ServiceState"]


@dataclass
class Bundle:
    """A loaded model bundle and where it came from."""

    model: Any
    name: str
    version: int
    path: str
    asker: Any = None
    sample: Any = None  # catalogue rows new items are compared with
    edges: Any = None  # the items' availability windows' edges, sorted (availability_epoch)

    @property
    def label(self) -> str:
        return f"{self.name}-v{self.version}"


class ServiceState:
    """The process' view of the workspace (see the module docstring).

    Args:
        workspace: the workspace served.
        model: the registered model name served.
        durable: fsync every commit.
        refresh_s: how often to look for a newer active bundle.
    """

    def __init__(
        self, workspace: Workspace, model: str = "pipeline", durable: bool = True,
        refresh_s: float = 2.0, cache_s: float = 300.0,
    ) -> None:  # fmt: skip
        self.ws = workspace
        self.model_name = model
        self.store = workspace.store
        self.store.set_durable(durable)
        # a database store tells every node what the others wrote (LISTEN/NOTIFY): a
        # request then reads the event and change logs only when something was written
        self.watch = self.store.watch()
        self.lock = threading.RLock()  # one SQLite connection: one user at a time
        self.locked_store = LockedStore(self.store, self.lock)
        self.refresh_s = refresh_s
        self.live = LiveEvents(workspace.config.weighting)
        self.bundle: Bundle | None = None
        self.erased: set[str] = set()
        self.forgotten: dict[str, list[str]] = {}  # erased user -> what the bundle cleared
        self.no_consent: set[str] = set()  # users who withdrew consent to personalisation
        self.deleted: set[str] = set()
        self.new_items = NewItems()  # created since the bundle
        self._event_cursor = 0
        self._change_cursor = 0
        self._cutoff = 0
        self._checked_at = 0.0
        self._loading = threading.Lock()
        self.retrain_state: dict[str, Any] = {"running": False}
        self.version = 0  # changes applied: part of every cached page's key
        self.pages = PageCache(cache_s)
        self.writer = EventWriter(self)
        from avrec.online.live import Engagement

        online = workspace.config.online
        self.engagement = Engagement(online.live_weights, online.live_window_s)
        self.exploration = ExplorationPool(self)  # the slot's pool, read in the background
        self.explore_rng = np.random.default_rng()
        self._experiments: list[Any] = []
        self._experiments_at = -1e9
        self.arm_bundles: dict[int, Bundle] = {}  # pipeline versions served to an arm
        self.impressions = None  # what each served list showed (avrec.online)
        if online.impressions:
            from avrec.online.impressions import ImpressionLog

            # a connection of their own, so that storing them never holds the lock requests
            # read through (a database store's pool serves threads as it is); a process
            # killed before they are stored still has them in its journal, so their commit
            # needs no fsync of its own
            store = self.store
            if not store.shared:
                from avrec.storage import open_store

                store = open_store(self.store.url)
                store.set_durable(False)
            self.impressions = ImpressionLog(
                workspace.root / "spool" / "impressions", store, self.write_turn,
                online.flush_s,
            )  # fmt: skip
        self._rows = PageCache(300.0, 100_000)  # catalogue rows for display
        self.load_active()
        # the request translation's dictionary (about 1.5 s and 50 MB) is read now, in the
        # background, not by the first request in the other language
        from avrec.language.translate import dictionary

        threading.Thread(target=dictionary, name="avrec-dictionary", daemon=True).start()
        if self.watch is not None:  # nodes swap to a new model without waiting for traffic
            threading.Thread(target=self._follow_models, name="avrec-models", daemon=True).start()

    def _follow_models(self) -> None:
        while True:
            time.sleep(max(0.2, min(self.refresh_s, 2.0)))
            try:
                self.maybe_reload()
            except Exception:  # noqa: BLE001 - the store may be restarting: try next turn
                log.debug("model check failed", exc_info=True)

    # -- the bundle -----------------------------------------------------------------------------
    def load_active(self) -> bool:
        """Load the active bundle when it is not the one held; ``True`` when it changed."""
        from avrec.models import load_model

        with self.lock:
            try:
                rec = self.store.active_model(self.model_name)
            except UnknownEntityError:
                return False
        if self.bundle is not None and (rec.version, rec.path) == (
            self.bundle.version,
            self.bundle.path,
        ):
            return False
        t = time.perf_counter()
        model = load_model(self._bundle_path(rec))
        last = int(rec.metrics.get("last_event_id", 0) or 0)
        changes_at = int(rec.metrics.get("last_change_id", 0) or 0)
        bundle = Bundle(model, rec.name, rec.version, rec.path)
        with self.lock:
            # events since this bundle's training, and what changed since
            self._cutoff = last
            self.live.clear()
            self._event_cursor = last
            self._change_cursor = changes_at
            self.erased.clear()
            self.forgotten.clear()
            self.deleted.clear()
            self.new_items.clear()
            self.no_consent = self.store.without_consent()
            self._apply_changes(bundle, self.store.changes_after(changes_at))
            self._read_events()
            self.version += 1
            self.bundle = bundle  # one assignment: a request holds the old one or the new
        self.new_items.encode_pending()
        log.info("loaded %s in %.2fs", bundle.label, time.perf_counter() - t)
        return True

    def _bundle_path(self, rec: Any) -> str:
        """Where ``rec``'s bundle is on this machine: its registered path, or, for a node on
        another machine, a copy fetched from the shared store into the workspace."""
        from pathlib import Path

        if Path(rec.path).exists():
            return rec.path
        local = self.ws.root / "artifacts" / "store-bundles" / rec.name / str(rec.version)
        # fetched without the process lock: requests go on meanwhile (only a shared store,
        # which is safe across threads, keeps bundles)
        if not local.exists() and self.store.get_bundle(rec.name, rec.version, local) is None:
            raise StoreError(
                f"bundle {rec.name} v{rec.version} is neither at {rec.path} nor in the store"
            )
        return str(local)

    def maybe_reload(self) -> None:
        """Look for a newer active bundle at most every ``refresh_s`` (at once when the store
        says a model was registered); load it in the background, so requests go on with the
        old one meanwhile."""
        now = time.monotonic()
        told = self.watch is not None and self.watch.take("models")
        if not told and now - self._checked_at < self.refresh_s:
            return
        # taken here, not in the thread: two requests at once start one load, not two
        if not self._loading.acquire(blocking=False):
            if told:
                self.watch.mark("models")  # type: ignore[union-attr]  # loading: look again
            return
        self._checked_at = now

        def run() -> None:
            try:
                self.load_active()
            except Exception:  # noqa: BLE001 - a bad bundle must not stop serving
                log.exception("could not load the active bundle; serving the old one")
            finally:
                self._loading.release()

        try:
            threading.Thread(target=run, name="avrec-reload", daemon=True).start()
        except BaseException:  # no thread: the next request may try again
            self._loading.release()
            raise

    # -- what others wrote ----------------------------------------------------------------------
    def refresh(self) -> None:
        """Read the changes and events written since the last look (by any process); with
        a store that notifies, only when it said something was written (this process'
        own writes included: the store marks its watches when it commits)."""
        w = self.watch
        if w is not None:
            events, changes = w.take("events"), w.take("changes")
            if not (events or changes):
                return
        try:
            with self.lock:
                changes = self.store.changes_after(self._change_cursor)
                if changes and self.bundle is not None:
                    self._apply_changes(self.bundle, changes)
                self._read_events()
        except Exception:
            if w is not None:
                w.mark()  # not read: the next request tries again
            raise
        self.new_items.encode_pending()

    def _apply_changes(self, bundle: Bundle, changes: list[tuple]) -> None:
        model = bundle.model
        rebuild = False
        if changes:
            self.version += 1
            self._rows.clear()
        for cid, kind, key, floor in changes:
            self._change_cursor = max(self._change_cursor, cid)
            if kind == "user_erased":
                self.erased.add(key)
                self.forgotten[key] = self._forget(model, key)
                for arm in self.arm_bundles.values():
                    self._forget(arm.model, key)
                self._cutoff = min(self._cutoff, floor)
                rebuild = True
            elif kind == "item_deleted":
                self.deleted.add(key)
                self.new_items.pop(key)
                self.exploration.stale(deleted=key)  # never explored from now on
                self._cutoff = min(self._cutoff, floor)
                rebuild = True
            elif kind == "item":
                self.deleted.discard(key)
                self._note_item(model, key)
                self.exploration.stale(created=key)  # explored from the next requests on
            elif kind == "events_dropped":  # retention: ids above the floor may be reused
                self._cutoff = min(self._cutoff, floor)
                rebuild = True
            elif kind == "consent":
                row = self.store.get_user(key) or {}
                if row.get("exclude_reason") == NO_CONSENT:
                    self.no_consent.add(key)
                else:
                    self.no_consent.discard(key)
        if rebuild:  # event ids above the floor may have been reused: read them again
            self.live.clear()
            self._event_cursor = self._cutoff

    @staticmethod
    def _forget(model: Any, user: str) -> list[str]:
        forget = getattr(model, "forget_users", None)
        return forget([user]) if forget is not None else []

    def _note_item(self, model: Any, item_id: str) -> None:
        """An item created or updated through the API: kept for display, and, when the
        bundle does not know it, as a new item the content sources can offer."""
        rows = self.store.get_items([item_id]).to_dicts()
        if not rows:
            return
        known = model.items.index([item_id], missing="ignore")[0] >= 0
        if not known:
            self.new_items.add(item_id, rows[0])

    def _read_events(self) -> None:
        rows = self.store.events_after(self._event_cursor)
        if rows:
            self._event_cursor = rows[-1][0]
            self.live.add(rows)
            self.engagement.add(rows)

    def shown(
        self, request: Any, surface: str, items: list[str], user_id: str | None,
        model_version: str | None, offset: int = 0, variant: str | None = None,
        propensities: list[float] | None = None,
    ) -> None:  # fmt: skip
        """Log a served list as impressions (when ``[online] impressions`` is on)."""
        if self.impressions is None or not items:
            return
        start = time.perf_counter()
        rid = request.scope.get("state", {}).get("request_id") or ""
        self.impressions.log(rid, surface, items, user_id, model_version, offset, variant,
                             propensities)  # fmt: skip
        IMPRESSIONS.labels(surface=surface).inc(len(items))
        IMPRESSION_LOG.observe(time.perf_counter() - start)

    # -- experiments ----------------------------------------------------------------------------
    def experiments(self) -> list[Any]:
        """The experiments in the store (state ``experiment``), read again every few
        seconds: a change made through any node reaches every node."""
        from avrec.online.experiments import ExperimentConfig

        now = time.monotonic()
        if now - self._experiments_at > 2.0:
            with self.lock:
                raw = self.store.states("experiment")
            self._experiments = [ExperimentConfig(**v) for _, v in sorted(raw.items())]
            self._experiments_at = now
        return self._experiments

    def experiments_changed(self) -> None:
        """Read the experiments again at the next request (this process: at once)."""
        self._experiments_at = -1e9

    def arm(self, user_id: str, surface: str) -> tuple[str, Any] | None:
        """The running experiment's arm for this user on this surface: its label
        (``experiment:variant``) and the variant."""
        from avrec.online.experiments import assign

        now = time.time()
        for exp in self.experiments():
            if exp.surface == surface and exp.running(now):
                v = assign(exp, user_id)
                return f"{exp.name}:{v.name}", v
        return None

    def arm_bundle(self, version: int) -> Bundle | None:
        """Registered pipeline version ``version``, loaded once for the arms that are served
        it (what the active bundle forgot of erased users, it forgets too)."""
        from avrec.models import load_model

        b = self.arm_bundles.get(version)
        if b is not None:
            return b
        with self.lock:
            recs = [r for r in self.store.models(self.model_name) if r.version == version]
        if not recs:
            return None
        rec = recs[0]
        b = Bundle(load_model(self._bundle_path(rec)), rec.name, rec.version, rec.path)
        for user in sorted(self.erased):
            self._forget(b.model, user)
        self.arm_bundles[version] = b
        return b

    def write_turn(self) -> Any:
        """The workspace's write turn across processes (an ``flock``): a worker waiting for
        the other's transaction wakes the moment it ends, where SQLite's own busy handler
        would poll with sleeps of up to 100 ms."""
        import contextlib
        import fcntl

        if self.store.shared:  # the database orders its writers itself, across machines
            return contextlib.nullcontext()

        @contextlib.contextmanager
        def turn() -> Any:
            with open(self.ws.root / ".write.lock", "a+b") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(f, fcntl.LOCK_UN)

        return turn()

    # -- requests -------------------------------------------------------------------------------
    def request_user(self, user: str) -> str:
        """The id a user is asked under: an erased user is a stranger to the bundle (their
        new events still count, through the live history)."""
        return f"\x00erased:{user}" if user in self.erased else user

    def personalises(self, user: str | None) -> bool:
        """Whether answers to ``user`` may use what is known of them: not for a user who
        withdrew consent to personalisation (they get what an anonymous visitor gets)."""
        return user is not None and user not in self.no_consent

    def knows(self, user: str) -> bool:
        b = self.bundle
        if b is None or user in self.erased:
            return False
        return bool(b.model.users.index([user], missing="ignore")[0] >= 0)

    def precomputed(self, b: Bundle, user: str, k: int, offset: int, lang: str) -> Any | None:
        """The user's page from ``avrec precompute`` (an ``ItemList`` of ``offset + k``
        items, then cut to the request), when nothing has made it stale: made by the served
        bundle in this language and long enough; no event of the user since training, no
        erasure, no new item (those pages mix new items in); deleted items left out."""
        facts = getattr(b.model, "facts", None)
        if (
            user in self.erased
            or user in self.live.positive
            or user in self.live.negative
            or len(self.new_items)
            or (facts is not None and facts.windowed)  # what is available changes with time
        ):
            return None
        from avrec.pipeline.precompute import PAGE_KIND, page_list

        with self.lock:
            rec = self.store.get_state(PAGE_KIND, user)
        if not rec or rec.get("model") != b.label or rec.get("lang") != lang:
            return None
        lst = page_list(rec, self.deleted)
        if len(lst) < offset + k and len(rec["ids"]) >= int(rec["k"]):
            return None  # the request reaches past what was kept (a full page: more exist)
        lst.ids, lst.scores = lst.ids[offset : offset + k], lst.scores[offset : offset + k]
        lst.fields = {f: v[offset : offset + k] for f, v in lst.fields.items()}
        return lst

    def excluded_items(self, user: str | None) -> list[str]:
        out = list(self.deleted)
        if user is not None:
            out += list(self.live.negative.get(user, ()))
        return out

    # -- retraining -----------------------------------------------------------------------------
    def retrain(self) -> str:
        """Train a new bundle in a child process (``avrec train``), which registers it active;
        every process then swaps to it at its next look. ``"started"``, or ``"queued"`` when
        one is running: that one may have read the store before what asked for this one (an
        erasure), so another starts when it ends; asks while one waits share it."""
        with self.lock:
            if self.retrain_state.get("running"):
                self.retrain_state["queued"] = True
                return "queued"
            self.retrain_state = {"running": True, "started_at": time.time(), "runs": 0}

        def run() -> None:
            while True:
                t = time.time()
                cmd = [sys.executable, "-m", "avrec", "--workspace", str(self.ws.root), "train"]
                try:
                    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=6 * 3600)
                    ok = proc.returncode == 0
                    tail = (proc.stdout + proc.stderr)[-2000:]
                except Exception as exc:  # noqa: BLE001
                    ok, tail = False, f"{type(exc).__name__}: {exc}"
                if not ok:
                    log.error("retraining failed: %s", tail)
                if ok:
                    self._checked_at = 0.0
                    self.maybe_reload()
                with self.lock:
                    again = bool(self.retrain_state.get("queued"))
                    runs = int(self.retrain_state.get("runs", 0)) + 1
                    self.retrain_state = {
                        "running": again,
                        "runs": runs,
                        "ok": ok,
                        "seconds": round(time.time() - t, 1),
                        "finished_at": time.time(),
                        **({} if ok else {"error": tail}),
                        **({"started_at": time.time()} if again else {}),
                    }
                if not again:
                    return

        threading.Thread(target=run, name="avrec-retrain", daemon=True).start()
        return "started"

    def item_rows(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """Catalogue rows (title, image ...) for display, kept a while (a change to the
        catalogue clears them)."""
        out, todo = {}, []
        for i in dict.fromkeys(ids):
            row = self._rows.get(i)
            if row is None:
                todo.append(i)
            else:
                out[i] = row
        if todo:
            with self.lock:
                df = self.store.get_items(todo)
            found = {r["item_id"]: r for r in df.to_dicts()}
            for i in todo:
                row = found.get(i, {})
                self._rows.put(i, row)
                out[i] = row
        return {i: r for i, r in out.items() if r}

    def page_key(self, user: str | None, *params: Any) -> tuple:
        """What a cached page depends on: the bundle, the catalogue's changes, the user's
        events since training, and the request's parameters."""
        b = self.bundle
        live = (len(self.live.positive.get(user, ())), len(self.live.negative.get(user, ())))
        return (b.label if b else "", self.version, len(self.new_items.vectors), user, live,
                self.availability_epoch(b), *params)  # fmt: skip

    def availability_epoch(self, b: Bundle | None) -> int:
        """How many availability windows of the bundle's items have opened or closed by now:
        a cached page is stale the moment one does (an item that ends leaves it at once)."""
        now = time.time()
        new = 0  # items created since the bundle, with their own windows
        for row in list(self.new_items.rows.values()):
            for key in ("available_from", "available_until"):
                edge = row.get(key)
                new += edge is not None and edge <= now
        facts = getattr(b.model, "facts", None) if b is not None else None
        if facts is None or not facts.windowed:
            return new
        edges = getattr(b, "edges", None)
        if edges is None:
            both = np.concatenate([facts.available_from, facts.available_until])
            edges = np.sort(both[np.isfinite(both)])
            b.edges = edges
        return new + int(np.searchsorted(edges, now, side="right"))
