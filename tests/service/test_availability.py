"""Serving follows the clock: an item's availability window is read at the request's time,
not at the newest event trained on, and a cached page is stale the moment a window of the
bundle's items opens or closes."""

from __future__ import annotations

import numpy as np

from avrec.service import state as state_module
from avrec.service.state import Bundle, ServiceState


class _Facts:
    windowed = True
    available_from = np.array([np.nan, 100.0, np.nan])
    available_until = np.array([50.0, 200.0, np.nan])


class _Model:
    facts = _Facts()


class _NoNew:
    """A service state's part this reads: no item created since the bundle."""

    class new_items:  # noqa: N801
        rows: dict = {}


def test_a_window_that_opens_or_closes_makes_cached_pages_stale(monkeypatch):
    b = Bundle(_Model(), "pipeline", 1, "/nowhere")
    epoch = ServiceState.availability_epoch
    clock = {"t": 10.0}
    monkeypatch.setattr(state_module.time, "time", lambda: clock["t"])
    seen = []
    for t in (10.0, 49.0, 51.0, 150.0, 199.0, 250.0):
        clock["t"] = t
        seen.append(epoch(_NoNew(), b))  # type: ignore[arg-type]
    assert seen == [0, 0, 1, 2, 2, 3]  # 50 closes item 0, 100 opens item 1, 200 closes it
    assert epoch(_NoNew(), Bundle(object(), "p", 1, "/x")) == 0  # no windows: always the same


def test_an_item_created_since_training_is_offered_inside_its_window_only():
    from avrec.service.parts import passes

    room = {"available_from": 100.0, "available_until": 200.0, "language": "en"}
    assert [passes(room, None, t) for t in (50.0, 150.0, 250.0)] == [False, True, False]
    assert passes({"language": "en"}, None, 1e12)  # no window: always
