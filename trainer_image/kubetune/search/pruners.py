"""``search.pruner`` as an Optuna pruner, with kubetune's tuned defaults."""

from __future__ import annotations

import math

import optuna
from optuna.trial import FrozenTrial, TrialState

from kubetune.config.search_schema import SearchConfig
from kubetune.search.attributes import (
    LR_DROP_ATTR,
    TIE_BREAK_ATTR,
    TRIAL_STEPS_ATTR,
    completed_rung,
    tie_break_rung,
)
from kubetune.search.optuna_internals import set_trial_system_attr
from kubetune.search.space import value_range

# The default is successive halving (Optuna's SuccessiveHalvingPruner, asynchronous, so
# parallel workers and the operator's trial pods need no coordination): a trial is
# first judged after half the square root of its epochs (1 of 5, 2 of 10 to 20, 3 of
# 30, 5 of 100) and goes on only while it is in the best third of the trials judged at
# that epoch; the next verdicts come 3 and 9 times later. Two epochs already tell a
# learning rate that will not train from one that will, and the epochs saved buy more
# trials. Ties at a rung are broken by the trial's lowest val_loss so far
# (TrialLengthHalvingPruner): on small training sets most trials still score exactly
# chance after one epoch, and Optuna promotes every tie.
# Set search.pruner.min_resource for a first rung in epochs (Optuna's own pruner,
# exactly as configured); reduction_factor (Optuna: 4) and min_early_stopping_rate
# pass through.
#
# The median rule, for type: MedianPruner and PercentilePruner: a trial can be pruned
# once 3 trials have completed and once it has run half the epochs of the longest
# completed trial, or from the epoch its learning rate first drops if that comes
# sooner (ranks settle once the rate drops), when its best val_acc so far is below the
# median of the completed trials at that epoch. Set search.pruner.n_warmup_steps for a
# warm-up in epochs (Optuna's own MedianPruner/PercentilePruner, exactly as configured).
#
# Why these defaults, with the figures and what was tried: docs/benchmarks.md.
MEDIAN_STARTUP_TRIALS = 3
MEDIAN_WARMUP_FRACTION = 0.5
HALVING_REDUCTION_FACTOR = 3  # Optuna's default is 4


def tie_break_metric(metric: str) -> str | None:
    """The loss that ranks trials tied on an accuracy ``metric`` (``val_acc`` -> ``val_loss``);
    None for a loss, which is continuous and seldom ties."""
    return metric.removesuffix("_acc") + "_loss" if metric.endswith("_acc") else None


def longest_completed(study: optuna.Study) -> int | None:
    """The last step of the longest completed trial; None before one has completed."""
    steps = [t.last_step for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
             if t.last_step is not None]
    return max(steps, default=None)


class _PerKeyPruner(optuna.pruners.BasePruner):
    """Hands each verdict to an Optuna pruner built for a key the trial decides (its
    warm-up, its first rung), made once per key; no verdict while the key is None, nor
    at the trial's last step (pruning then saves nothing and would discard a finished
    trial: with 1-epoch trials, or 3, successive halving has a rung there)."""

    def __init__(self) -> None:
        self._pruners: dict[int, optuna.pruners.BasePruner] = {}

    def key(self, study: optuna.Study, trial: FrozenTrial) -> int | None:
        raise NotImplementedError

    def build(self, key: int) -> optuna.pruners.BasePruner:
        raise NotImplementedError

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        key = self.key(study, trial)
        if key is None:
            return False
        # Asked even at the last step: successive halving records the trial's value at a
        # rung when it judges it there, and later trials compete with that value.
        return self.verdict(study, trial, key) and not _at_last_step(trial)

    def verdict(self, study: optuna.Study, trial: FrozenTrial, key: int) -> bool:
        """The verdict of the pruner built for ``key``."""
        if key not in self._pruners:
            self._pruners[key] = self.build(key)
        return self._pruners[key].prune(study, trial)


def _at_last_step(trial: FrozenTrial) -> bool:
    steps = trial.user_attrs.get(TRIAL_STEPS_ATTR)
    return isinstance(steps, int) and trial.last_step is not None and trial.last_step >= steps


class WarmupFractionPruner(_PerKeyPruner):
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
        super().__init__()
        self.percentile, self.n_startup_trials = percentile, n_startup_trials
        self.warmup_fraction, self.interval_steps, self.n_min_trials = warmup_fraction, interval_steps, n_min_trials

    def warmup_steps(self, study: optuna.Study, trial: FrozenTrial | None = None) -> int | None:
        """Steps ``trial`` runs before it can be pruned; None until a trial has completed."""
        longest = longest_completed(study)
        if longest is None:
            return None
        warmup = math.ceil(self.warmup_fraction * longest)
        drop = trial.user_attrs.get(LR_DROP_ATTR) if trial is not None else None
        return min(warmup, drop) if isinstance(drop, int) and drop > 0 else warmup

    key = warmup_steps

    def build(self, key: int) -> optuna.pruners.BasePruner:
        return optuna.pruners.PercentilePruner(
            self.percentile, n_startup_trials=self.n_startup_trials, n_warmup_steps=key,
            interval_steps=self.interval_steps, n_min_trials=self.n_min_trials)


def first_rung(steps: int) -> int:
    """The step of successive halving's first verdict in a trial of ``steps`` steps: half
    its square root, so 1 of 5 epochs, 2 of 10 to 20, 3 of 30, 5 of 100."""
    return max(1, round(math.sqrt(steps) / 2))


class TrialLengthHalvingPruner(_PerKeyPruner):
    """Optuna's SuccessiveHalvingPruner with its first rung set by the trial's length.

    The first rung is :func:`first_rung` of the trial's ``trial_steps`` user attribute
    (set by kubetune's objective: epochs, times folds under cross-validation); without
    it, of the longest completed trial's last step, with no pruning before one has
    completed. Then every ``reduction_factor`` times further (2, 6, 18 with 3). When
    trial lengths differ (``training.num_epochs`` searched), ``shortest_steps`` fixes one
    first rung for all, so every trial is judged at the same epochs.

    Trials tied at a rung's promotion boundary (on an accuracy, every trial still at
    chance) are ranked by their ``tie_break`` user attribute, the lowest matching loss so
    far (set by kubetune's objective), and only the best of them fill the places left;
    Optuna's pruner promotes them all. A trial without that attribute is ranked as
    Optuna ranks it.
    """

    def __init__(self, *, reduction_factor: int = HALVING_REDUCTION_FACTOR, min_early_stopping_rate: int = 0,
                 shortest_steps: int | None = None) -> None:
        super().__init__()
        self.reduction_factor, self.min_early_stopping_rate = reduction_factor, min_early_stopping_rate
        self.shortest_steps = shortest_steps

    def min_resource(self, study: optuna.Study, trial: FrozenTrial) -> int | None:
        """The step of the trial's first rung; None while its length is unknown."""
        if self.shortest_steps is not None:
            return first_rung(self.shortest_steps)
        steps = trial.user_attrs.get(TRIAL_STEPS_ATTR)
        if not isinstance(steps, int) or steps < 1:
            steps = longest_completed(study)
        return None if steps is None else first_rung(steps)

    key = min_resource

    def build(self, key: int) -> optuna.pruners.BasePruner:
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=key, reduction_factor=self.reduction_factor,
            min_early_stopping_rate=self.min_early_stopping_rate)

    def _rung_at(self, first_rung: int, step: int | None) -> int | None:
        """The rung judged at ``step`` when the first is at ``first_rung``; None between rungs."""
        if step is None:
            return None
        rung, rung_step = 0, first_rung * self.reduction_factor ** self.min_early_stopping_rate
        while rung_step < step:
            rung, rung_step = rung + 1, rung_step * self.reduction_factor
        return rung if rung_step == step else None

    def verdict(self, study: optuna.Study, trial: FrozenTrial, key: int) -> bool:
        rung = self._rung_at(key, trial.last_step)
        loss = trial.user_attrs.get(TIE_BREAK_ATTR)
        if rung is None or loss is None:
            return super().verdict(study, trial, key)
        # What later trials tied with this one compare with, recorded before Optuna's verdict.
        set_trial_system_attr(study, trial, tie_break_rung(rung), loss)
        return super().verdict(study, trial, key) or _loses_tie(study, trial, rung, loss, self.reduction_factor)


def _loses_tie(study: optuna.Study, trial: FrozenTrial, rung: int, loss: float, reduction_factor: int) -> bool:
    """Whether ``trial``, promoted at ``rung`` only because its value ties with the last
    promoted value, has no place once the tied trials are ranked by their loss.

    Optuna's successive halving promotes the best 1/``reduction_factor`` of the values
    recorded at a rung and every trial tied with the last of them. When trials sit at
    chance after the first epochs, that is all of them, and the rung decides nothing.
    """
    rung_key, tie_key = completed_rung(rung), tie_break_rung(rung)
    assert trial.last_step is not None  # a rung's verdict follows a report
    value = trial.intermediate_values[trial.last_step]
    others = [t.system_attrs for t in study.get_trials(deepcopy=False)
              if t.number != trial.number and rung_key in t.system_attrs]
    places = max(1, (len(others) + 1) // reduction_factor)
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    ahead: int = sum(a[rung_key] > value if maximize else a[rung_key] < value for a in others)
    tied: list[float] = [a.get(tie_key, math.inf) for a in others if a[rung_key] == value]
    if ahead + len(tied) < places:  # a place for every tied trial
        return False
    return ahead + sum(other < loss for other in tied) >= places


def reads_tie_break(pruner: optuna.pruners.BasePruner) -> bool:
    """Whether ``pruner`` ranks tied trials by their ``tie_break`` user attribute."""
    return isinstance(pruner, TrialLengthHalvingPruner)


def shortest_trial_steps(search: SearchConfig) -> int | None:
    """The steps of the shortest trial when ``training.num_epochs`` is searched; else None
    (every trial has the config's length)."""
    spec = search.search_space.get("training.num_epochs")
    return None if spec is None else trial_steps(search, int(value_range(spec)[0]))


def trial_steps(search: SearchConfig, epochs: int) -> int:
    """The steps a trial of ``epochs`` epochs reports: times the folds under cross-validation."""
    folds = search.cross_validation.folds
    return max(1, epochs) * folds


def build_pruner(search: SearchConfig) -> optuna.pruners.BasePruner:
    """Successive halving, Median, Percentile, Hyperband or no pruning; fields left out
    take kubetune's defaults."""
    cfg = search.pruner
    if search.objectives is not None and cfg.type != "none":
        from kubetune.search.pareto_pruner import ParetoHalvingPruner

        return ParetoHalvingPruner(reduction_factor=cfg.reduction_factor or HALVING_REDUCTION_FACTOR,
                                   min_resource=cfg.min_resource,
                                   min_early_stopping_rate=cfg.min_early_stopping_rate or 0)
    if cfg.type == "SuccessiveHalvingPruner":
        factor = cfg.reduction_factor or HALVING_REDUCTION_FACTOR
        rate = cfg.min_early_stopping_rate or 0
        if cfg.min_resource is None:
            return TrialLengthHalvingPruner(reduction_factor=factor, min_early_stopping_rate=rate,
                                            shortest_steps=shortest_trial_steps(search))
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=cfg.min_resource, reduction_factor=factor, min_early_stopping_rate=rate)
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
