"""``search.sampler`` as an Optuna sampler, with kubetune's tuned defaults."""

from __future__ import annotations

import optuna

from kubetune.config.search_schema import SearchConfig
from kubetune.search.space import grid_values

# Defaults measured with bench/search_efficiency.py (issue 14; the setup is described
# in search/pruners.py). They are Optuna 5's own TPE defaults, written out so a change
# upstream does not change kubetune silently: 10 random startup trials, multivariate
# (lr and momentum interact through the effective step size), constant liar. Three
# startup trials exploit the config's enqueued point sooner and reach val_acc 0.92 on
# digits20 sooner (median 50 epochs against 79.5, 8 seeds) but end lower (mean best
# 0.9549 after 300 epochs against 0.9597): too little of the space is seen before TPE
# narrows in on the first good point.
TPE_STARTUP_TRIALS = 10
TPE_MULTIVARIATE = True


def build_sampler(search: SearchConfig) -> optuna.samplers.BaseSampler:
    """TPE, Random, CMA-ES or Grid, seeded by ``search.sampler.seed``."""
    cfg = search.sampler
    if cfg.type == "TPESampler":
        return optuna.samplers.TPESampler(
            n_startup_trials=TPE_STARTUP_TRIALS if cfg.n_startup_trials is None else cfg.n_startup_trials,
            multivariate=TPE_MULTIVARIATE if cfg.multivariate is None else cfg.multivariate,
            # Parallel workers should not all sample the same point: keep Optuna 5's
            # constant liar on unless the config turns it off.
            constant_liar=True if cfg.constant_liar is None else cfg.constant_liar,
            seed=cfg.seed,
        )
    if cfg.type == "RandomSampler":
        return optuna.samplers.RandomSampler(seed=cfg.seed)
    if cfg.type == "CmaEsSampler":
        return optuna.samplers.CmaEsSampler(
            n_startup_trials=1 if cfg.n_startup_trials is None else cfg.n_startup_trials,
            sigma0=cfg.sigma0,
            seed=cfg.seed,
            warn_independent_sampling=False,
        )
    return optuna.samplers.GridSampler(grid_values(search.search_space), seed=cfg.seed)
