"""``search.pruner`` as an Optuna pruner, with kubetune's tuned defaults."""

from __future__ import annotations

import optuna

from kubetune.config.search_schema import SearchConfig

# Defaults chosen by bench/search_efficiency.py (see the README's search section).
MEDIAN_STARTUP_TRIALS = 5
MEDIAN_WARMUP_STEPS = 2


def build_pruner(search: SearchConfig) -> optuna.pruners.BasePruner:
    """Median, Percentile, Hyperband or no pruning."""
    cfg = search.pruner
    if cfg.type in ("MedianPruner", "PercentilePruner"):
        kwargs = {
            "n_startup_trials": MEDIAN_STARTUP_TRIALS if cfg.n_startup_trials is None else cfg.n_startup_trials,
            "n_warmup_steps": MEDIAN_WARMUP_STEPS if cfg.n_warmup_steps is None else cfg.n_warmup_steps,
            "interval_steps": cfg.interval_steps or 1,
        }
        if cfg.type == "MedianPruner":
            return optuna.pruners.MedianPruner(**kwargs)
        return optuna.pruners.PercentilePruner(cfg.percentile, **kwargs)  # type: ignore[arg-type]
    if cfg.type == "HyperbandPruner":
        return optuna.pruners.HyperbandPruner(
            min_resource=cfg.min_resource or 1,
            max_resource=cfg.max_resource if cfg.max_resource is not None else "auto",
            reduction_factor=cfg.reduction_factor or 3,
        )
    return optuna.pruners.NopPruner()
