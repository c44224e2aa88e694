"""A/B experiments: who sees which variant, and what the difference is worth.

**Assignment.** A user's variant is a pure function of the experiment's salt and their id
(SHA-256 to a number in [0, 1), cut by the variants' cumulative shares): the same on every
node and after every restart, with nothing stored; a new salt reshuffles everyone.

**Analysis**, per user (the unit that is randomised, so users are independent): each user's
clicks over their impressions on the experiment's surface. For each variant against the
control (the first):

- the effect (difference of means) and the relative lift, with a 95% Welch interval;
- **CUPED** (Deng et al., 2013): with each user's activity in the pre-period (events in the
  ``pre_days`` before the start) as the covariate ``X``, the outcome ``Y - theta (X - mean X)``
  with ``theta = cov(X, Y) / var(X)`` pooled over both arms: the same expected effect, less
  variance when the past predicts the present;
- an **always-valid p-value** (mixture sequential probability ratio test, Johari, Pekelis
  and Walsh, 2017): with a normal mixture of width ``tau`` over the effect,
  ``Lambda = sqrt(V / (V + tau^2)) exp(tau^2 d^2 / (2 V (V + tau^2)))`` for the estimate ``d``
  with variance ``V``; the p-value is the smallest ``1 / Lambda`` over every look so far, so
  looking every day does not inflate the false-positive rate;
- or, when the operator plans the looks (``sequential = "alpha_spending"`` with
  ``planned_looks``), a **group-sequential test** (Lan and DeMets, 1983, with the O'Brien-
  Fleming spending function ``alpha(t) = 2 - 2 Phi(z_{alpha/2} / sqrt(t))`` at the calendar
  fraction ``t = look / planned_looks``): each look gets the boundary that spends exactly
  the alpha added since the last, given the information (``1 / V``) actually observed at
  every look so far (the boundaries by numerical integration over the continuation
  region, Armitage, McPherson and Rowe, 1969). Its false-positive rate is the nominal 5%
  over the planned looks, where the mSPRT, valid for looks without end, sits well below it
  (and so needs more users to find an effect);
- the **sample-ratio check**: a chi-square test of the users per variant against the
  configured shares; a p-value below 0.001 says the assignment or the logging is broken and
  the result should not be trusted.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "ExperimentConfig", "Guardrail", "Variant", "analyze", "assign", "msprt_p", "results",
    "spending_bounds",
]  # fmt: skip

SRM_ALPHA = 1e-3
ALPHA = 0.05


class Variant(BaseModel):
    """One arm: a share of the users, and what they get."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    share: float = Field(gt=0, le=1)
    model_version: int | None = Field(
        None, ge=1, description="the registered pipeline version it is served (None: the active)"
    )
    diversity: float | None = Field(None, ge=0, le=1, description="the MMR trade-off for this arm")


GUARDRAIL_METRICS = {  # per impression; True: higher is better
    "completion": True, "likes": True, "dislikes": False, "skips": False,
}  # fmt: skip


class Guardrail(BaseModel):
    """A metric no arm may make worse: breached when the arm is worse than the control by
    more than ``max_loss`` (relative) with the always-valid p-value below 5%."""

    model_config = ConfigDict(extra="forbid")

    metric: str = Field(pattern="^(completion|likes|dislikes|skips)$")
    max_loss: float = Field(0.0, ge=0, le=1, description="the relative loss tolerated")


class ExperimentConfig(BaseModel):
    """An experiment: its arms (the first is the control), its surface and its statistics."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    variants: list[Variant] = Field(min_length=2)
    surface: str = Field("recommendations", description="where the arms differ")
    salt: str = Field("", max_length=128, description="default: the name")
    target: str = Field("ctr", pattern="^(ctr)$")
    guardrails: list[Guardrail] = Field(
        default_factory=list, description="metrics no arm may make worse (per impression)"
    )
    tau: float = Field(
        0.02, gt=0, description="mSPRT's mixture width, on the scale of the effect (a CTR)"
    )
    pre_days: float = Field(14.0, ge=0, description="CUPED's pre-period")
    sequential: str = Field(
        "msprt", pattern="^(msprt|alpha_spending)$",
        description="msprt: always-valid p-values, any number of looks; alpha_spending: "
        "O'Brien-Fleming boundaries over planned_looks (the nominal error rate at those looks)",
    )  # fmt: skip
    planned_looks: int | None = Field(
        None, ge=1, le=1000, description="how many looks alpha_spending spreads its alpha over"
    )
    started_at: float | None = None
    stopped_at: float | None = None

    @field_validator("variants")
    @classmethod
    def _unique(cls, v: list[Variant]) -> list[Variant]:
        if len({x.name for x in v}) != len(v):
            raise ValueError("variant names must differ")
        return v

    @model_validator(mode="after")
    def _shares(self) -> ExperimentConfig:
        total = sum(v.share for v in self.variants)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"the variants' shares add up to {total:g}, not 1")
        if self.sequential == "alpha_spending" and not self.planned_looks:
            raise ValueError("sequential = alpha_spending needs planned_looks")
        return self

    def running(self, now: float) -> bool:
        return (self.started_at is not None and self.started_at <= now
                and (self.stopped_at is None or now < self.stopped_at))  # fmt: skip


def _unit(salt: str, user_id: str) -> float:
    h = hashlib.sha256(f"{salt}\x00{user_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def assign(exp: ExperimentConfig, user_id: str) -> Variant:
    """The user's arm: stable for the salt, proportional to the shares."""
    u = _unit(exp.salt or exp.name, user_id)
    edge = 0.0
    for v in exp.variants:
        edge += v.share
        if u < edge:
            return v
    return exp.variants[-1]


def msprt_p(effect: float, variance: float, tau: float) -> float:
    """``1 / Lambda`` of the normal-mixture SPRT for one look (capped at 1)."""
    if not variance > 0:
        return 1.0
    t2 = tau * tau
    log_lambda = 0.5 * math.log(variance / (variance + t2)) + t2 * effect * effect / (
        2 * variance * (variance + t2)
    )
    return float(min(1.0, math.exp(-log_lambda)))


def obf_spent(t: float, alpha: float = ALPHA) -> float:
    """The alpha spent by calendar fraction ``t`` (Lan-DeMets O'Brien-Fleming, two-sided)."""
    from scipy import stats

    if t <= 0:
        return 0.0
    return float(2.0 - 2.0 * stats.norm.cdf(stats.norm.ppf(1 - alpha / 2) / math.sqrt(min(t, 1.0))))


def spending_bounds(
    infos: list[float], fractions: list[float], alpha: float = ALPHA, grid: int = 301
) -> list[float]:
    """Two-sided z boundaries ``c_k``: under no effect, the chance that ``|Z_j| < c_j`` at
    every earlier look and ``|Z_k| >= c_k`` at look ``k`` is ``alpha(t_k) - alpha(t_k-1)``.

    Args:
        infos: the information (``1 / variance`` of the estimate) at each look, growing.
        fractions: the calendar fraction ``t`` of each look (``look / planned_looks``).

    The score ``S_k = Z_k sqrt(I_k)`` has independent normal increments of variance
    ``I_k - I_k-1``; its density over the region not yet stopped is carried from look to
    look on a grid (Simpson's rule), and each boundary found by root-finding.
    """
    from scipy import integrate, optimize, special

    bounds: list[float] = []
    spent_before = 0.0
    u = dens = None  # grid and density of S over the continuation region
    prev_info = 0.0
    for info, t in zip(infos, fractions, strict=True):
        info = max(float(info), prev_info * (1 + 1e-9), 1e-300)
        step = math.sqrt(info - prev_info)
        spend = max(obf_spent(t, alpha) - spent_before, 0.0)
        if u is None:  # the first look: S_1 ~ N(0, I_1)
            c = float(-special.ndtri(spend / 2)) if spend > 0 else math.inf
            b = c * math.sqrt(info)
        else:

            def exit_p(b: float, u=u, dens=dens, step=step) -> float:
                tail = special.ndtr((u - b) / step) + special.ndtr((-b - u) / step)
                return float(integrate.simpson(dens * tail, x=u))

            hi = 40.0 * math.sqrt(info)
            if spend <= 0 or exit_p(hi) >= spend:
                b = math.inf
            else:
                b = float(optimize.brentq(lambda x, s=spend: exit_p(x) - s, 1e-9, hi, xtol=1e-9))
            c = b / math.sqrt(info)
        bounds.append(c)
        spent_before += spend
        # the density of S_k over |S_k| < b_k
        edge = min(b, 12.0 * math.sqrt(info))
        new_u = np.linspace(-edge, edge, grid)
        if u is None:
            new_dens = np.exp(-0.5 * new_u**2 / info) / math.sqrt(2 * math.pi * info)
        else:
            d = (new_u[:, None] - u[None, :]) / step
            kernel = np.exp(-0.5 * d * d) / (step * math.sqrt(2 * math.pi))
            new_dens = integrate.simpson(kernel * dens[None, :], x=u, axis=1)
        u, dens, prev_info = new_u, new_dens, info
    return bounds


def _diff(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Difference of means (b - a) and its variance (Welch)."""
    va = a.var(ddof=1) / len(a) if len(a) > 1 else float("inf")
    vb = b.var(ddof=1) / len(b) if len(b) > 1 else float("inf")
    return float(b.mean() - a.mean()), float(va + vb)


def analyze(
    exp: ExperimentConfig,
    users: dict[str, tuple[str, float, float]],
    previous_p: dict[str, float] | None = None,
    history: dict[str, dict[str, Any]] | None = None,
    guards: dict[str, dict[str, float]] | None = None,
) -> dict[str, Any]:
    """The experiment's statistics at one look.

    Args:
        users: ``user_id -> (variant, outcome, pre-period covariate)``.
        previous_p: each arm's always-valid p-value at the last look (the running minimum
            goes on from it).
        history: each arm's earlier looks for ``alpha_spending``: ``{"info": [1 / V at each
            look], "crossed": whether a boundary was crossed}``; the arms' entries of the
            answer carry this look's (``info``, ``crossed``) to record.
        guards: each guardrail metric's ``user_id -> value per impression``; its
            always-valid p-values go on from ``previous_p["arm:metric"]``.
    """
    from scipy import stats

    previous_p = dict(previous_p or {})
    history = history or {}
    names = [v.name for v in exp.variants]
    by: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    for variant, y, x in users.values():
        if variant in by:
            by[variant].append((y, x))
    counts = np.array([len(by[n]) for n in names], float)
    total = counts.sum()
    srm_p = 1.0
    if total > 0:
        expected = np.array([v.share for v in exp.variants]) * total
        srm_p = float(stats.chisquare(counts, expected).pvalue)
    all_x = np.array([x for n in names for _, x in by[n]], float)
    all_y = np.array([y for n in names for y, _ in by[n]], float)
    theta = 0.0
    if len(all_x) > 2 and all_x.var() > 0:
        theta = float(np.cov(all_x, all_y)[0, 1] / all_x.var(ddof=1))
    x_mean = float(all_x.mean()) if len(all_x) else 0.0
    arms: dict[str, dict[str, Any]] = {}
    control = np.array([y for y, _ in by[names[0]]], float)
    control_adj = np.array([y - theta * (x - x_mean) for y, x in by[names[0]]], float)
    z = stats.norm.ppf(0.975)
    for n in names:
        y = np.array([yy for yy, _ in by[n]], float)
        adj = np.array([yy - theta * (xx - x_mean) for yy, xx in by[n]], float)
        arm: dict[str, Any] = {"users": int(len(y)), "mean": float(y.mean()) if len(y) else None}
        if n != names[0] and len(y) > 1 and len(control) > 1:
            d, var = _diff(control, y)
            da, vara = _diff(control_adj, adj)
            p_now = msprt_p(da, vara, exp.tau)
            p = min(p_now, previous_p.get(n, 1.0))
            base = float(control.mean())
            arm.update(
                effect=d,
                ci=[d - z * math.sqrt(var), d + z * math.sqrt(var)],
                lift=d / base if base else None,
                effect_cuped=da,
                ci_cuped=[da - z * math.sqrt(vara), da + z * math.sqrt(vara)],
                variance_reduction=1.0 - vara / var if var > 0 else 0.0,
                p_always_valid=p,
                significant=p < ALPHA,
                sequential=exp.sequential,
            )
            if exp.sequential == "alpha_spending" and vara > 0:
                arm.update(_spending_look(exp, history.get(n, {}), da, vara))
        arms[n] = arm
    guard = _guardrails(exp, users, guards or {}, previous_p)
    return {
        "experiment": exp.name,
        "control": names[0],
        "arms": arms,
        "guardrails": guard,
        "guardrail_breached": any(g["breached"] for a in guard.values() for g in a.values()),
        "srm_p": srm_p,
        "srm": srm_p < SRM_ALPHA,
        "cuped_theta": theta,
    }


def _guardrails(
    exp: ExperimentConfig, users: dict[str, tuple[str, float, float]],
    guards: dict[str, dict[str, float]], previous_p: dict[str, float],
) -> dict[str, dict[str, dict[str, Any]]]:  # fmt: skip
    """Per arm (not the control) and guardrail: the effect, its relative size, the
    always-valid p-value (the mSPRT, with ``tau`` a tenth of the control's mean) and
    whether it is breached."""
    names = [v.name for v in exp.variants]
    out: dict[str, dict[str, dict[str, Any]]] = {n: {} for n in names[1:]}
    for g in exp.guardrails:
        values = guards.get(g.metric, {})
        by = {n: np.array([values.get(u, 0.0) for u, (v, _, _) in users.items() if v == n],
                          float) for n in names}  # fmt: skip
        control = by[names[0]]
        higher_better = GUARDRAIL_METRICS[g.metric]
        for n in names[1:]:
            y = by[n]
            if len(y) < 2 or len(control) < 2:
                continue
            d, var = _diff(control, y)
            base = float(control.mean())
            tau = max(0.1 * base, 1e-4)
            key = f"{n}:{g.metric}"
            p = min(msprt_p(d, var, tau), previous_p.get(key, 1.0))
            previous_p[key] = p
            worse = -d if higher_better else d  # how much worse the arm is
            rel = worse / base if base else 0.0
            out[n][g.metric] = {
                "control": base, "arm": float(y.mean()), "effect": d,
                "relative_loss": rel, "p_always_valid": p,
                "breached": bool(p < ALPHA and worse > 0 and rel > g.max_loss),
            }  # fmt: skip
    return out


def _spending_look(
    exp: ExperimentConfig, past: dict[str, Any], effect: float, variance: float
) -> dict[str, Any]:
    """This look of the group-sequential test: the z of the (CUPED) effect against the
    boundary that spends this look's share of alpha; once crossed, significant for good."""
    planned = int(exp.planned_looks or 1)
    infos = [*past.get("info", []), 1.0 / variance]
    z = effect / math.sqrt(variance)
    crossed = bool(past.get("crossed", False))
    bound = math.inf
    if len(infos) <= planned:  # past the planned looks no alpha is left to spend
        fractions = [k / planned for k in range(1, len(infos) + 1)]
        bound = spending_bounds(infos, fractions)[-1]
        crossed = crossed or abs(z) >= bound
    return {
        "z": z,
        "boundary": bound if math.isfinite(bound) else None,
        "look": len(infos),
        "planned_looks": planned,
        "info": infos,
        "crossed": crossed,
        "significant": crossed,
    }


def user_outcomes(
    store: Any, exp: ExperimentConfig, now: float, window_s: float, click_events: list[str],
    completion_at: float = 0.9,
) -> tuple[dict[str, tuple[str, float, float]], dict[str, dict[str, float]]]:  # fmt: skip
    """``user_id -> (variant, clicks per impression, events in the pre-period)`` of the users
    the experiment showed lists to, and each guardrail metric's ``user_id -> value per
    impression``."""
    import polars as pl

    start = exp.started_at or now
    end = min(exp.stopped_at or now, now)
    prefix = f"{exp.name}:"
    shown = store.impressions(start, end).filter(
        (pl.col("surface") == exp.surface) & pl.col("variant").str.starts_with(prefix)
        & pl.col("user_id").is_not_null()
    )  # fmt: skip
    if not shown.height:
        return {}, {}
    outcomes = store.impression_outcomes(start, end, window_s)
    event = pl.col("event")
    flags = outcomes.group_by("request_id", "position").agg(
        event.is_in(click_events).any().cast(pl.Float64).alias("click"),
        ((event == "complete") | ((event == "play") & (pl.col("value") >= completion_at)))
        .any().cast(pl.Float64).alias("completion"),
        (event == "like").any().cast(pl.Float64).alias("likes"),
        (event == "dislike").any().cast(pl.Float64).alias("dislikes"),
        (event == "skip").any().cast(pl.Float64).alias("skips"),
    )  # fmt: skip
    metrics = [g.metric for g in exp.guardrails]
    per_user = (
        shown.join(flags, on=["request_id", "position"], how="left")
        .with_columns(pl.col("click", *GUARDRAIL_METRICS).fill_null(0.0))
        .group_by("user_id")
        .agg(
            pl.col("variant").first(),
            pl.col("click").mean().alias("y"),
            *[pl.col(m).mean() for m in metrics],
        )  # fmt: skip
    )
    pre = (
        store.events(include_excluded=True)
        .filter((pl.col("ts") >= start - exp.pre_days * 86400.0) & (pl.col("ts") < start))
        .group_by("user_id")
        .len()
    )
    rows = per_user.join(pre, on="user_id", how="left").with_columns(pl.col("len").fill_null(0))
    users = {
        u: (v[len(prefix) :], float(y), float(x))
        for u, v, y, x in rows.select("user_id", "variant", "y", "len").iter_rows()
    }
    guards = {m: dict(rows.select("user_id", m).iter_rows()) for m in metrics}
    return users, guards


LOOKS_KIND = "experiment_looks"


def results(
    store: Any, exp: ExperimentConfig, now: float, window_s: float, click_events: list[str],
    record: bool = True, completion_at: float = 0.9,
) -> dict[str, Any]:  # fmt: skip
    """A look at the experiment: its statistics, the always-valid p-values going on from
    the last look's (kept in the store, state ``experiment_looks``). ``record=False`` (a
    dashboard's glance) keeps nothing: its p-values are then at least the recorded ones'
    running minimum would be, never smaller; and it is not one of ``alpha_spending``'s
    planned looks (its boundary is shown, a crossing is not kept)."""
    looks = store.get_state(LOOKS_KIND, exp.name) or {"p": {}, "looks": 0}
    users, guards = user_outcomes(store, exp, now, window_s, click_events, completion_at)
    out = analyze(exp, users, looks["p"], looks.get("history"), guards)
    if record:
        looks = {
            "p": {**{n: a["p_always_valid"] for n, a in out["arms"].items()
                     if "p_always_valid" in a},
                  **{f"{n}:{m}": g["p_always_valid"] for n, a in out["guardrails"].items()
                     for m, g in a.items()}},
            "history": {n: {"info": a["info"], "crossed": a["crossed"]}
                        for n, a in out["arms"].items() if "info" in a},
            "looks": int(looks["looks"]) + 1,
        }  # fmt: skip
        store.put_state(LOOKS_KIND, exp.name, looks)
    out["looks"] = looks["looks"]
    out["running"] = exp.running(now)
    return out
