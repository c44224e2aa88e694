"""Experiment files (TOML): dataset, split, models and metrics in one place.

```toml
dataset = "movielens-100k"          # a public dataset, or omit to use the workspace
[split]
kind = "fixed"                       # loo | fixed | temporal | random | cold-items | cold-users
file = "${AVREC_DATA_DIR}/splits/movielens-100k.loo.tsv"   # relative to this file otherwise
[metrics]
names = ["hr", "ndcg", "mrr", "auc", "coverage", "ild", "novelty"]
k = [10, 20]
[[models]]
name = "ease"
l2 = 300.0
```
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from avrec.errors import ConfigError
from avrec.eval.experiment import DEFAULT_METRICS
from avrec.eval.splits import Split, make_split
from avrec.models.base import Recommender, create_model

__all__ = ["ExperimentConfig", "MetricsSpec", "build_models", "build_split"]


class MetricsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    names: list[str] = Field(default_factory=lambda: list(DEFAULT_METRICS))
    k: list[int] = Field(default_factory=lambda: [10, 20])


class ExperimentConfig(BaseModel):
    """An experiment file."""

    model_config = ConfigDict(extra="forbid")

    dataset: str | None = Field(None, description="public dataset name; None = the workspace")
    split: dict[str, Any] = Field(default_factory=lambda: {"kind": "loo"})
    models: list[dict[str, Any]] = Field(default_factory=lambda: [{"name": "pop"}])
    metrics: MetricsSpec = Field(default_factory=MetricsSpec)
    stage: str = "test"
    exclude_history: bool = Field(True, description="leave the user's history out of rankings")
    sampled: int | None = Field(None, gt=0)
    n_bootstrap: int = Field(1000, ge=0)
    seed: int = 0
    output: str | None = None
    report: str | None = None
    base_dir: Path = Field(Path("."), exclude=True)

    @classmethod
    def load(cls, path: str | Path) -> ExperimentConfig:
        """Read and validate an experiment file.

        Raises:
            ConfigError: missing file, bad TOML or an invalid key.
        """
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"experiment file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        try:
            cfg = cls.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise ConfigError(f"{path}: [{'.'.join(map(str, err['loc']))}] {err['msg']}") from None
        cfg.base_dir = path.resolve().parent
        return cfg

    def resolve(self, value: str) -> Path:
        """A path from the file: ``${VARS}`` expanded, relative to the file's folder."""
        expanded = os.path.expandvars(value)
        if "${" in expanded or "$AVREC" in expanded:
            raise ConfigError(f"cannot expand {value!r}: set the environment variable it names")
        p = Path(expanded)
        return p if p.is_absolute() else self.base_dir / p


def build_split(cfg: ExperimentConfig) -> Split:
    spec = dict(cfg.split)
    kind = spec.pop("kind", "loo")
    if "file" in spec:
        spec["path"] = cfg.resolve(str(spec.pop("file")))
        kind = "fixed" if kind == "loo" else kind
    if "ratios" in spec:
        spec["ratios"] = tuple(spec["ratios"])
    try:
        return make_split(kind, **spec)
    except TypeError as exc:
        raise ConfigError(f"[split] {exc}") from None


def build_models(specs: list[dict[str, Any]]) -> dict[str, Recommender]:
    """``[{"name": "ease", "label": "ease-300", "l2": 300}]`` -> ``{"ease-300": EASE(...)}``."""
    out: dict[str, Recommender] = {}
    for spec in specs:
        spec = dict(spec)
        if "name" not in spec:
            raise ConfigError("[[models]] entries need a name")
        name = spec.pop("name")
        label = spec.pop("label", name)
        if label in out:
            raise ConfigError(f"two models labelled {label!r}: give one a label")
        out[label] = create_model(name, **spec)
    return out
