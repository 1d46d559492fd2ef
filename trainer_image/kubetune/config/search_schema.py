"""The ``search:`` section, exactly the Hyperparameter Tuning Guide's schema.

Only structure and value checks live here; turning it into Optuna objects is
``kubetune.search``'s job.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_STORAGE = "sqlite:///optuna_studies.db"
# Sane maxima: a typo in a count must not ask for 2^63 trials (the StudyJob CRD states them too).
MAX_TRIALS = 1_000_000
MAX_EPOCHS = 100_000

SAMPLERS = ("TPESampler", "RandomSampler", "CmaEsSampler", "GridSampler", "NSGAIISampler")
PRUNERS = ("SuccessiveHalvingPruner", "MedianPruner", "PercentilePruner", "HyperbandPruner", "none")
# What every run measures: the training metrics each epoch, and what the model costs
# (kubetune.training.costs). Any of them can be an objective, a constraint or a goal.
TRAINING_METRICS = ("val_acc", "val_loss", "train_acc", "train_loss")
COST_METRICS = ("params", "flops", "latency_ms", "latency_batch_ms", "peak_memory_mb", "train_seconds",
                "gpu_seconds")
METRICS = TRAINING_METRICS + COST_METRICS


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ParamSpec(_Section):
    """One search-space entry: ``{type: loguniform, low: 1e-5, high: 1e-1}`` and friends."""

    type: Literal["categorical", "uniform", "loguniform", "int", "float"]
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> ParamSpec:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("choices must be a non-empty list for a categorical parameter")
            for name in ("low", "high", "step"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} does not apply to a categorical parameter")
            return self
        if self.choices is not None:
            raise ValueError(f"choices only apply to a categorical parameter, not {self.type}")
        if self.low is None or self.high is None:
            raise ValueError(f"low and high are required for a {self.type} parameter")
        if self.low >= self.high:
            raise ValueError(f"low must be less than high, but got low={self.low}, high={self.high}")
        if self.type == "loguniform" or self.log:
            if self.low <= 0:
                raise ValueError(f"low must be greater than 0 on a log scale, but got {self.low}")
            if self.step is not None:
                raise ValueError("step cannot be combined with a log scale")
        if self.type == "int":
            for name in ("low", "high", "step"):
                value = getattr(self, name)
                if value is not None and float(value) != int(value):
                    raise ValueError(f"{name} must be an integer for an int parameter, but got {value}")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"step must be greater than 0, but got {self.step}")
        span = self.high - self.low
        if self.step is not None and self.step > span and not math.isclose(self.step, span, rel_tol=1e-9):
            # Optuna would warn and shrink the range to the single value low
            raise ValueError(
                f"step must be at most high - low ({span:g}), but got {self.step:g}, "
                f"which leaves only low={self.low:g}"
            )
        return self


class SamplerConfig(_Section):
    type: Literal[SAMPLERS] = "TPESampler"  # type: ignore[valid-type]
    seed: int | None = None
    n_startup_trials: int | None = Field(None, ge=0)
    multivariate: bool | None = None
    constant_liar: bool | None = None
    n_ei_candidates: int | None = Field(None, ge=1)
    sigma0: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _fields_for_type(self) -> SamplerConfig:
        allowed = {
            "TPESampler": {"n_startup_trials", "multivariate", "constant_liar", "n_ei_candidates"},
            "RandomSampler": set(),
            "CmaEsSampler": {"n_startup_trials", "sigma0"},
            "GridSampler": set(),
            "NSGAIISampler": set(),
        }[self.type]
        for name in ("n_startup_trials", "multivariate", "constant_liar", "n_ei_candidates", "sigma0"):
            if getattr(self, name) is not None and name not in allowed:
                raise ValueError(f"{name} does not apply to {self.type}")
        return self


class PrunerConfig(_Section):
    type: Literal[PRUNERS] = "SuccessiveHalvingPruner"  # type: ignore[valid-type]
    n_startup_trials: int | None = Field(None, ge=0)
    n_warmup_steps: int | None = Field(None, ge=0)
    interval_steps: int | None = Field(None, ge=1)
    percentile: float | None = Field(None, ge=0, le=100)
    min_resource: int | None = Field(None, ge=1)
    max_resource: int | Literal["auto"] | None = None
    reduction_factor: int | None = Field(None, ge=2)
    min_early_stopping_rate: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _fields_for_type(self) -> PrunerConfig:
        common = {"n_startup_trials", "n_warmup_steps", "interval_steps"}
        fields_of = {
            "SuccessiveHalvingPruner": {"min_resource", "reduction_factor", "min_early_stopping_rate"},
            "MedianPruner": common,
            "PercentilePruner": common | {"percentile"},
            "HyperbandPruner": {"min_resource", "max_resource", "reduction_factor"},
            "none": set(),
        }
        for name in sorted(type(self).model_fields):
            if name != "type" and getattr(self, name) is not None and name not in fields_of[self.type]:
                default = "" if "type" in self.model_fields_set else ", the default type"
                types = " or ".join(t for t, fields in fields_of.items() if name in fields)
                raise ValueError(f"{name} does not apply to {self.type}{default}; it is a field of {types}")
        if self.type == "PercentilePruner" and self.percentile is None:
            raise ValueError("percentile is required for PercentilePruner")
        if isinstance(self.max_resource, int) and self.max_resource < (self.min_resource or 1):
            raise ValueError("max_resource must be at least min_resource")
        return self


class ObjectiveConfig(_Section):
    """One entry of ``search.objectives``: ``{metric: latency_ms, direction: minimize}``."""

    metric: Literal[METRICS]  # type: ignore[valid-type]
    direction: Literal["maximize", "minimize"]


class BoundConfig(_Section):
    """A constraint on one metric: ``{max: 5}``, ``{min: 0.9}`` or both."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _check(self) -> BoundConfig:
        if self.min is None and self.max is None:
            raise ValueError("a constraint needs max, min or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min must be at most max, but got min={self.min}, max={self.max}")
        return self


class CrossValidationConfig(_Section):
    enabled: bool = False
    n_folds: int = Field(5, ge=2)
    aggregation: Literal["mean", "median"] = "mean"

    @property
    def folds(self) -> int:
        """The folds each trial trains: ``n_folds`` when enabled, else one."""
        return self.n_folds if self.enabled else 1


class SearchConfig(_Section):
    study_name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    storage: str | None = None  # None: $KUBETUNE_STORAGE_URL, then DEFAULT_STORAGE
    n_trials: int = Field(50, ge=1, le=MAX_TRIALS)
    direction: Literal["maximize", "minimize"] = "maximize"
    metric: Literal["val_acc", "val_loss", "train_acc", "train_loss"] = "val_acc"
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    pruner: PrunerConfig = Field(default_factory=PrunerConfig)
    search_space: dict[str, ParamSpec] = Field(default_factory=dict)
    cross_validation: CrossValidationConfig = Field(default_factory=CrossValidationConfig)
    # The guide's advice for slow searches, as settings: trials train on a
    # stratified fraction of the training split and for fewer epochs than the
    # final run; best_config.yaml keeps the full values.
    trial_epochs: int | None = Field(None, ge=1, le=MAX_EPOCHS)
    trial_train_fraction: float = Field(1.0, gt=0.0, le=1.0)
    enqueue_config: bool = True
    enqueue_trials: list[dict[str, Any]] = Field(default_factory=list)
    # Several objectives instead of metric/direction (kubetune.search.objectives checks them).
    objectives: list[ObjectiveConfig] | None = None
    constraints: dict[str, BoundConfig] = Field(default_factory=dict)
    pick: str | None = None  # the objective best_config.yaml is best on (default: the first)
    goal: dict[str, float] = Field(default_factory=dict)
    # The user's own training script as each trial (``["python", "train.py"]``), run
    # from ml-search's current directory; None: kubetune's own trainer.
    command: list[str] | None = None

    @field_validator("command")
    @classmethod
    def _command_words(cls, command: list[str] | None) -> list[str] | None:
        if command is not None and (not command or not all(part.strip() for part in command)):
            raise ValueError("must be a non-empty list of non-empty strings, e.g. [python, train.py]")
        return command

    @model_validator(mode="after")
    def _command_without_folds(self) -> SearchConfig:
        if self.command is not None and self.cross_validation.enabled:
            raise ValueError("cross_validation does not apply to a command: the script trains its own folds")
        return self
