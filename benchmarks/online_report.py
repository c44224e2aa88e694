"""What the online simulation's phases say (issue 21): click rates, the new items' share,
when an A/B test found its effect, the A/A error rate over replays, the off-policy
estimates, and the BENCHMARKS.md block. The simulation itself is
:mod:`benchmarks.online_sim`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmarks._markdown import replace_block

if TYPE_CHECKING:
    from benchmarks.online_sim import People, Shown

RESULTS = Path(__file__).resolve().parent / "results"
K = 10  # a page
SLOT = 2  # the exploring position ([online] explore_slot's default)


def gain(base: dict, arm: dict) -> dict:
    """New items' impressions and overall CTR of ``arm`` against ``base``."""
    a, b = base["new_items"]["impressions"], arm["new_items"]["impressions"]
    return {"new_impressions": [a, b], "ratio": b / max(a, 1),
            "ctr": [base["ctr"]["ctr"], arm["ctr"]["ctr"]],
            "ctr_relative_loss": 1 - arm["ctr"]["ctr"] / base["ctr"]["ctr"]}  # fmt: skip


def ctr(shown: list[Shown], since_day: int = 1, position: int | None = None) -> dict:
    rows = [s for s in shown if s.day >= since_day]
    if position is None:
        clicks = sum(sum(s.clicks) for s in rows)
        n = sum(len(s.clicks) for s in rows)
    else:
        sel = [s.clicks[position] for s in rows if len(s.clicks) > position]
        clicks, n = sum(sel), len(sel)
    return {"impressions": n, "clicks": clicks, "ctr": clicks / n if n else float("nan")}


def new_item_stats(shown: list[Shown], new: set[str]) -> dict:
    rows = [s for s in shown if s.day >= 2]
    imp = sum(i in new for s in rows for i in s.items)
    clk = sum(c for s in rows for i, c in zip(s.items, s.clicks, strict=True) if i in new)
    reached = len({i for s in rows for i in s.items if i in new})
    return {"impressions": imp, "clicks": clk, "items_shown": reached, "items": len(new)}


def detection(looks: list[dict], arm: str) -> dict:
    """The first look at which each test called the arm, and the users it had then."""
    out: dict = {}
    for key, test in (("alpha_spending", "crossed"), ("msprt", "p_always_valid")):
        hit = None
        for look in looks:
            a = look["arms"].get(arm, {})
            sig = a.get("crossed") if test == "crossed" else (a.get("p_always_valid", 1) < 0.05)
            if sig:
                users = sum(x["users"] for x in look["arms"].values())
                hit = {"day": look["day"], "users": users, "effect": a.get("effect_cuped"),
                       "lift": a.get("lift")}  # fmt: skip
                break
        out[key] = hit
    last = looks[-1]["arms"][arm] if looks else {}
    out["final"] = {k: last.get(k) for k in ("users", "mean", "effect", "lift", "ci",
                                            "effect_cuped", "ci_cuped", "p_always_valid",
                                            "z", "boundary")}  # fmt: skip
    out["control_mean"] = looks[-1]["arms"][looks[-1]["control"]]["mean"] if looks else None
    out["srm_p"] = looks[-1]["srm_p"] if looks else None
    return out


def aa_replays(
    shown: list[Shown], people: People, experiment: dict, runs: int, seed: int,
    server_looks: list[dict],
) -> dict:  # fmt: skip
    """The A/A error rate over ``runs`` replays of the served lists (the module says how)."""
    from avrec.online.experiments import ExperimentConfig, analyze, assign

    days = max(s.day for s in shown)
    probs = [people.p_play(s.user, s.items) for s in shown]
    fp = {"msprt": 0, "alpha_spending": 0, "t_test_every_day": 0}
    check = None
    from scipy import stats

    for run in range(runs):
        rng = np.random.default_rng(seed + run)
        exp = ExperimentConfig(**{**experiment, "salt": f"replay-{run}"} if run else experiment)
        if run == 0:  # the server's own data: its salt and its plays
            clicks = [np.array(s.clicks) for s in shown]
        else:
            clicks = [(rng.random(len(p)) < p).astype(int) for p in probs]
        arm = {u: assign(exp, u).name for u in people.users}
        pre: dict[str, float] = {}
        acc: dict[str, list[float]] = {}
        p_prev: dict[str, float] = {}
        history: dict = {}
        hit = {"msprt": False, "alpha_spending": False, "t_test_every_day": False}
        last = None
        for day in range(days + 1):
            for s, c in zip(shown, clicks, strict=True):
                if s.day != day:
                    continue
                if day == 0:
                    pre[s.user] = pre.get(s.user, 0.0) + float(c.sum())
                else:
                    a = acc.setdefault(s.user, [0.0, 0.0])
                    a[0] += float(c.sum())
                    a[1] += len(c)
            if day == 0:
                continue
            users = {u: (arm[u], a[0] / a[1], pre.get(u, 0.0)) for u, a in acc.items()}
            out = analyze(exp, users, p_prev, history)
            b = out["arms"]["b"]
            p_prev = {"b": b["p_always_valid"]}
            history = {"b": {"info": b["info"], "crossed": b["crossed"]}}
            hit["msprt"] |= b["p_always_valid"] < 0.05
            hit["alpha_spending"] |= b["crossed"]
            ya = [y for v, y, _ in users.values() if v == "a"]
            yb = [y for v, y, _ in users.values() if v == "b"]
            hit["t_test_every_day"] |= stats.ttest_ind(ya, yb, equal_var=False).pvalue < 0.05
            last = out
        for k, v in hit.items():
            fp[k] += v
        if run == 0 and server_looks:
            srv = server_looks[-1]["arms"]["b"]
            keys = ("users", "effect", "p_always_valid", "z")
            check = {"server": {k: srv.get(k) for k in keys},
                     "replay": {k: last["arms"]["b"].get(k) for k in keys}}  # fmt: skip
    rate = {k: v / runs for k, v in fp.items()}
    ci = {k: [max(0.0, r - 1.96 * math.sqrt(r * (1 - r) / runs)),
              r + 1.96 * math.sqrt(r * (1 - r) / runs)] for k, r in rate.items()}  # fmt: skip
    return {"runs": runs, "looks": days, "false_positives": fp, "rate": rate, "ci95": ci,
            "run0_check": check}  # fmt: skip


def ope(explore: dict, second: dict, rate: float) -> dict:
    """Off-policy estimates of the second pipeline's click rate at the slot from the
    exploring phase's logs, against its simulated online click rate there."""
    import polars as pl

    from avrec.online.explore import estimate_slot

    imp = explore["impressions"]
    slot = imp.filter(pl.col("position") == SLOT)
    by_rid = {s.request_id: s for s in explore["shown"]}
    rows = []
    for r in slot.select("request_id", "user_id", "item_id", "propensity").iter_rows():
        s = by_rid.get(r[0])
        if s is None or s.day < 1:
            continue
        rows.append({"request_id": r[0], "user_id": r[1], "item_id": r[2],
                     "propensity": float(r[3]), "click": s.clicks[SLOT]})  # fmt: skip
    logged = pl.DataFrame(rows)
    target = {s.request_id: s.shadow_slot for s in explore["shown"]}
    # a position-based reward model from the same logs: each item's plays over its examined
    # impressions (examination per position estimated as that position's click rate over
    # the first's), times the slot's examination
    pos = imp.select("request_id", "position", "item_id")
    clicks = {(s.request_id, p): c for s in explore["shown"] for p, c in enumerate(s.clicks)}
    pc = np.zeros(K)
    pn = np.zeros(K)
    per: dict[str, list[float]] = {}
    for rid, p, item in pos.iter_rows():
        c = clicks.get((rid, p))
        if c is None or p >= K:
            continue
        pc[p] += c
        pn[p] += 1
        per.setdefault(item, []).append(p)
    exam = (pc / np.maximum(pn, 1)) / max(pc[0] / max(pn[0], 1), 1e-9)
    got: dict[str, list[float]] = {}
    for rid, p, item in pos.iter_rows():
        c = clicks.get((rid, p))
        if c is None or p >= K:
            continue
        g = got.setdefault(item, [0.0, 0.0])
        g[0] += c
        g[1] += exam[p]
    base = float(pc.sum() / max(sum(exam[p] * pn[p] for p in range(K)), 1e-9))

    def q(item: str | None) -> float:
        g = got.get(item or "")
        a = 1.0  # a prior of one examined impression at the catalogue's rate
        rate_i = (g[0] + a * base) / (g[1] + a) if g else base
        return float(min(1.0, rate_i * exam[SLOT]))

    est_default = estimate_slot(logged, lambda u, rid: target.get(rid))
    est = estimate_slot(logged, lambda u, rid: target.get(rid), reward_model=q)
    truth = ctr(second["shown"], 1, SLOT)
    out = {"logged_requests": len(rows), "explore_rate": rate, "truth": truth,
           "estimates": {k: est[k] for k in ("ips", "snips", "dr")},
           "estimates_item_prior": {k: est_default[k] for k in ("ips", "snips", "dr")},
           "matched": est["matched"], "logged_ctr": est["logged_ctr"],
           "examination": exam.round(3).tolist()}  # fmt: skip
    out["relative_error"] = {k: abs(v - truth["ctr"]) / truth["ctr"]
                             for k, v in out["estimates"].items()}  # fmt: skip
    return out


def _found(h: dict | None) -> str:
    return f"day {h['day']}, {h['users']} users" if h else "not within the days"


def update_markdown(res: dict) -> None:
    a, pv = res["args"], res["provenance"]
    f = lambda x: "–" if x is None else f"{x:.4f}"  # noqa: E731
    lines = [
        f"Measured with `python -m benchmarks.online_sim` ({pv['date']}, `{pv['commit']}`, "
        f"{pv['machine']}): {res['people']['users']} simulated people, each arriving on a "
        f"day with probability {a['arrive']}, a pre-period day and {a['days']} days, one "
        "first page of 10 each arrival through the real server, plays through the real "
        f"events API. {a['new_items']} items held out of the workspace arrive on day 2.",
        "",
    ]
    if "aa" in res:
        aa = res["aa"]
        lines += [
            f"**A/A** ({aa['runs']} runs, a look every day for {aa['looks']} days; run 0 "
            "is the server's own, the others replay its lists with new salts and new "
            "plays):",
            "",
            "| test | false positives | rate | 95% interval |",
            "|---|---|---|---|",
        ]
        for k, label in (
            ("alpha_spending", "alpha spending (planned looks)"),
            ("msprt", "mSPRT (always valid)"),
            ("t_test_every_day", "a t-test at every look (wrong)"),
        ):
            lines.append(
                f"| {label} | {aa['false_positives'][k]} | {aa['rate'][k]:.3f} | "
                f"{aa['ci95'][k][0]:.3f}–{aa['ci95'][k][1]:.3f} |"
            )
        chk = aa.get("run0_check") or {}
        if chk:
            lines += [
                "",
                f"Run 0 replayed gives the server's last look: users "
                f"{chk['replay']['users']} / {chk['server']['users']}, effect "
                f"{f(chk['replay']['effect'])} / {f(chk['server']['effect'])} (replay / "
                "server).",
            ]
        lines.append("")
    ab = [(k, t) for k, t in (("ab-popular", "today's pipeline against popularity"),
                              ("ab-close", "today's pipeline against its sources fused "
                               "without the ranker")) if k in res]  # fmt: skip
    if ab:
        lines += [
            "**A/B** (arm b against a, today's pipeline; clicks per impression per user):",
            "",
            "| test | a | b | lift | CUPED effect (95%) | alpha spending found it | "
            "mSPRT found it |",
            "|---|---|---|---|---|---|---|",
        ]
        for k, label in ab:
            d = res[k]
            fin = d["final"]
            ci = fin.get("ci_cuped") or [None, None]
            lines.append(
                f"| {label} | {f(d['control_mean'])} | {f(fin['mean'])} | "
                f"{(fin['lift'] or 0):+.1%} | {f(fin['effect_cuped'])} ({f(ci[0])} to "
                f"{f(ci[1])}) | {_found(d['alpha_spending'])} | {_found(d['msprt'])} |"
            )
        lines.append("")
    if res.get("exploration"):
        lines += [
            f"**Exploration** (the slot: `explore_rate` {a['explore_rate']}, "
            f"`explore_fresh_share` {a['fresh_share']}, at position {SLOT}; the content mix: "
            "`mix_new`, new items close to a person's taste put into their pages). Days 2 "
            f"to {a['days']}, after the new items arrive:",
            "",
            "| phase | impressions of the new items | their clicks | new items shown | "
            "CTR of all |",
            "|---|---|---|---|---|",
        ]
        for k, label in (("none", "neither"), ("aa", "content mix (the default)"),
                         ("slot", "slot"), ("explore", "content mix and slot")):  # fmt: skip
            if k not in res["phases"]:
                continue
            n = res["phases"][k]["new_items"]
            lines.append(
                f"| {label} | {n['impressions']} | {n['clicks']} | "
                f"{n['items_shown']} of {n['items']} | "
                f"{res['phases'][k]['ctr']['ctr']:.4f} |"
            )
        lines.append("")
        names = {"slot/none": "the slot against neither",
                 "explore/aa": "the slot added to the content mix",
                 "aa/none": "the content mix against neither",
                 "explore/none": "both against neither"}  # fmt: skip
        for key, e in res["exploration"].items():
            before, after = e["new_impressions"]
            times = f"{e['ratio']:.2f}x" if before else "none before"
            lines.append(
                f"- {names.get(key, key)}: {after} against {before} impressions of the new "
                f"items ({times}); overall CTR {e['ctr_relative_loss']:.1%} lower."
            )
        lines.append("")
    if "ope" in res:
        o = res["ope"]
        lines += [
            f"**Off-policy estimates** of the fusion-only pipeline's click rate at slot {SLOT} "
            f"from the exploring phase's {o['logged_requests']} logged requests "
            f"({o['matched']} where the logged item is the one it would show), against that "
            f"pipeline served to everyone: {o['truth']['ctr']:.4f} "
            f"({o['truth']['impressions']} impressions).",
            "",
            "| estimator | estimate | relative error |",
            "|---|---|---|",
        ]
        for k in ("ips", "snips", "dr"):
            lines.append(
                f"| {k.upper()} | {o['estimates'][k]:.4f} | {o['relative_error'][k]:.1%} |"
            )
        lines.append("")
    sweep_file = RESULTS / "online-sim-sweep.json"
    if sweep_file.exists():
        sw = json.loads(sweep_file.read_text())
        sp = sw["provenance"]
        lines += [
            f"**How the exploration settings were chosen** (`--sweep --seed "
            f"{sw['args']['seed']}`, a development seed: other people's noise and arrivals; "
            f"{sp['date']}, `{sp['commit']}`): the slot alone (no content mix) at each rate and "
            "fresh share against no exploration at all; chosen: the most impressions of the "
            "new items at a relative CTR loss of at most 3% (the issue's bound).",
            "",
            "| rate | fresh share | new items' impressions | CTR | relative loss |",
            "|---|---|---|---|---|",
            f"| 0 | – | {sw['baseline']['new_items']['impressions']} | "
            f"{sw['baseline']['ctr']['ctr']:.4f} | – |",
        ]
        ch = sw.get("chosen") or {}
        for c in sw["cells"]:
            mark = (
                " (chosen)"
                if (c["explore_rate"], c["fresh_share"])
                == (ch.get("explore_rate"), ch.get("fresh_share"))
                else ""
            )
            lines.append(
                f"| {c['explore_rate']}{mark} | {c['fresh_share']} | "
                f"{c['new_impressions'][1]} | {c['ctr'][1]:.4f} | "
                f"{c['ctr_relative_loss']:.1%} |"
            )
        lines.append("")
    secs = ", ".join(f"{k} {v['seconds']:.0f} s ({v['requests']} pages)"
                     for k, v in res["phases"].items())  # fmt: skip
    lines.append(f"Phases: {secs}.")
    replace_block("online-sim", lines, "### The online loop in a simulation")
