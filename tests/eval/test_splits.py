from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avrec.data.dataset import Dataset
from avrec.data.weighting import EventWeighting
from avrec.errors import DataError
from avrec.eval.splits import (
    ColdItemSplit,
    ColdUserSplit,
    FixedSplit,
    LeaveOneOut,
    RandomSplit,
    TemporalSplit,
)


@pytest.fixture
def ds() -> Dataset:
    rng = np.random.default_rng(1)
    rows = []
    for u in range(40):
        n = int(rng.integers(2, 15))
        for k in range(n):
            rows.append((f"u{u}", f"i{rng.integers(0, 30)}", float(1000 + u + 10 * k)))
    rows.append(("u0", "tie-a", 5000.0))  # two events of u0 in the same second: input order
    rows.append(("u0", "tie-b", 5000.0))
    ev = pl.DataFrame(rows, schema=["user_id", "item_id", "ts"], orient="row")
    return Dataset.from_events(ev, weighting=EventWeighting.binary())


def _no_leak(res):
    m = res.masks
    assert not (m["train"] & (m["valid"] | m["test"])).any()
    assert not (m["valid"] & m["test"]).any()
    assert (m["train"] | m["valid"] | m["test"]).all()


def test_leave_one_out_by_time(ds):
    res = LeaveOneOut().split(ds)
    _no_leak(res)
    f = res.full
    counts = np.bincount(f.user_index, minlength=f.n_users)
    for u in range(f.n_users):
        ptr = f.sequence_indptr
        lo, hi = ptr[u], ptr[u + 1]
        if counts[u] < 3:
            assert res.masks["train"][lo:hi].all()
            continue
        assert res.masks["test"][hi - 1] and res.masks["valid"][hi - 2]
        assert f.ts[lo : hi - 1].max() <= f.ts[hi - 1]  # nothing later than the test event
    u0 = f.users.index("u0")[0]
    assert f.items.id(int(res.targets("test")[u0].indices[0])) == "tie-b"
    assert res.history("test").sum() >= res.history("valid").sum()
    assert res.train.n_events == int(res.masks["train"].sum())


def test_fixed_split_file(ds, tmp_path):
    loo = LeaveOneOut().split(ds)
    f = ds
    lines = ["user_id\tvalid_item\ttest_item"]
    for u in range(f.n_users):
        t, v = loo.targets("test")[u].indices, loo.targets("valid")[u].indices
        if len(t):
            lines.append(f"{f.users.id(u)}\t{f.items.id(int(v[0]))}\t{f.items.id(int(t[0]))}")
    p = tmp_path / "s.tsv"
    p.write_text("\n".join(lines) + "\n")
    fixed = FixedSplit(p).split(ds)
    for stage in ("train", "valid", "test"):
        assert (fixed.masks[stage] == loo.masks[stage]).all(), stage
    p.write_text("user_id\tvalid_item\ttest_item\nu0\tnope\ti1\n")
    with pytest.raises(DataError, match=r"s.tsv:2: unknown valid item"):
        FixedSplit(p).split(ds)


def test_temporal_split(ds):
    res = TemporalSplit(0.6, 0.8).split(ds)
    _no_leak(res)
    f = res.full
    assert f.ts[res.masks["train"]].max() < f.ts[res.masks["valid"]].min()
    assert f.ts[res.masks["valid"]].max() < f.ts[res.masks["test"]].min()


def test_random_split_is_seeded(ds):
    a, b = RandomSplit(seed=3).split(ds), RandomSplit(seed=3).split(ds)
    c = RandomSplit(seed=4).split(ds)
    _no_leak(a)
    assert (a.masks["test"] == b.masks["test"]).all()
    assert not (a.masks["test"] == c.masks["test"]).all()
    per_user_train = np.bincount(ds.user_index[a.masks["train"]], minlength=ds.n_users)
    assert (per_user_train >= 1).all()


def test_cold_items_never_in_training(ds):
    res = ColdItemSplit(fraction=0.2, seed=0).split(ds)
    _no_leak(res)
    cold = np.unique(ds.item_index[res.masks["test"] | res.masks["valid"]])
    assert not np.isin(ds.item_index[res.masks["train"]], cold).any()


def test_cold_users_have_no_history(ds):
    res = ColdUserSplit(fraction=0.2, seed=0).split(ds)
    _no_leak(res)
    test_users = np.unique(ds.user_index[res.masks["test"]])
    assert res.history("test")[test_users].nnz == 0
    assert not np.isin(ds.user_index[res.masks["train"]], test_users).any()


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"\x89PNG\r\n\x1a\n\xff\xd8", r"s\.tsv: not a text file \(invalid UTF-8 at line 1\)"),
        (
            b"u0\ti1\ti2\nu1\ti1\ti2\n\xff\xfe\n",
            r"s\.tsv: not a text file \(invalid UTF-8 at line 3\)",
        ),
        (b"u0\ti1\ti2\n\x00\x01\x02\n", r"s\.tsv: not a text file \(a NUL byte at line 2\)"),
        (b"", r"s\.tsv: the split file has no rows"),
        (b"user_id\tvalid_item\ttest_item\n\n", r"s\.tsv: the split file has no rows"),
        (
            b"user_id\tvalid_item\ttest_item\nu0\ti1\ti2\nu1\ti1\ti2\nu0\ti3\ti4\n",
            r"s\.tsv:4: user 'u0' is listed twice \(lines 2 and 4\)",
        ),
    ],
)
def test_fixed_split_file_mistakes(ds, tmp_path, content, why):
    """Bug #16: a binary split file raised UnicodeDecodeError, an empty or header-only one
    gave an evaluation of no users (a table of NaN), a user listed twice was accepted."""
    p = tmp_path / "s.tsv"
    p.write_bytes(content)
    with pytest.raises(DataError, match=why):
        FixedSplit(p).split(ds)


def test_fixed_split_file_with_a_byte_order_mark(ds, tmp_path):
    loo = LeaveOneOut().split(ds)
    u = int(np.flatnonzero(np.diff(loo.targets("test").indptr))[0])
    v = int(loo.targets("valid")[u].indices[0])
    t = int(loo.targets("test")[u].indices[0])
    p = tmp_path / "s.tsv"
    row = f"{ds.users.id(u)}\t{ds.items.id(v)}\t{ds.items.id(t)}"
    p.write_bytes(("\ufeffuser_id\tvalid_item\ttest_item\r\n" + row + "\r\n").encode())
    assert FixedSplit(p).split(ds).masks["test"].sum() == 1


def test_a_lone_carriage_return_is_a_data_error_with_its_line(ds, tmp_path):
    """Regression (found by the fuzz test below in CI): a carriage return inside a field
    raised csv.Error instead of a DataError naming the file and line."""
    p = tmp_path / "s.tsv"
    p.write_bytes(b"user_id\tvalid_item\ttest_item\nu0\ti1\ri2\tx\n")
    with pytest.raises(DataError, match=r"s\.tsv:2: unreadable line"):
        FixedSplit(p).split(ds)


_SPLIT_TOKENS = [
    *(b"u0", b"u1", b"u7", b"i1", b"i2", b"i29", b"tie-a", b"nope", b"user_id"),
    *(b"\t", b"\t", b"\n", b"\r\n", b" ", b"\xff", b"\x00", b"\xef\xbb\xbf", b"#"),
]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.sampled_from(_SPLIT_TOKENS), max_size=40), st.binary(max_size=20))
def test_split_file_fuzz_never_raises_anything_but_data_error(ds, tmp_path, tokens, tail):
    """Any split file is a split or one DataError naming the file, never another exception."""
    p = tmp_path / "s.tsv"
    p.write_bytes(b"".join(tokens) + tail)
    try:
        res = FixedSplit(p).split(ds)
    except DataError as exc:
        assert "s.tsv" in str(exc)
    else:
        assert res.masks["test"].sum() >= 1
        _no_leak(res)
