"""Merging candidates with provenance, ranking features, and the learned ranker.

:func:`merge` unions the sources' candidates for one request and keeps, per item, each source's
score, rank and anchor. :class:`FeatureBuilder` turns a merged table into ranking features
(each source's score, rank and gap to its best, how many sources agree, plays and age counted up
to the request's time, content similarity to the recent history, language and duration match,
the user's activity). :class:`Ranker` is LightGBM's LambdaMART over those features; the pipeline
trains it on events the sources were not fitted on (held-out tails, a validation split), so it
never sees the events it is judged on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from avrec.data.dataset import Dataset
from avrec.errors import NotFittedError
from avrec.pipeline.sources import Candidates, Request
from avrec.pipeline.temporal import ItemTimeline

__all__ = ["FeatureBuilder", "Merged", "Ranker", "merge"]


@dataclass
class Merged:
    """Every candidate of one request, with what each source said about it."""

    items: np.ndarray  # int64, unique
    scores: np.ndarray  # n_items x n_sources, NaN where a source did not propose the item
    ranks: np.ndarray  # n_items x n_sources, 0-based, NaN where absent
    anchors: np.ndarray  # n_items x n_sources, -1 where none
    sources: list[str]

    def provenance(self, row: int) -> list[str]:
        """Names of the sources that proposed candidate ``row``."""
        return [s for j, s in enumerate(self.sources) if not np.isnan(self.scores[row, j])]

    def take(self, items: np.ndarray, sources: Sequence[str]) -> Merged:
        """The rows of ``items`` in that order, over the columns ``sources`` (an item or a
        source this table lacks gets NaN scores and ranks, and no anchor)."""
        items = np.asarray(items, np.int64)
        n, m = len(items), len(sources)
        scores = np.full((n, m), np.nan, np.float32)
        ranks = np.full((n, m), np.nan, np.float32)
        anchors = np.full((n, m), -1, np.int64)
        rows = {int(i): r for r, i in enumerate(self.items)}
        idx = np.asarray([rows.get(int(i), -1) for i in items], np.int64)
        ok = idx >= 0
        col = {s: j for j, s in enumerate(self.sources)}
        for j, name in enumerate(sources):
            c = col.get(name)
            if c is not None and ok.any():
                scores[ok, j] = self.scores[idx[ok], c]
                ranks[ok, j] = self.ranks[idx[ok], c]
                anchors[ok, j] = self.anchors[idx[ok], c]
        return Merged(items, scores, ranks, anchors, list(sources))


def merge(per_source: dict[str, Candidates]) -> Merged:
    """Union of the sources' candidates (order: first seen, sources in the given order)."""
    names = list(per_source)
    order: dict[int, int] = {}
    for c in per_source.values():
        for item in c.items:
            order.setdefault(int(item), len(order))
    n, m = len(order), len(names)
    scores = np.full((n, m), np.nan, np.float32)
    ranks = np.full((n, m), np.nan, np.float32)
    anchors = np.full((n, m), -1, np.int64)
    for j, name in enumerate(names):
        c = per_source[name]
        rows = np.asarray([order[int(i)] for i in c.items], dtype=np.int64)
        if len(rows):
            scores[rows, j] = c.scores
            ranks[rows, j] = np.arange(len(rows))
            anchors[rows, j] = c.anchors
    return Merged(np.fromiter(order, dtype=np.int64, count=n), scores, ranks, anchors, names)


class FeatureBuilder:
    """Ranking features for merged candidates.

    Args:
        feature: content vectors for similarity features (skipped when the dataset lacks them).
        recent: how many latest history items the similarity features look at.
    """

    #: windows (days) of the play counts before the request time
    WINDOWS = (1, 7, 30)

    def __init__(self, feature: str = "fused", recent: int = 5) -> None:
        self.feature = feature
        self.recent = recent

    def fit(self, dataset: Dataset) -> FeatureBuilder:
        self.timeline = ItemTimeline().fit(dataset)
        self.n_items = dataset.n_items
        x = dataset.item_features.get(self.feature)
        if x is not None:
            from avrec.features.base import l2_normalise

            self.vectors = l2_normalise(np.asarray(x, np.float32))
        else:
            self.vectors = None
        # language and duration match, when the catalogue has them
        langs = [(v or "").lower() for v in dataset.item_field("language")]
        codes = {v: j for j, v in enumerate(sorted({v for v in langs if v}))}
        self.lang = np.asarray([codes.get(v, -1) for v in langs], np.int64) if codes else None
        dur = np.asarray(
            [np.nan if v is None else float(v) for v in dataset.item_field("duration")], float
        )
        self.log_dur = np.log1p(dur).astype(np.float32) if np.isfinite(dur).any() else None
        return self

    def state(self) -> dict[str, np.ndarray]:
        out = {f"tl_{k}": v for k, v in self.timeline.state().items()}
        if self.vectors is not None:
            out["vectors"] = self.vectors
        if self.lang is not None:
            out["lang"] = self.lang
        if self.log_dur is not None:
            out["log_dur"] = self.log_dur
        return out

    def set_state(self, arrays: dict[str, np.ndarray]) -> FeatureBuilder:
        self.vectors = arrays.get("vectors")
        self.lang = arrays.get("lang")
        self.log_dur = arrays.get("log_dur")
        self.timeline = ItemTimeline().set_state(
            {k[3:]: v for k, v in arrays.items() if k.startswith("tl_")}
        )
        self.n_items = self.timeline.n_items
        return self

    def names(self, sources: Sequence[str]) -> list[str]:
        cols = [f"{s}:score" for s in sources] + [f"{s}:rank" for s in sources]
        cols += [f"{s}:gap" for s in sources]
        # popularity and age are counted up to the request's time, never later
        cols += ["n_sources", "log_plays", "log_history"]
        cols += [f"log_plays_{d}d" for d in self.WINDOWS] + ["age_at_request_days"]
        if self.vectors is not None:
            cols += ["sim_recent_max", "sim_recent_mean", "sim_profile"]
        if self.lang is not None:
            cols.append("language_share")  # of the user's history in the item's language
        if self.log_dur is not None:
            cols.append("log_duration_gap")  # from the user's median duration
        return cols

    def build(self, req: Request, merged: Merged) -> np.ndarray:
        """``n_candidates x len(names)`` float32 features."""
        items = merged.items
        n = len(items)
        if n == 0:
            return np.zeros((0, len(self.names(merged.sources))), np.float32)
        with np.errstate(all="ignore"):  # a source with no candidates: NaN gaps
            best = np.nanmax(merged.scores, axis=0, initial=-np.inf)
            gap = merged.scores - best
        t = req.time
        plays = np.log1p(
            self.timeline.window_counts(items, t, [None, *(d * 86400.0 for d in self.WINDOWS)])
        )
        parts = [
            merged.scores,
            merged.ranks,
            gap,
            (~np.isnan(merged.scores)).sum(axis=1, keepdims=True).astype(np.float32),
            plays[:, :1],
            np.full((n, 1), np.log1p(len(req.history)), np.float32),
            plays[:, 1:],
            self.timeline.age_days(items, t)[:, None],
        ]
        if self.vectors is not None:
            h = req.history[(req.history >= 0) & (req.history < len(self.vectors))]
            recent = list(dict.fromkeys(h[::-1]))[: self.recent]
            if recent and n:
                sims = self.vectors[items] @ self.vectors[recent].T
                profile = self.vectors[h].mean(axis=0)
                norm = np.linalg.norm(profile)
                prof = self.vectors[items] @ (profile / norm) if norm > 0 else np.zeros(n)
                parts += [sims.max(axis=1)[:, None], sims.mean(axis=1)[:, None], prof[:, None]]
            else:
                parts.append(np.full((n, 3), np.nan, np.float32))
        h = req.history[(req.history >= 0) & (req.history < self.n_items)]
        if self.lang is not None:
            known = self.lang[h][self.lang[h] >= 0]
            share = np.full(n, np.nan, np.float32)
            if len(known):
                freq = np.bincount(known, minlength=int(self.lang.max()) + 1) / len(known)
                cand = self.lang[items]
                share[cand >= 0] = freq[cand[cand >= 0]]
            parts.append(share)
        if self.log_dur is not None:
            hd = self.log_dur[h]
            hd = hd[np.isfinite(hd)]
            gap_d = np.abs(self.log_dur[items] - np.median(hd)) if len(hd) else np.full(n, np.nan)
            parts.append(gap_d)
        return np.concatenate([np.asarray(p, np.float32).reshape(n, -1) for p in parts], axis=1)


class Ranker:
    """LightGBM LambdaMART over candidate features.

    Args:
        n_estimators, learning_rate, num_leaves, min_child_samples: LightGBM's.
        seed: for reproducible trees.
    """

    def __init__(
        self,
        n_estimators: int = 300,
        learning_rate: float = 0.05,
        num_leaves: int = 7,
        min_child_samples: int = 100,
        subsample: float = 0.8,
        colsample_bytree: float = 0.8,
        early_stopping: int = 30,
        seed: int = 0,
    ) -> None:
        # small trees: a next-item target gives one or a few positives per request. The
        # pipeline's leaf count was chosen on validation data, never on a test item
        # (benchmarks/choose_defaults.py, benchmarks/results/choose-defaults.json); early
        # stopping on held-out requests picks how many trees
        self.params = {
            "n_estimators": n_estimators,
            "learning_rate": learning_rate,
            "num_leaves": num_leaves,
            "min_child_samples": min_child_samples,
            "subsample": subsample,
            "subsample_freq": 1,
            "colsample_bytree": colsample_bytree,
            "random_state": seed,
        }
        self.early_stopping = early_stopping
        self.seed = seed
        self.model = None
        self.booster = None
        self.feature_names: list[str] = []
        self.best_iteration: int | None = None

    def fit(
        self, features: Sequence[np.ndarray], labels: Sequence[np.ndarray], names: list[str]
    ) -> Ranker:
        """Learn from groups (one per request) of candidate features and 0/1 labels; groups
        without a positive carry no ranking signal and are left out. With ``early_stopping``
        and at least 200 groups, a tenth of them (seeded) is held out and training stops when
        their NDCG@10 has not improved for that many trees."""
        import lightgbm as lgb

        keep = [i for i, y in enumerate(labels) if y.sum() > 0 and len(y) > 1]
        if not keep:
            raise NotFittedError("no validation request has a target among its candidates")

        def stack(idx: list[int]) -> tuple[np.ndarray, np.ndarray, list[int]]:
            x = np.concatenate([features[i] for i in idx])
            y = np.concatenate([labels[i] for i in idx]).astype(np.int32)
            return x, y, [len(labels[i]) for i in idx]

        self.model = lgb.LGBMRanker(
            objective="lambdarank",
            importance_type="gain",
            verbose=-1,
            n_jobs=0,
            **self.params,
        )
        safe = [_safe(n) for n in names]
        if self.early_stopping and len(keep) >= 200:
            order = np.random.default_rng(self.seed).permutation(keep).tolist()
            cut = len(order) // 10
            x, y, g = stack(sorted(order[cut:]))
            xe, ye, ge = stack(sorted(order[:cut]))
            import inspect

            # LightGBM 4.7 renamed eval_set to eval_X / eval_y (the old name warns)
            held = (
                {"eval_X": (xe,), "eval_y": (ye,)}
                if "eval_X" in inspect.signature(self.model.fit).parameters
                else {"eval_set": [(xe, ye)]}
            )
            self.model.fit(
                x,
                y,
                group=g,
                feature_name=safe,
                **held,
                eval_group=[ge],
                eval_at=[10],
                callbacks=[lgb.early_stopping(self.early_stopping, verbose=False)],
            )
            self.best_iteration = int(self.model.best_iteration_ or self.params["n_estimators"])
        else:
            x, y, g = stack(keep)
            self.model.fit(x, y, group=g, feature_name=safe)
            self.best_iteration = int(self.params["n_estimators"])
        self.booster = self.model.booster_
        self.feature_names = names
        self.groups = len(keep)
        return self

    def to_string(self) -> str:
        """The trained model in LightGBM's text format."""
        if self.booster is None:
            raise NotFittedError("Ranker.fit has not been called")
        return self.booster.model_to_string()

    @classmethod
    def from_string(cls, text: str, names: list[str], groups: int = 0) -> Ranker:
        import lightgbm as lgb

        r = cls()
        r.booster = lgb.Booster(model_str=text)
        r.feature_names = names
        r.groups = groups
        return r

    def predict(self, features: np.ndarray) -> np.ndarray:
        if self.booster is None:
            raise NotFittedError("Ranker.fit has not been called")
        if not len(features):
            return np.zeros(0, np.float32)
        # one request's few hundred rows: threads cost more than they give
        return self.booster.predict(features, num_threads=1).astype(np.float32)

    def contributions(self, features: np.ndarray) -> np.ndarray:
        """Per-feature contributions to each candidate's score (SHAP values, last column the
        bias), for explanations."""
        if self.booster is None:
            raise NotFittedError("Ranker.fit has not been called")
        return self.booster.predict(features, pred_contrib=True, num_threads=1)

    def importances(self) -> dict[str, float]:
        if self.booster is None:
            raise NotFittedError("Ranker.fit has not been called")
        gains = self.booster.feature_importance("gain")
        total = float(gains.sum()) or 1.0
        return {n: float(g) / total for n, g in zip(self.feature_names, gains, strict=True)}


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)
