"""What a serving process mixes into a pipeline's page (:mod:`avrec.service.routes`): items
created since the bundle (by their text), the rooms live now, and the exploration slot's
pool, read from the store in the background.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from avrec.online.explore import ExplorePool
from avrec.service.parts import LockedStore, passes

if TYPE_CHECKING:
    from avrec.service.state import Bundle, ServiceState

log = logging.getLogger(__name__)

__all__ = ["ExplorationPool", "liked_hosts", "mix_live", "mix_new", "rooms"]


class ExplorationPool:
    """The items exploration draws from: fresh (created in the last ``fresh_days``, or
    through the API since the bundle) and cold (fewer than ``cold_impressions`` impressions
    in 30 days); available now, not deleted. The store counts them in one query; a request
    takes the last pool at once, and one older than a minute, or one a catalogue change
    made stale, is read again in the background (only the first is read on the request's
    own thread, one read at a time).

    A change that arrives while a read is in flight makes that read's pool stale as soon as
    it lands (a generation count), so the next request reads again; an item deleted since
    the last read is never drawn meanwhile (:attr:`gone`).
    """

    def __init__(self, st: ServiceState) -> None:
        self.st = st
        self._pool: ExplorePool | None = None
        self._at = -1e9  # when the pool was read (-1e9: stale)
        self._generation = 0  # bumped by every catalogue change
        self.reading = threading.Lock()  # one read at a time
        #: items deleted since the last read began (replaced, never changed in place: a
        #: request reads it without the lock); kept only while exploration is on
        self.gone: frozenset[str] = frozenset()

    def stale(self, deleted: str | None = None, created: str | None = None) -> None:
        """A catalogue change (under the process' lock): the pool is read again from the
        next request on."""
        self._generation += 1
        self._at = -1e9
        if deleted is not None and self.st.ws.config.online.explore_rate > 0:
            self.gone = self.gone | {deleted}
        if created is not None and created in self.gone:
            self.gone = self.gone - {created}

    def age(self, seconds: float) -> None:
        """Make the pool look ``seconds`` older (tests)."""
        self._at -= seconds

    def get(self) -> tuple[ExplorePool, frozenset[str]]:
        """The last pool and the items deleted since it was read, as one snapshot (see the
        class docstring)."""
        gone = self.gone  # first: a read landing between the two trims it for its new pool
        pool = self._pool
        if pool is None:
            with self.reading:
                if self._pool is None:
                    self._read()
                return self._pool, self.gone  # type: ignore[return-value]
        if time.time() - self._at >= 60.0 and self.reading.acquire(blocking=False):

            def run() -> None:
                generation = self._generation
                try:
                    self._read()
                except Exception:  # noqa: BLE001 - the store may be restarting: keep the last
                    log.exception("could not read the exploration pool; serving the last one")
                    with self.st.lock:  # tried again in a minute, or at once after a change
                        if self._generation == generation:
                            self._at = time.time()
                finally:
                    self.reading.release()

            threading.Thread(target=run, name="avrec-explore", daemon=True).start()
        return pool, gone

    def _read(self) -> None:
        st = self.st
        cfg = st.ws.config.online
        now = time.time()
        # a shared store serves threads as it is; SQLite's one connection, under the lock
        store = st.store if st.store.shared else LockedStore(st.store, st.lock)
        with st.lock:  # what requests change meanwhile (under the lock)
            generation, before = self._generation, self.gone
            deleted, new = set(st.deleted) | before, list(st.new_items.rows.items())
        fresh_since, since = now - cfg.fresh_days * 86400.0, now - 30 * 86400.0
        pairs = store.explore_items(now, fresh_since, since, cfg.cold_impressions)
        added = {i for i, r in new if passes(r, None, now)}
        fresh = {i for i, f in pairs if f and i not in deleted} | added
        cold = {i for i, f in pairs if not f and i not in deleted} - added
        pool = ExplorePool(tuple(sorted(fresh)), tuple(sorted(cold)))
        with st.lock:  # beside the changes applied meanwhile (stale runs under the lock)
            self._pool = pool
            self.gone = self.gone - before  # the pool leaves these out itself
            # a change while the store counted: this pool may miss it, read again next request
            self._at = now if self._generation == generation else -1e9


def mix_new(
    st: ServiceState, b: Bundle, lst: Any, history: list[str], k: int, exclude: set[str], flt: Any,
    lang: str = "en",
) -> Any:  # fmt: skip
    """``lst`` with new items (not in the bundle) put in every fifth place from the third
    on, at most ``k // 5`` (one at least): those whose text is as close to the person's
    history (its text vectors' mean) than the median catalogue item, best first; with no
    history, the newest. Filters and exclusions hold."""
    nv = st.new_items.vectors
    if not nv or not k or not st.ws.config.online.mix_new:
        return lst
    cands = [i for i in nv if i not in exclude and i not in lst.ids and passes(
        st.new_items.rows.get(i, {}), flt)]  # fmt: skip
    if not cands:
        return lst
    m = b.model
    tv = getattr(m, "text_vectors", None)
    rows = []
    if tv is not None and history:
        idx = m.items.index(history, missing="ignore")
        rows = [tv[j] for j in idx[idx >= 0] if np.any(tv[j])]
    rows += [nv[i] for i in history if i in nv]
    quota = max(1, k // 5)
    if rows:
        profile = np.mean(rows, axis=0)
        profile /= max(float(np.linalg.norm(profile)), 1e-9)
        cos = {i: float(nv[i] @ profile) for i in cands}
        # closer than the typical catalogue item (the median of a fixed sample of 2,000)
        bar = -1.0
        if tv is not None:
            if b.sample is None:
                rng = np.random.default_rng(0)
                b.sample = rng.choice(len(tv), min(2000, len(tv)), replace=False)
            sims = tv[b.sample] @ profile
            sims = sims[np.any(tv[b.sample], axis=1)]
            bar = float(np.median(sims)) if len(sims) else -1.0
        chosen = sorted((i for i in cands if cos[i] >= bar), key=lambda i: -cos[i])[:quota]
        why = "new, and close in meaning to what you play"
    else:
        chosen = list(reversed(cands))[:quota]  # the newest first
        why = "new in the catalogue"
    if not chosen:
        return lst
    if lang.startswith("zh"):
        why = "新上架，与你喜欢的内容相近" if rows else "新上架"
    ids, scores = list(lst.ids), list(lst.scores.tolist())
    fields = {key: list(v) for key, v in lst.fields.items()}
    for n, item in enumerate(chosen):
        at = min(2 + 5 * n, len(ids))
        ids.insert(at, item)
        scores.insert(at, scores[at] if at < len(scores) else (scores[-1] if scores else 0.0))
        for key, v in fields.items():
            if key == "sources":
                v.insert(at, ["new"])
            elif key == "explanation":
                v.insert(at, {"item": item, "reasons": [{"kind": "new", "value": True}],
                              "text": why})  # fmt: skip
            else:
                v.insert(at, None)
    ids, scores = ids[:k], scores[:k]
    fields = {key: v[:k] for key, v in fields.items()}
    return type(lst)(ids, np.asarray(scores, np.float32), fields)


def rooms(st: ServiceState, b: Bundle) -> dict[str, dict[str, Any]]:
    """The rooms live now: the bundle's items of ``live_category`` and those created
    since, whose window contains the clock (catalogue rows, kept until a change)."""
    from avrec.online.live import is_room

    cfg = st.ws.config.online
    now = time.time()
    facts = getattr(b.model, "facts", None)
    ids: list[str] = []
    if facts is not None:
        idx = facts.by_label.get(cfg.live_category.lower())
        if idx is not None and len(idx):
            ids = b.model.items.lookup(list(idx))
    rows = st.item_rows([i for i in ids if i not in st.deleted])
    rows.update({i: r for i, r in st.new_items.rows.items() if i not in st.deleted})
    return {i: r for i, r in rows.items() if is_room(r, cfg.live_category, now)}


def liked_hosts(
    st: ServiceState, b: Bundle, user: str | None, history: list[str]
) -> dict[str, int]:
    """How many of the user's positive items each host hosts (their last 50)."""
    from avrec.online.live import hosts

    past: list[str] = []
    m = b.model
    if user is not None and m.users.index([user], missing="ignore")[0] >= 0:
        seen = m.user_batch([user]).sequence_list()[0]
        past = m.items.lookup(list(seen[-50:]))
    out: dict[str, int] = {}
    for row in st.item_rows([*past, *history][-50:]).values():
        for h in hosts(row):
            out[h] = out.get(h, 0) + 1
    return out


def mix_live(
    st: ServiceState, b: Bundle, lst: Any, user: str | None, history: list[str], k: int,
    exclude: set[str], flt: Any, lang: str = "en",
) -> Any:  # fmt: skip
    """``lst`` led by the best ``live_slots`` rooms live now (not excluded, passing the
    filter), the rest moved down and cut to ``k``."""
    from avrec.online.live import rank_rooms

    cfg = st.ws.config.online
    if cfg.live_slots <= 0 or not k:
        return lst
    open_now = {i: r for i, r in rooms(st, b).items()
                if i not in exclude and passes(r, flt)}  # fmt: skip
    if not open_now:
        return lst
    ranked = rank_rooms(open_now, st.engagement, time.time(),
                        liked_hosts(st, b, user, history), cfg.host_weight)  # fmt: skip
    picked = ranked[: cfg.live_slots]
    taken = {i for i, *_ in picked}
    keep = [j for j, i in enumerate(lst.ids) if i not in taken][: max(0, k - len(picked))]
    text = {"en": "Live now: {n:g} in the last {m:g} minutes",
            "zh": "正在直播：最近 {m:g} 分钟 {n:g} 次互动"}.get(lang, "Live now")  # fmt: skip
    explanations = [
        {"reasons": [{"kind": "live", "value": e}],
         "text": text.format(n=e, m=cfg.live_window_s / 60)}
        for _, _, e, _ in picked
    ]  # fmt: skip
    ids = [i for i, *_ in picked] + [lst.ids[j] for j in keep]
    scores = np.concatenate([np.asarray([s for _, s, _, _ in picked], np.float32),
                             np.asarray(lst.scores, np.float32)[keep]])  # fmt: skip
    fields = {}
    for name, values in lst.fields.items():
        head = (
            explanations
            if name == "explanation"
            else ([["live"]] * len(picked) if name == "sources" else [None] * len(picked))
        )
        fields[name] = head + [values[j] for j in keep]
    if "explanation" not in fields:
        fields["explanation"] = explanations + [None] * len(keep)
    if "sources" not in fields:
        fields["sources"] = [["live"]] * len(picked) + [None] * len(keep)
    lst.ids, lst.scores, lst.fields = ids, scores, fields
    return lst
