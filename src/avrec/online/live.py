"""Live rooms: items that are live inside their availability window, ranked by what people
are doing in them right now.

A room is an item of the ``live_category`` (``[online]``, default ``live``) whose
availability window (``available_from`` .. ``available_until``) contains the clock. Its
engagement is the weighted count of its events over the last ``live_window_s`` seconds
(``live_weights``: viewers joining, chat messages, likes, gifts, plays; the types beyond the
built-ins are declared in ``[events] custom_types``), read from the same event stream
that keeps every node's lists current. A person's affinity to a room is how many of their
own positive items the room's host (a person of role ``host``) also hosts. The ``live``
source ranks the rooms live now by ``log(1 + engagement) + host_weight * affinity`` (ties:
the newest first): a crowd counts, with diminishing returns, and a host one follows counts
for a fixed amount per show liked. (``host_weight`` is not chosen on data yet: the
simulator issue 21 asks for is where it will be.) A room that ends leaves every list the
moment its window closes (the service reads windows at its own clock and a cached page
goes stale at a window's edge).
"""

from __future__ import annotations

import json
import math
import threading
from collections import defaultdict, deque
from collections.abc import Iterable
from typing import Any

__all__ = ["Engagement", "hosts", "is_room", "rank_rooms"]


class Engagement:
    """Per item, the weighted events of the last ``window_s`` seconds."""

    def __init__(self, weights: dict[str, float], window_s: float) -> None:
        self.weights = dict(weights)
        self.window_s = float(window_s)
        self._events: dict[str, deque[tuple[float, float]]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._last_id = 0  # the log is read again after a reload: each event counts once

    def add(self, rows: Iterable[tuple]) -> None:
        """Event rows ``(id, user, item, type, value, ts)`` as the store's event log gives
        them."""
        with self._lock:
            for eid, _user, item, kind, _value, ts in rows:
                if eid <= self._last_id:
                    continue
                self._last_id = eid
                w = self.weights.get(kind)
                if item is not None and w:
                    self._events[item].append((float(ts), float(w)))

    def score(self, item: str, now: float) -> float:
        with self._lock:
            q = self._events.get(item)
            if not q:
                return 0.0
            while q and q[0][0] < now - self.window_s:
                q.popleft()
            return float(sum(w for ts, w in q if ts <= now))

    def clear(self) -> None:
        with self._lock:
            self._events.clear()


def _people(row: dict[str, Any]) -> list[dict[str, Any]]:
    raw = row.get("people")
    if not raw:
        return []
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return []
    return [p for p in raw if isinstance(p, dict)]


def hosts(row: dict[str, Any]) -> set[str]:
    """The names of an item's hosts (people of role ``host``)."""
    return {str(p.get("name")) for p in _people(row) if p.get("role") == "host" and p.get("name")}


def is_room(row: dict[str, Any], category: str, now: float) -> bool:
    """Whether a catalogue row is a room live at ``now``."""
    from avrec.data.schema import split_list

    cats = row.get("categories")
    names = cats if isinstance(cats, list) else split_list(cats) if cats else []
    if category.lower() not in {str(c).lower() for c in names}:
        return False
    start, end = row.get("available_from"), row.get("available_until")
    if start is not None and start > now:
        return False
    return end is None or end >= now


def rank_rooms(
    rooms: dict[str, dict[str, Any]],
    engagement: Engagement,
    now: float,
    liked_hosts: dict[str, int] | None = None,
    host_weight: float = 1.0,
) -> list[tuple[str, float, float, int]]:
    """``(item, score, engagement, affinity)`` for each room, best first."""
    liked_hosts = liked_hosts or {}
    out = []
    for item, row in rooms.items():
        e = engagement.score(item, now)
        affinity = sum(liked_hosts.get(h, 0) for h in hosts(row))
        started = row.get("available_from") or 0.0
        out.append((item, math.log1p(e) + host_weight * affinity, e, affinity, started))
    out.sort(key=lambda r: (-r[1], -r[3], -r[4], r[0]))
    return [(i, s, e, a) for i, s, e, a, _ in out]
