"""``search.pruner`` as an Optuna pruner, with kubetune's tuned defaults."""

from __future__ import annotations

import math

import optuna
from optuna.trial import FrozenTrial, TrialState

from kubetune.config.search_schema import SearchConfig

# Defaults measured with bench/search_efficiency.py (issue 14): digits at 8x8, a 20% and
# a 10% stratified training subset, 10 and 5 epochs per trial, a 30% subset with 20
# epochs, and a 40% subset with 16 epochs and the rate dropped every 4 epochs (added
# last, as a check), a 300-epoch budget, 16 independent seeds per method (32 for the
# figures below), space lr / batch size / momentum / weight decay / dropout, the
# config's point enqueued first as ml-search does. A trial can be pruned once 3 trials
# have completed and once it has run half the epochs of the longest completed trial (5
# of 10, 3 of 5), or from the epoch its learning rate first drops if that comes sooner
# (5 of 20 with the default step schedule), when its best val_acc so far is below the
# median of the completed trials at that epoch.
#
# Why: the old defaults (prune from epoch 1 once 1 trial completed) let the config's
# own strong first trial be the median, and slow starters that would have ended best
# were cut (issue 14: kubetune ended below plain Optuna given the same first point).
# Ranks settle once the rate drops: on the bench's trial curves, the rank correlation
# of the running best with the final best is 0.65 at epoch 5 and 0.94 at epoch 6 on
# digits20 (0.90 and 0.98 on digits30), so a trial is judged no earlier than the end of
# its first rate (or half its length, a share that means the same at 5, 10 or 100
# epochs per trial; a cosine schedule has no drop). That warm-up is what protects slow
# starters, so the median needs 3 completed trials, not Optuna's 5: with 5, the first
# 100 epochs of a 20-epoch search were never pruned.
#
# Mean best val_acc after 50/100/200/300 epochs with samplers.py's TPE defaults, 32
# seeds per method (bench/search_efficiency.py --seeds 32), and seeds reaching the
# three thresholds; "plain Optuna 5" is TPE + MedianPruner(5, 2) given the same point:
#   digits20  kubetune      0.9271/0.9430/0.9594/0.9634, 32/27/6 reach 0.92/0.95/0.97
#             plain Optuna  0.9250/0.9424/0.9564/0.9585, 32/24/6
#   digits10  kubetune      0.6600/0.7247/0.7707/0.7810, 32/30/22 reach 0.68/0.73/0.77
#             plain Optuna  0.6556/0.7208/0.7584/0.7684, 30/20/19
#   digits30  kubetune      0.9668/0.9672/0.9723/0.9753, 32/32/21 reach 0.93/0.96/0.975
#             plain Optuna  0.9669/0.9671/0.9722/0.9760, 32/32/23
#   digits40  kubetune      0.9729/0.9764/0.9826/0.9854, 32/32/30 reach 0.96/0.97/0.98
#             plain Optuna  0.9729/0.9740/0.9796/0.9834, 32/32/24
# How it got here on digits30 (16 seeds each; every step then checked on 16 fresh ones):
# - 5 completed trials and half the length: 0.9684/0.9729 after 200/300 epochs, 7 of
#   16 seeds reaching 0.975.
# - The cap at the first rate drop (digits20 and digits10 do not change, half their
#   length is no later): 0.9701/0.9748, 10 of 16; digits40 was added with its
#   thresholds before it ran there. At 32 seeds digits30 still trailed after 200
#   epochs (0.9696 against 0.9722, 2.4 standard errors; 17 against 23 seeds reach 0.975).
# - 3 completed trials instead of 5: 0.9720/0.9748, 11 of 16. Chosen against TPE with
#   24 candidates or 10 startup trials (samplers.py) and against no pruning until the
#   completed trials ran 50 epochs (the same there; 0.7865 on digits10). On the 16
#   fresh seeds, against 5: digits30 0.9726/0.9757 against 0.9691/0.9743, digits40
#   0.9812/0.9854 against 0.9790/0.9842, digits20 0.9556/0.9592 against 0.9559/0.9609,
#   digits10 0.7688/0.7774 against 0.7767/0.7970 (the one loss; at 32 seeds it is still
#   +0.013 above plain Optuna after 300 epochs). With Optuna's TPE settings, 3 had
#   lost on digits20 (0.955 against 0.960 after 300 epochs, 8 seeds).
# Not met (issue 14's targets): on digits30, -0.0001 after 50 epochs (the random
# second trial differs by seed, ±0.0002) and -0.0007 after 300 (±0.0013); 21 against
# 23 seeds reach 0.975. At 64 seeds it is a tie either way: -0.0003/-0.0000/-0.0006/
# +0.0002 after 50/100/200/300 epochs, each under one standard error, and 49 against
# 48 seeds reach 0.975. Median epochs to the first threshold against random search:
# 75.5 / 71.5 on digits20 (random needs no model: any draw with lr 0.02-0.1 and batch
# 16 reaches 0.92 within its 10 epochs, and the config's point stops at 0.919), 64 /
# 190 = 0.34x on digits10, 6 / 86 on digits30 and 5 / 85 on digits40 (the config's
# point reaches the first threshold by itself).
# Tried on digits20 with the same seeds and dropped: pruning from the epoch after the
# drop (6; 0.9668 against 0.9686 after 300), warm-up 0.3 of the length (0.9565 at
# 300, 3 seeds), HyperbandPruner(1, auto, 3) (0.9546, 3 seeds; its sampler sees one
# bracket's trials only), the 25th percentile (0.9486, 2 seeds). PatientPruner never
# prunes here: trials report their running best, which never falls. WilcoxonPruner
# compares per-instance scores (CV folds, benchmark instances), not epochs of one run.
# Set search.pruner.n_warmup_steps for a warm-up in epochs (Optuna's own
# MedianPruner/PercentilePruner, exactly as configured).
MEDIAN_STARTUP_TRIALS = 3
MEDIAN_WARMUP_FRACTION = 0.5
LR_DROP_ATTR = "lr_first_drop"  # a trial's user attribute: the epoch its learning rate first drops


class WarmupFractionPruner(optuna.pruners.BasePruner):
    """Optuna's PercentilePruner with the warm-up a fraction of the trial's length.

    The length is the last step of the longest completed trial, so the same default
    waits 5 epochs in a 10-epoch search and 50 in a 100-epoch one; no trial is
    pruned before one has completed. A trial whose ``lr_first_drop`` user attribute
    (set by kubetune's objective from :func:`kubetune.training.optim.first_lr_drop`) comes sooner can be
    pruned from that epoch on.
    """

    def __init__(self, percentile: float = 50.0, *, n_startup_trials: int = 1,
                 warmup_fraction: float = 0.5, interval_steps: int = 1, n_min_trials: int = 1) -> None:
        if not 0.0 <= warmup_fraction <= 1.0:
            raise ValueError(f"warmup_fraction must be between 0 and 1, but got {warmup_fraction}.")
        if n_startup_trials < 0:
            raise ValueError(f"n_startup_trials must be at least 0, but got {n_startup_trials}.")
        self.percentile, self.n_startup_trials = percentile, n_startup_trials
        self.warmup_fraction, self.interval_steps, self.n_min_trials = warmup_fraction, interval_steps, n_min_trials
        self._by_warmup: dict[int, optuna.pruners.PercentilePruner] = {}

    def warmup_steps(self, study: optuna.Study, trial: FrozenTrial | None = None) -> int | None:
        """Steps ``trial`` runs before it can be pruned; None until a trial has completed."""
        steps = [t.last_step for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                 if t.last_step is not None]
        if not steps:
            return None
        warmup = math.ceil(self.warmup_fraction * max(steps))
        drop = trial.user_attrs.get(LR_DROP_ATTR) if trial is not None else None
        return min(warmup, drop) if isinstance(drop, int) and drop > 0 else warmup

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        warmup = self.warmup_steps(study, trial)
        if warmup is None:
            return False
        if warmup not in self._by_warmup:
            self._by_warmup[warmup] = optuna.pruners.PercentilePruner(
                self.percentile, n_startup_trials=self.n_startup_trials, n_warmup_steps=warmup,
                interval_steps=self.interval_steps, n_min_trials=self.n_min_trials)
        return self._by_warmup[warmup].prune(study, trial)


def build_pruner(search: SearchConfig) -> optuna.pruners.BasePruner:
    """Median, Percentile, Hyperband or no pruning; fields left out take kubetune's defaults."""
    cfg = search.pruner
    if cfg.type in ("MedianPruner", "PercentilePruner"):
        percentile = 50.0 if cfg.type == "MedianPruner" else float(cfg.percentile)  # type: ignore[arg-type]
        startup = MEDIAN_STARTUP_TRIALS if cfg.n_startup_trials is None else cfg.n_startup_trials
        interval = cfg.interval_steps or 1
        if cfg.n_warmup_steps is None:
            return WarmupFractionPruner(percentile, n_startup_trials=startup,
                                        warmup_fraction=MEDIAN_WARMUP_FRACTION, interval_steps=interval)
        kwargs = {"n_startup_trials": startup, "n_warmup_steps": cfg.n_warmup_steps,
                  "interval_steps": interval}
        if cfg.type == "MedianPruner":
            return optuna.pruners.MedianPruner(**kwargs)
        return optuna.pruners.PercentilePruner(percentile, **kwargs)
    if cfg.type == "HyperbandPruner":
        return optuna.pruners.HyperbandPruner(
            min_resource=cfg.min_resource or 1,
            max_resource=cfg.max_resource if cfg.max_resource is not None else "auto",
            reduction_factor=cfg.reduction_factor or 3,
        )
    return optuna.pruners.NopPruner()
