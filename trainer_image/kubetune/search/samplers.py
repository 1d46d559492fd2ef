"""``search.sampler`` as an Optuna sampler, with kubetune's tuned defaults."""

from __future__ import annotations

import numpy as np
import optuna

from kubetune.config.search_schema import SearchConfig
from kubetune.search.space import grid_values

# TPE starts from 3 random trials instead of Optuna's 10, so it works from the config's
# enqueued point early, and picks each point from 4 expected-improvement candidates
# instead of 24, so it stays broad while doing so (fewer candidates: a less greedy
# pick). Multivariate (lr and momentum interact through the effective step size) and
# constant liar are Optuna 5's own, written out so a change upstream does not change
# kubetune silently. Why these defaults, with the figures and what was tried:
# docs/benchmarks.md.
TPE_STARTUP_TRIALS = 3
TPE_EI_CANDIDATES = 4
TPE_MULTIVARIATE = True


def session_seed(seed: int | None, session: int) -> int | None:
    """The sampler seed of the ``session``-th process that samples for one study.

    A seeded sampler made afresh repeats its draws, so a second worker, a resumed
    search or a restarted operator would sample the first one's random trials again.
    Session 0 keeps the seed (one ``ml-search`` draws what ``TPESampler(seed=seed)``
    draws); each later session gets its own seed derived from both.
    """
    if seed is None or session == 0:
        return seed
    return int(np.random.SeedSequence([seed, session]).generate_state(1)[0])


def build_sampler(search: SearchConfig) -> optuna.samplers.BaseSampler:
    """TPE, Random, CMA-ES, NSGA-II or Grid, seeded by ``search.sampler.seed``."""
    cfg = search.sampler
    if cfg.type == "TPESampler":
        return optuna.samplers.TPESampler(
            n_startup_trials=TPE_STARTUP_TRIALS if cfg.n_startup_trials is None else cfg.n_startup_trials,
            n_ei_candidates=TPE_EI_CANDIDATES if cfg.n_ei_candidates is None else cfg.n_ei_candidates,
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
    if cfg.type == "NSGAIISampler":
        return optuna.samplers.NSGAIISampler(seed=cfg.seed)
    return optuna.samplers.GridSampler(grid_values(search.search_space), seed=cfg.seed)
