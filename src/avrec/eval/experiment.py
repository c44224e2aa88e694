"""Experiments: models x split x metrics -> a results table with intervals and significance.

Cornac's ``Experiment`` composes models, a split and metrics; results come back as a table. The
models are the same objects the service uses; each is fitted on the split's training part and
scored through its own ``_score_batch``.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from avrec.data.dataset import Dataset
from avrec.errors import ConfigError
from avrec.eval._memory import PeakRSS
from avrec.eval.evaluate import ModelEval, evaluate_model, history_lengths, metric_context
from avrec.eval.metrics import Metric, parse_metrics
from avrec.eval.splits import Split, SplitResult, Stage
from avrec.eval.stats import bootstrap_ci, paired_test
from avrec.models.base import Recommender

__all__ = ["Experiment", "ExperimentResult", "user_group_labels"]

DEFAULT_METRICS = [
    "hr",
    "recall",
    "precision",
    "f1",
    "ndcg",
    "mrr",
    "map",
    "auc",
    "gauc",
    "coverage",
    "gini",
    "ild",
    "novelty",
    "arp",
]


def user_group_labels(lengths: np.ndarray, bounds: tuple[int, ...] = (5, 20, 100)) -> np.ndarray:
    """Labels by history length: ``0``, ``1-5`` (cold), ``6-20`` (sparse), ``21-100``, ``101+``."""
    edges = [0, *bounds]
    names = ["0"] + [f"{a + 1}-{b}" for a, b in zip(edges[:-1], edges[1:], strict=True)]
    names.append(f"{bounds[-1] + 1}+")
    idx = np.searchsorted(np.asarray(bounds), lengths, side="left") + 1
    idx = np.where(lengths == 0, 0, idx)
    return np.asarray(names, dtype=object)[idx]


def item_buckets(item_counts: np.ndarray) -> np.ndarray:
    """``head`` / ``mid`` / ``tail`` by training interactions (each a third of all
    interactions, most popular first), ``unseen`` for items without any."""
    order = np.argsort(-item_counts, kind="stable")
    cum = np.cumsum(item_counts[order]) / max(item_counts.sum(), 1)
    labels = np.empty(len(item_counts), dtype=object)
    labels[order] = np.where(cum <= 1 / 3, "head", np.where(cum <= 2 / 3, "mid", "tail"))
    first = order[0] if len(order) else None
    if first is not None and item_counts[first] > 0:
        labels[first] = "head"  # the top item opens the head even if it alone holds > 1/3
    labels[item_counts == 0] = "unseen"
    return labels


@dataclass
class ExperimentResult:
    """Everything an experiment produced.

    Attributes:
        table: one row per model x metric: ``model, metric, k, value, ci_low, ci_high, users,
            significant_vs_best, p_vs_best``.
        by_user_group: ``model, metric, k, group, value, users``.
        by_item_bucket: ``model, metric, k, bucket, value, targets`` (per target).
        comparisons: paired tests of every model against the best on each per-user metric.
        evals: the raw per-user results per model.
        meta: protocol, dataset and split statistics, seed, versions, timings.
    """

    table: pl.DataFrame
    by_user_group: pl.DataFrame
    by_item_bucket: pl.DataFrame
    comparisons: pl.DataFrame
    evals: dict[str, ModelEval]
    meta: dict[str, Any] = field(default_factory=dict)
    item_users: np.ndarray | None = None  # training users per item (for popularity plots)

    def value(self, model: str, metric: str) -> float:
        """One figure, e.g. ``value("ease", "ndcg@10")``."""
        row = self.table.filter((pl.col("model") == model) & (pl.col("metric") == metric))
        if row.height == 0:
            raise KeyError(f"no result for {model} / {metric}")
        return float(row["value"][0])

    def records(self) -> list[dict[str, Any]]:
        return self.table.to_dicts()

    def to_json(self, path: str | Path | None = None) -> str:
        """The results as JSON (records plus protocol and statistics); written if ``path``."""
        doc = {
            "results": self.records(),
            "by_user_group": self.by_user_group.to_dicts(),
            "by_item_bucket": self.by_item_bucket.to_dicts(),
            "comparisons": self.comparisons.to_dicts(),
            **self.meta,
        }
        text = json.dumps(doc, indent=2, default=_json_default)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer | np.floating):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


class Experiment:
    """Fit models on a split and evaluate them.

    Args:
        split: a :class:`Split` (applied to the dataset given to :meth:`run`) or a ready
            :class:`SplitResult`.
        models: model objects, or a dict name -> model (names label the results).
        metrics: :class:`Metric` objects or names (``"ndcg@10"``, ``"ndcg"`` expanded over ``ks``).
        ks: list lengths for metric names given without ``@K``.
        stage: ``"test"`` (default) or ``"valid"``.
        sampled: rank against this many sampled negatives instead of all items (labelled
            ``sampled-N`` in every output).
        n_bootstrap: bootstrap resamples for intervals and tests.
        user_groups: bounds of the history-length groups.
        dataset: the dataset to split, so that :meth:`run` needs no argument.
        candidates: boolean mask over items; only these are ranked (labelled in the protocol).
    """

    def __init__(
        self,
        split: Split | SplitResult,
        models: list[Recommender] | dict[str, Recommender],
        metrics: list[Metric] | list[str] | None = None,
        ks: list[int] | tuple[int, ...] = (10, 20),
        stage: Stage = "test",
        exclude_history: bool = True,
        sampled: int | None = None,
        n_bootstrap: int = 1000,
        seed: int = 0,
        user_groups: tuple[int, ...] = (5, 20, 100),
        progress: Any = None,
        dataset: Dataset | None = None,
        candidates: np.ndarray | None = None,
    ) -> None:
        self.split = split
        if candidates is not None:
            candidates = np.asarray(candidates)
            if candidates.dtype != bool or candidates.ndim != 1:
                raise ConfigError("candidates must be a boolean mask over the items")
        self.candidates = candidates
        self.dataset = dataset
        if isinstance(models, dict):
            self.models = dict(models)
        else:
            self.models = {}
            for m in models:
                name = m.name
                n = 2
                while name in self.models:
                    name = f"{m.name}-{n}"
                    n += 1
                self.models[name] = m
        if not self.models:
            raise ConfigError("an experiment needs at least one model")
        names = metrics if metrics is not None else DEFAULT_METRICS
        self.metrics: list[Metric] = (
            parse_metrics([str(n) for n in names], list(ks))
            if all(isinstance(n, str) for n in names)
            else list(names)  # type: ignore[arg-type]
        )
        self.ks = list(ks)
        self.stage: Stage = stage
        self.exclude_history = exclude_history
        self.sampled = sampled
        self.n_bootstrap = n_bootstrap
        self.seed = seed
        self.user_groups = user_groups
        self.progress = progress

    @property
    def protocol(self) -> str:
        ranking = f"sampled-{self.sampled}" if self.sampled else "full"
        among = (
            f" among {int(self.candidates.sum()):,} candidate items"
            if self.candidates is not None
            else ""
        )
        history = "history excluded" if self.exclude_history else "all items"
        return f"{ranking} ranking{among}, {history}"

    def run(self, dataset: Dataset | None = None) -> ExperimentResult:
        """Split (when needed), fit every model, evaluate, and assemble the results."""
        dataset = dataset if dataset is not None else self.dataset
        if isinstance(self.split, SplitResult):
            split = self.split
        else:
            if dataset is None:
                raise ConfigError("run(dataset) needs a dataset when the split is not applied")
            split = self.split.split(dataset)
        if self.candidates is not None and len(self.candidates) != split.full.n_items:
            raise ConfigError(
                f"candidates has {len(self.candidates)} entries for {split.full.n_items} items"
            )
        ctx = metric_context(split)
        valid = split.full.select(split.masks["valid"], name=f"{split.full.name}:valid")
        evals: dict[str, ModelEval] = {}
        fit_seconds: dict[str, float] = {}
        self._fit_peak_mb: dict[str, float] = {}
        for name, model in self.models.items():
            t = time.perf_counter()
            with PeakRSS() as probe:
                model.fit(split.train, valid)
            fit_seconds[name] = time.perf_counter() - t
            self._fit_peak_mb[name] = probe.peak_mb
            evals[name] = evaluate_model(
                model,
                split,
                self.metrics,
                self.stage,
                self.exclude_history,
                self.sampled,
                self.seed,
                ctx=ctx,
                candidates=self.candidates,
            )
            if self.progress is not None:
                self.progress(name)
        return self._assemble(split, evals, fit_seconds, ctx.item_users)

    # -- assembly -----------------------------------------------------------------------------
    def _assemble(
        self,
        split: SplitResult,
        evals: dict[str, ModelEval],
        fit_seconds: dict[str, float],
        item_users: np.ndarray,
    ) -> ExperimentResult:
        rows = []
        for name, ev in evals.items():
            for m in self.metrics:
                if m.kind == "global":
                    v = ev.global_values[m.name]
                    rows.append(
                        {
                            "model": name,
                            "metric": m.name,
                            "k": m.k,
                            "value": v,
                            "ci_low": None,
                            "ci_high": None,
                            "users": len(ev.users),
                        }
                    )
                    continue
                mean, lo, hi = bootstrap_ci(
                    ev.per_user[m.name], ev.weights[m.name], self.n_bootstrap, seed=self.seed
                )
                rows.append(
                    {
                        "model": name,
                        "metric": m.name,
                        "k": m.k,
                        "value": mean,
                        "ci_low": lo,
                        "ci_high": hi,
                        "users": int((~np.isnan(ev.per_user[m.name])).sum()),
                    }
                )
        table = pl.DataFrame(
            rows,
            schema={
                "model": pl.String,
                "metric": pl.String,
                "k": pl.Int64,
                "value": pl.Float64,
                "ci_low": pl.Float64,
                "ci_high": pl.Float64,
                "users": pl.Int64,
            },
        )
        comparisons = self._compare(evals, table)
        table = self._mark_significance(table, comparisons)
        lengths = history_lengths(split, self.stage)
        by_group = self._by_group(evals, lengths)
        by_bucket = self._by_bucket(evals, item_users)
        from avrec import __version__

        meta = {
            "protocol": {
                "ranking": self.protocol,
                "stage": self.stage,
                "split": split.stats(),
                "exclude_history": self.exclude_history,
                "sampled_negatives": self.sampled,
                "ties": "a score tied with the target counts against it",
                "history_at_test": "training plus validation items"
                if self.stage == "test"
                else "training items",
            },
            "dataset": {k: v for k, v in split.full.stats().items() if k != "events_by_type"}
            | {"name": split.full.name},
            "seed": self.seed,
            "n_bootstrap": self.n_bootstrap,
            "models": {
                n: {
                    "kind": m.name,
                    "config": m.config.model_dump(),
                    "fit_seconds": round(fit_seconds[n], 3),
                    "fit_peak_rss_mb": round(self._fit_peak_mb.get(n, float("nan")), 1),
                    "eval_seconds": round(evals[n].seconds, 3),
                    "privacy": getattr(m, "privacy", None),
                }
                for n, m in self.models.items()
            },
            "versions": _versions(__version__),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        return ExperimentResult(table, by_group, by_bucket, comparisons, evals, meta, item_users)

    def _compare(self, evals: dict[str, ModelEval], table: pl.DataFrame) -> pl.DataFrame:
        rows = []
        if len(evals) < 2:
            return pl.DataFrame(
                schema={
                    "metric": pl.String,
                    "best": pl.String,
                    "model": pl.String,
                    "diff": pl.Float64,
                    "ci_low": pl.Float64,
                    "ci_high": pl.Float64,
                    "p_value": pl.Float64,
                    "p_ttest": pl.Float64,
                    "p_wilcoxon": pl.Float64,
                    "significant": pl.Boolean,
                }
            )
        for m in self.metrics:
            if m.kind == "global":
                continue
            sub = (
                table.filter(pl.col("metric") == m.name)
                .drop_nulls("value")
                .filter(pl.col("value").is_not_nan())
            )
            if sub.height < 2:
                continue
            lower_is_better = m.label == "arp"
            best = sub.sort("value", descending=not lower_is_better)["model"][0]
            for name, ev in evals.items():
                if name == best:
                    continue
                t = paired_test(
                    evals[best].per_user[m.name],
                    ev.per_user[m.name],
                    self.n_bootstrap,
                    seed=self.seed,
                    weights=evals[best].weights[m.name],
                )
                rows.append(
                    {
                        "metric": m.name,
                        "best": best,
                        "model": name,
                        "diff": t["diff"],
                        "ci_low": t["ci_low"],
                        "ci_high": t["ci_high"],
                        "p_value": t["p_value"],
                        "p_ttest": t["p_ttest"],
                        "p_wilcoxon": t["p_wilcoxon"],
                        "significant": t["p_value"] < 0.05,
                    }
                )
        return pl.DataFrame(rows)

    @staticmethod
    def _mark_significance(table: pl.DataFrame, comparisons: pl.DataFrame) -> pl.DataFrame:
        """Add ``is_best``, ``significant_vs_best`` and ``p_vs_best`` columns."""
        if comparisons.height == 0:
            return table.with_columns(
                pl.lit(None, pl.Boolean).alias("is_best"),
                pl.lit(None, pl.Boolean).alias("significant_vs_best"),
                pl.lit(None, pl.Float64).alias("p_vs_best"),
            )
        best = comparisons.select("metric", "best").unique()
        c = comparisons.select(
            "metric",
            "model",
            pl.col("significant").alias("significant_vs_best"),
            pl.col("p_value").alias("p_vs_best"),
        )
        return (
            table.join(best, on="metric", how="left", maintain_order="left")
            .with_columns(
                pl.when(pl.col("best").is_null())
                .then(None)
                .otherwise(pl.col("best") == pl.col("model"))
                .alias("is_best")
            )
            .drop("best")
            .join(c, on=["metric", "model"], how="left", maintain_order="left")
        )

    def _by_group(self, evals: dict[str, ModelEval], lengths: np.ndarray) -> pl.DataFrame:
        rows = []
        for name, ev in evals.items():
            labels = user_group_labels(lengths[ev.users], self.user_groups)
            for m in self.metrics:
                if m.kind == "global":
                    continue
                v, w = ev.per_user[m.name], ev.weights[m.name]
                for g in _ordered_groups(labels):
                    sel = (labels == g) & ~np.isnan(v)
                    if not sel.any():
                        continue
                    rows.append(
                        {
                            "model": name,
                            "metric": m.name,
                            "k": m.k,
                            "group": g,
                            "value": float((v[sel] * w[sel]).sum() / max(w[sel].sum(), 1e-300)),
                            "users": int(sel.sum()),
                        }
                    )
        return pl.DataFrame(rows)

    def _by_bucket(self, evals: dict[str, ModelEval], item_users: np.ndarray) -> pl.DataFrame:
        buckets = item_buckets(item_users)
        rows = []
        ks = sorted({m.k for m in self.metrics if m.kind == "rank" and m.k})
        for name, ev in evals.items():
            b = buckets[ev.t_item] if len(ev.t_item) else np.zeros(0, dtype=object)
            for k in ks:
                hit = ev.t_rank < k
                gain = np.where(hit, 1.0 / np.log2(ev.t_rank + 2.0), 0.0)
                for bucket in ("head", "mid", "tail", "unseen"):
                    sel = b == bucket
                    if not sel.any():
                        continue
                    rows.append(
                        {
                            "model": name,
                            "metric": f"recall@{k}",
                            "k": k,
                            "bucket": bucket,
                            "value": float(hit[sel].mean()),
                            "targets": int(sel.sum()),
                        }
                    )
                    rows.append(
                        {
                            "model": name,
                            "metric": f"ndcg@{k}",
                            "k": k,
                            "bucket": bucket,
                            "value": float(gain[sel].mean()),
                            "targets": int(sel.sum()),
                        }
                    )
        return pl.DataFrame(rows)


def _ordered_groups(labels: np.ndarray) -> list[str]:
    def key(g: str) -> int:
        return int(g.split("-")[0].rstrip("+"))

    return sorted(set(labels.tolist()), key=key)


def _versions(avrec_version: str) -> dict[str, str]:
    import polars
    import scipy

    return {
        "avrec": avrec_version,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "polars": polars.__version__,
        "platform": platform.platform(),
    }
