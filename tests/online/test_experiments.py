"""A/B statistics: stable assignment, an always-valid p-value that keeps its error rate
under daily peeking (where a t-test at every look does not), CUPED's variance reduction,
the sample-ratio check."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from avrec.online.experiments import (
    ExperimentConfig,
    analyze,
    assign,
    obf_spent,
    spending_bounds,
)

AB = {"name": "exp", "variants": [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.5}]}


def test_assignment_is_stable_proportional_and_salted():
    exp = ExperimentConfig(**{**AB, "variants": [{"name": "a", "share": 0.2},
                                                 {"name": "b", "share": 0.8}]})  # fmt: skip
    users = [f"user-{n}" for n in range(20_000)]
    arms = [assign(exp, u).name for u in users]
    assert arms == [assign(exp, u).name for u in users]  # same answer every time, any node
    assert abs(arms.count("a") / len(arms) - 0.2) < 0.01
    other = ExperimentConfig(**{**exp.model_dump(), "salt": "again"})
    moved = sum(x != assign(other, u).name for x, u in zip(arms, users, strict=True))
    assert moved > 0.2 * len(users)  # a new salt reshuffles
    with pytest.raises(ValueError, match="add up"):
        ExperimentConfig(**{**AB, "variants": [{"name": "a", "share": 0.5},
                                               {"name": "b", "share": 0.6}]})  # fmt: skip


def _looks(rng, effect: float, days: int = 10, per_day: int = 150):
    """Daily looks at a growing experiment: user -> (arm, clicks per impression, past)."""
    users: dict[str, tuple[str, float, float]] = {}
    for day in range(days):
        for n in range(per_day):
            arm = "a" if rng.random() < 0.5 else "b"
            past = rng.poisson(5)
            p = 0.05 + 0.03 * past + (effect if arm == "b" else 0.0)
            users[f"{day}-{n}"] = (arm, rng.binomial(20, min(p, 1.0)) / 20, float(past))
        yield users


def test_daily_peeking_keeps_the_always_valid_error_rate():
    rng = np.random.default_rng(0)
    exp = ExperimentConfig(**AB)
    runs, fp_valid, fp_naive = 200, 0, 0
    for _ in range(runs):
        p, valid_hit, naive_hit = {}, False, False
        for users in _looks(rng, effect=0.0):
            out = analyze(exp, users, p)
            p = {"b": out["arms"]["b"]["p_always_valid"]}
            valid_hit |= p["b"] < 0.05
            ys = {arm: [y for a, y, _ in users.values() if a == arm] for arm in "ab"}
            naive_hit |= stats.ttest_ind(ys["a"], ys["b"], equal_var=False).pvalue < 0.05
        fp_valid += valid_hit
        fp_naive += naive_hit
    assert fp_valid / runs <= 0.08, fp_valid
    assert fp_naive / runs > fp_valid / runs + 0.05  # peeking at a t-test inflates it


def test_spending_boundaries_spend_exactly_the_planned_alpha():
    """Brownian paths with uneven information: the share of paths first crossing at each
    look is that look's alpha, and all of them together 5%."""
    rng = np.random.default_rng(2)
    infos = [1.0, 1.5, 4.0, 4.2, 9.0]
    fractions = [k / 5 for k in range(1, 6)]
    c = np.array(spending_bounds(infos, fractions))
    assert np.all(np.diff(c) < 0.1) and c[0] > 4  # O'Brien-Fleming: strict early, ~2 at the end
    steps = np.diff(np.concatenate([[0.0], infos]))
    z = np.cumsum(rng.standard_normal((200_000, 5)) * np.sqrt(steps), axis=1) / np.sqrt(infos)
    cross = np.abs(z) >= c
    first = np.where(cross.any(axis=1), cross.argmax(axis=1), -1)
    assert abs((first >= 0).mean() - 0.05) < 0.003
    for k in range(5):
        want = obf_spent(fractions[k]) - (obf_spent(fractions[k - 1]) if k else 0.0)
        assert abs((first == k).mean() - want) < 0.0015, k


def _error_and_power(exp: ExperimentConfig, effect: float, runs: int, seed: int) -> float:
    """The share of runs found significant at some daily look."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(runs):
        p, history, hit = {}, {}, False
        for users in _looks(rng, effect=effect):
            out = analyze(exp, users, p, history)
            b = out["arms"]["b"]
            p = {"b": b["p_always_valid"]}
            history = {"b": {"info": b["info"], "crossed": b["crossed"]}} if "info" in b else {}
            hit |= b["significant"]
        hits += hit
    return hits / runs


def test_planned_looks_hold_the_nominal_error_rate_and_find_more():
    """Ten daily looks planned: alpha spending's false positives are near the nominal 5%
    (the mSPRT's, valid for looks without end, far below it), and it finds a small effect
    in more runs than the mSPRT does."""
    spending = ExperimentConfig(**AB, sequential="alpha_spending", planned_looks=10)
    msprt = ExperimentConfig(**AB)
    fp = _error_and_power(spending, 0.0, 200, seed=3)
    assert 0.02 <= fp <= 0.08, fp
    assert fp > _error_and_power(msprt, 0.0, 200, seed=3)
    assert _error_and_power(spending, 0.01, 60, seed=4) > _error_and_power(msprt, 0.01, 60, seed=4)
    with pytest.raises(ValueError, match="planned_looks"):
        ExperimentConfig(**AB, sequential="alpha_spending")


def test_a_real_effect_is_found_and_cuped_narrows_it():
    rng = np.random.default_rng(1)
    exp = ExperimentConfig(**AB)
    *_, users = _looks(rng, effect=0.03)
    out = analyze(exp, users)
    b = out["arms"]["b"]
    assert b["significant"] and b["ci_cuped"][0] > 0
    assert 0.015 < b["effect"] < 0.045
    assert b["variance_reduction"] > 0.2  # the past explains part of the outcome
    width = b["ci"][1] - b["ci"][0]
    assert b["ci_cuped"][1] - b["ci_cuped"][0] < width
    assert not out["srm"]


def test_sample_ratio_mismatch_is_flagged():
    exp = ExperimentConfig(**AB)
    users = {f"u{n}": ("a" if n % 5 < 3 else "b", 0.1, 1.0) for n in range(2000)}  # 60/40
    assert analyze(exp, users)["srm"]
    even = {f"u{n}": ("a" if n % 2 else "b", 0.1, 1.0) for n in range(2000)}
    assert not analyze(exp, even)["srm"]


def test_a_guardrail_is_breached_only_by_a_real_loss():
    """An arm that doubles the clicks but halves completions breaches the completion
    guardrail; one that loses nothing, or less than the tolerated loss, does not."""
    rng = np.random.default_rng(5)
    users = {f"u{n}": ("a" if n % 2 else "b", float(rng.random()), 0.0) for n in range(4000)}

    def completion(loss: float) -> dict[str, float]:
        return {u: float(rng.binomial(10, 0.4 * (1 - loss) if v == "b" else 0.4)) / 10
                for u, (v, _, _) in users.items()}  # fmt: skip

    exp = ExperimentConfig(**AB, guardrails=[{"metric": "completion"}])
    bad = analyze(exp, users, guards={"completion": completion(0.5)})
    g = bad["guardrails"]["b"]["completion"]
    assert g["breached"] and bad["guardrail_breached"] and 0.4 < g["relative_loss"] < 0.6
    fine = analyze(exp, users, guards={"completion": completion(0.0)})
    assert not fine["guardrail_breached"]
    tolerant = ExperimentConfig(**AB, guardrails=[{"metric": "completion", "max_loss": 0.7}])
    assert not analyze(tolerant, users, guards={"completion": completion(0.5)})[
        "guardrail_breached"
    ]
    with pytest.raises(ValueError):
        ExperimentConfig(**AB, guardrails=[{"metric": "revenue"}])
