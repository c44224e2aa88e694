"""A small, bounded hyperparameter search (optuna) on the validation split.

The objective fits the model on the split's training part and scores NDCG@10 on the validation
targets (history = training items), so the test targets are never seen. The chosen values are
recorded on the model (``tuned_``) and saved into its manifest.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from avrec.errors import ConfigError
from avrec.eval.evaluate import evaluate_model, metric_context
from avrec.eval.metrics import parse_metrics
from avrec.eval.splits import SplitResult
from avrec.models.base import Recommender, create_model

__all__ = ["SEARCH_SPACES", "TuneResult", "tune"]

log = logging.getLogger(__name__)

# name -> (kind, low, high) or ("cat", choices)
SEARCH_SPACES: dict[str, dict[str, tuple]] = {
    "pop": {"half_life_days": ("float_log", 1.0, 3650.0)},
    "itemknn": {
        "neighbours": ("int_log", 10, 1000),
        "shrink": ("float", 0.0, 100.0),
        "similarity": ("cat", ["cosine", "bm25"]),
    },
    "ease": {"l2": ("float_log", 10.0, 5000.0)},
    "als": {
        "factors": ("cat", [32, 64, 128]),
        "regularization": ("float_log", 1e-3, 1.0),
        "alpha": ("float_log", 0.1, 50.0),
        "iterations": ("int", 5, 30),
    },
    "bpr": {
        "factors": ("cat", [32, 64, 128]),
        "learning_rate": ("float_log", 1e-3, 0.2),
        "regularization": ("float_log", 1e-4, 0.1),
        "iterations": ("int", 20, 300),
    },
    "mf": {
        "factors": ("cat", [16, 32, 64]),
        "regularization": ("float_log", 1e-3, 10.0),
        "negatives": ("int", 1, 10),
        "iterations": ("int", 5, 25),
    },
    "markov": {
        "window": ("int", 1, 8),
        "decay": ("float", 0.1, 1.0),
        "beta": ("float_log", 0.01, 100.0),
        "categories": ("float", 0.0, 2.0),
    },
    "sasrec": {
        "dim": ("cat", [32, 64, 128]),
        "layers": ("int", 1, 3),
        "dropout": ("float", 0.0, 0.5),
        "lr": ("float_log", 1e-4, 5e-3),
        "max_len": ("cat", [20, 50, 100]),
    },
}


@dataclass
class TuneResult:
    """The outcome of a search."""

    model: str
    best_params: dict[str, Any]
    best_value: float
    metric: str
    trials: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    best_model: Recommender | None = None


def _suggest(trial: Any, name: str, spec: tuple) -> Any:
    kind = spec[0]
    if kind == "cat":
        return trial.suggest_categorical(name, spec[1])
    if kind == "int":
        return trial.suggest_int(name, spec[1], spec[2])
    if kind == "int_log":
        return trial.suggest_int(name, spec[1], spec[2], log=True)
    if kind == "float":
        return trial.suggest_float(name, spec[1], spec[2])
    if kind == "float_log":
        return trial.suggest_float(name, spec[1], spec[2], log=True)
    raise ConfigError(f"unknown search kind {kind!r} for {name}")


def tune(
    name: str,
    split: SplitResult,
    n_trials: int = 20,
    timeout_s: float | None = None,
    metric: str = "ndcg@10",
    fixed: dict[str, Any] | None = None,
    space: dict[str, tuple] | None = None,
    seed: int = 0,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
) -> TuneResult:
    """Search ``name``'s hyperparameters with optuna's TPE sampler on the validation stage.

    Args:
        fixed: parameters held constant (e.g. a time budget for SASRec).
        space: overrides :data:`SEARCH_SPACES` for this model.
        engine: ``local`` (trials one after another here) or ``ray``: trials in parallel on
            the cluster, one per CPU (or ``workers``). The study stays in this process
            (optuna's ask and tell; TPE told of running trials by a constant liar), the
            split goes to the cluster once, and the best parameters are fitted again here.

    Raises:
        ConfigError: no search space for the model, or an unknown metric.
    """
    import optuna

    space = space or SEARCH_SPACES.get(name)
    if not space:
        raise ConfigError(f"no search space for model {name!r}; known: {sorted(SEARCH_SPACES)}")
    metrics = parse_metrics([metric])
    fixed = dict(fixed or {})
    ctx = metric_context(split)
    valid = split.full.select(split.masks["valid"])
    start = time.perf_counter()
    best: dict[str, Any] = {"value": -1.0, "model": None}

    def objective(trial: Any) -> float:
        params = {k: _suggest(trial, k, v) for k, v in space.items()}
        model = create_model(name, **{**params, **fixed})
        model.fit(split.train, valid)
        ev = evaluate_model(model, split, metrics, stage="valid", ctx=ctx)
        value = float(ev.per_user[metrics[0].name].mean()) if len(ev.users) else 0.0
        if value > best["value"]:
            best.update(value=value, model=model)
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if engine == "ray":
        from avrec.compute.ray import tune_trials

        sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        tune_trials(study, name, space, fixed, split, metric, n_trials, timeout_s,
                    _suggest, address, workers)  # fmt: skip
        done = [t for t in study.trials if t.value is not None]
        if done:  # the best trial's model, fitted here (the cluster's copies stay there)
            objective(optuna.trial.FixedTrial(study.best_params))
    else:
        study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed)
        )
        study.optimize(objective, n_trials=n_trials, timeout=timeout_s)
    trials = [
        {"number": t.number, "value": t.value, **t.params}
        for t in study.trials
        if t.value is not None
    ]
    params = {**study.best_params, **fixed}
    model = best["model"]
    if model is not None:
        model.tuned_ = {
            "params": params,
            f"valid_{metric}": study.best_value,
            "trials": len(trials),
            "search": "optuna TPE" + (" on Ray" if engine == "ray" else ""),
            "seed": seed,
        }
    return TuneResult(
        name, params, float(study.best_value), metric, trials, time.perf_counter() - start, model
    )
