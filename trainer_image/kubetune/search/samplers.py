"""``search.sampler`` as an Optuna sampler, with kubetune's tuned defaults."""

from __future__ import annotations

import numpy as np
import optuna

from kubetune.config.search_schema import SearchConfig
from kubetune.search.space import grid_values

# Defaults measured with bench/search_efficiency.py (issue 14; the problems are in its
# docstring, the figures in search/pruners.py and the README). TPE starts from 3 random
# trials instead of Optuna's 10, so it works from the config's enqueued point early,
# and picks each point from 4 expected-improvement candidates instead of 24, so it
# stays broad while doing so (fewer candidates: a less greedy pick). Multivariate (lr
# and momentum interact through the effective step size) and constant liar are Optuna
# 5's own, written out so a change upstream does not change kubetune silently.
#
# Chosen from 13 variants on digits20 and digits10 with 16 seeds, then checked on 16
# fresh seeds and on digits30, held out from the choice. Against the old defaults
# (Optuna's 10 and 24), mean best val_acc after 300 epochs, 32 seeds each:
#   digits20  0.9648 against 0.9615, 6 against 4 seeds reach 0.97
#   digits10  0.7916 against 0.7620, 28 against 19 reach 0.77 (z +2.8)
#   digits30  0.9728 against 0.9733, 13 against 15 reach 0.975 (a tie; -0.0026 after
#             200 epochs): 20-epoch trials, where both trailed plain Optuna then
# With the pruner's cap at the first learning-rate drop, digits30 after 200/300 epochs:
# 0.9701/0.9748 against 0.9715/0.9745 with Optuna's 10 and 24 (16 seeds, 10 of them
# reach 0.975 either way), 0.9714/0.9753 with 10 and 4, 0.9708/0.9741 with 3 and 24;
# the pruner waiting for 3 completed trials instead gave 0.9720/0.9748 with 3 and 4,
# and was kept (pruners.py has the figures with it).
# Tried and dropped: 3 startup trials with 24 candidates (sooner to 0.92 on digits20,
# median 50 epochs against 79.5, but lower at the end, 0.9549 against 0.9597, 8 seeds:
# TPE narrows in on the first good point); 2 or 5 startup trials; 8 or 12 candidates;
# multivariate off. prior_weight 2 with a 25% "good" group scored as well, but Optuna 4.9
# deprecated both arguments (gone in 6.0), so kubetune does not build on them.
# These were chosen with the median pruner; successive halving, the default since, was
# measured with them unchanged (pruners.py), and they were not chosen again for it.
# With it, 1 startup trial (TPE from the config's point on): sooner to the first
# threshold (42.5 epochs against 47 on digits15, 36 against 39 on digits20, 32 seeds)
# but lower at the end (0.9097 against 0.9229 after 300 epochs on digits15, 24 against
# 28 seeds reaching 0.90): it narrows in on the first good point. Not taken. 2 startup
# trials: the same trade, smaller (43 epochs on digits15; after 300 epochs 0.9174,
# 0.9668 and 0.7908 on digits15, digits20 and digits10, all below the defaults).
# Also with it, on digits15 (32 seeds; the defaults re-run on the same machine: 45.5
# epochs to 0.80, 0.9227 after 300, 28 seeds reach 0.90): 8 candidates 45 epochs,
# 0.9124, 26 seeds; 12 candidates 45.5, 0.9095, 24; 1 startup trial with every 3rd
# later trial drawn at random (to keep it broad) 49, 0.9075, 22; every 4th 42, 0.9157,
# 25. A greedier TPE gets there no sooner, or sooner and lower at the end.
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
    """TPE, Random, CMA-ES or Grid, seeded by ``search.sampler.seed``."""
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
    return optuna.samplers.GridSampler(grid_values(search.search_space), seed=cfg.seed)
