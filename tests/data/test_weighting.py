from __future__ import annotations

import numpy as np
import pytest

from avrec.data.weighting import EventRule, EventWeighting
from avrec.errors import ConfigError


def w(types, values, **kw):
    return EventWeighting(**kw).weights(np.array(types), np.array(values, dtype=float))


def test_default_rules():
    out = w(
        ["like", "dislike", "play", "play", "play", "skip", "rate", "rate"],
        [np.nan, np.nan, 0.5, np.nan, 0.01, np.nan, 5, 1],
    )
    np.testing.assert_allclose(out, [3, -3, 0.5, 1.0, -0.5, -1, 2, -2])


def test_value_modes():
    rules = {
        "a": EventRule(weight=2, value="scale"),
        "b": EventRule(weight=1, value="log1p"),
        "c": EventRule(weight=1, value="completion"),
    }
    out = w(["a", "b", "c"], [3, np.e - 1, 7], rules=rules)
    np.testing.assert_allclose(out, [6, 1, 1], rtol=1e-6)


def test_unknown_type_uses_default_or_fails():
    assert w(["custom"], [np.nan])[0] == 1.0
    with pytest.raises(ConfigError, match="custom"):
        w(["custom"], [np.nan], default=None)


def test_aggregate_sum_max_last_and_clip():
    users = np.array([0, 0, 0, 1])
    items = np.array([5, 5, 5, 2])
    weights = np.array([1.0, 3.0, -2.0, 20.0], dtype=np.float32)
    order = np.array([2, 0, 1, 3])
    for agg, expect in (("sum", 2.0), ("max", 3.0), ("last", 1.0)):
        u, i, a = EventWeighting(aggregate=agg).aggregate_pairs(users, items, weights, order)
        pairs = dict(zip(zip(u.tolist(), i.tolist(), strict=True), a.tolist(), strict=True))
        assert pairs[(0, 5)] == expect, agg
        assert pairs[(1, 2)] == 10.0  # clipped
