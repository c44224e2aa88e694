"""The page cache: kept, bounded, expired with jitter, off at 0."""

from __future__ import annotations

import time

from avrec.service.parts import PageCache


def test_pages_are_kept_bounded_and_expire():
    c = PageCache(ttl_s=0.2, size=3)
    for i in range(4):
        c.put(i, f"page {i}")
    assert c.get(0) is None and c.get(3) == "page 3"  # the least recently used went
    assert c.get(1) == "page 1"
    c.put(4, "page 4")  # 2 is now the least recently used
    assert c.get(2) is None and c.get(1) == "page 1"
    lives = []
    for i in range(200):
        c.put(("k", i), i)
        lives.append(c._data[("k", i)][0] - time.monotonic())
    assert 0.09 < min(lives) and max(lives) < 0.31 and max(lives) - min(lives) > 0.1  # jitter
    time.sleep(0.32)
    assert c.get(("k", 199)) is None  # expired
    off = PageCache(ttl_s=0)
    off.put("a", 1)
    assert off.get("a") is None
