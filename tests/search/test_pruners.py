"""kubetune's pruners: successive halving whose first rung is a share of the trial's length
(the default), and a percentile rule whose warm-up is a share of the trial's length, or
shorter, up to the trial's first learning-rate drop."""

from __future__ import annotations

import optuna
import pytest

from kubetune.config.schema import SchedulerConfig
from kubetune.config.search_schema import SearchConfig
from kubetune.search.attributes import LR_DROP_ATTR, TIE_BREAK_ATTR, TRIAL_STEPS_ATTR
from kubetune.search.pruners import (
    HALVING_REDUCTION_FACTOR,
    MEDIAN_STARTUP_TRIALS,
    MEDIAN_WARMUP_FRACTION,
    TrialLengthHalvingPruner,
    WarmupFractionPruner,
    build_pruner,
    first_rung,
    shortest_trial_steps,
    tie_break_metric,
)
from kubetune.training.optim import first_lr_drop


def _search(**pruner) -> SearchConfig:
    return SearchConfig.model_validate({
        "study_name": "s", "pruner": {"type": "MedianPruner", **pruner},
        "search_space": {"optimizer.lr": {"type": "loguniform", "low": 1e-5, "high": 1e-1}},
    })


def _study(pruner, completed: int, steps: int, value: float = 0.9) -> optuna.Study:
    """A study with ``completed`` trials that reported ``value`` at steps 1..``steps``."""
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for _ in range(completed):
        trial = study.ask()
        for step in range(1, steps + 1):
            trial.report(value, step)
        study.tell(trial, value)
    return study


def _first_pruned_step(study: optuna.Study, steps: int, value: float = 0.1, lr_drop=None) -> int | None:
    """The step at which a trial reporting ``value`` throughout is pruned, if any."""
    trial = study.ask()
    if lr_drop is not None:
        trial.set_user_attr(LR_DROP_ATTR, lr_drop)
    for step in range(1, steps + 1):
        trial.report(value, step)
        if trial.should_prune():
            return step
    return None


@pytest.mark.parametrize("length, fraction, expected", [(10, 0.3, 3), (10, 0.5, 5), (20, 0.3, 6), (5, 0.3, 2)])
def test_warmup_is_a_share_of_the_longest_completed_trial(length, fraction, expected):
    pruner = WarmupFractionPruner(n_startup_trials=1, warmup_fraction=fraction)
    study = _study(pruner, completed=2, steps=length)
    assert pruner.warmup_steps(study) == expected
    assert _first_pruned_step(study, length) == expected


@pytest.mark.parametrize("lr_drop, expected", [(4, 4), (5, 5), (8, 5), ("5", 5), (0, 5)])
def test_a_sooner_first_lr_drop_shortens_the_warmup(lr_drop, expected):
    pruner = WarmupFractionPruner(n_startup_trials=1, warmup_fraction=0.5)
    study = _study(pruner, completed=2, steps=10)
    assert _first_pruned_step(study, 10, lr_drop=lr_drop) == expected


@pytest.mark.parametrize("scheduler, epochs, expected", [
    ({"type": "step", "step_size": 5}, 20, 5),
    ({"type": "step", "step_size": 5}, 5, None),  # drops after the last epoch
    ({"type": "step", "step_size": 5, "gamma": 1.0}, 20, None),
    ({"type": "cosine"}, 20, None),
    ({"type": "none"}, 20, None),
])
def test_first_lr_drop(scheduler, epochs, expected):
    assert first_lr_drop(SchedulerConfig.model_validate(scheduler), epochs) == expected


def test_nothing_is_pruned_before_a_trial_completes():
    pruner = WarmupFractionPruner(n_startup_trials=0, warmup_fraction=0.0)
    study = _study(pruner, completed=0, steps=0)
    assert pruner.warmup_steps(study) is None
    assert _first_pruned_step(study, 10) is None


def test_startup_trials_must_complete_first():
    pruner = WarmupFractionPruner(n_startup_trials=3, warmup_fraction=0.3)
    assert _first_pruned_step(_study(pruner, completed=2, steps=10), 10) is None
    assert _first_pruned_step(_study(pruner, completed=3, steps=10), 10) == 3


def test_a_trial_above_the_percentile_runs_on():
    pruner = WarmupFractionPruner(25.0, n_startup_trials=1, warmup_fraction=0.3)
    study = _study(pruner, completed=4, steps=10, value=0.5)
    assert _first_pruned_step(study, 10, value=0.6) is None


@pytest.mark.parametrize("kwargs, message", [
    ({"warmup_fraction": 1.5}, "warmup_fraction must be between 0 and 1, but got 1.5."),
    ({"warmup_fraction": -0.1}, "warmup_fraction must be between 0 and 1, but got -0.1."),
    ({"n_startup_trials": -1}, "n_startup_trials must be at least 0, but got -1."),
])
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WarmupFractionPruner(**kwargs)


def test_defaults_when_the_config_names_only_the_type():
    built = build_pruner(_search())
    assert isinstance(built, WarmupFractionPruner)
    assert (built.percentile, built.n_startup_trials, built.warmup_fraction) == (
        50.0, MEDIAN_STARTUP_TRIALS, MEDIAN_WARMUP_FRACTION)


def test_config_fields_override_the_defaults():
    assert build_pruner(_search(n_startup_trials=2)).n_startup_trials == 2
    percentile = build_pruner(SearchConfig.model_validate({
        "study_name": "s", "pruner": {"type": "PercentilePruner", "percentile": 25.0}}))
    assert isinstance(percentile, WarmupFractionPruner) and percentile.percentile == 25.0
    # An explicit warm-up in steps is Optuna's own pruner, exactly as configured.
    fixed = build_pruner(_search(n_warmup_steps=4))
    assert type(fixed) is optuna.pruners.MedianPruner
    assert (fixed._n_startup_trials, fixed._n_warmup_steps) == (MEDIAN_STARTUP_TRIALS, 4)


def _halving_run(study: optuna.Study, values: list[float], steps: int | None) -> int | None:
    """Run a trial reporting ``values`` and asking the pruner after each step, as
    ml-search's objective does; the step it was pruned at, or None (told COMPLETE)."""
    trial = study.ask()
    if steps is not None:
        trial.set_user_attr(TRIAL_STEPS_ATTR, steps)
    for step, value in enumerate(values, 1):
        trial.report(value, step)
        if trial.should_prune():
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return step
    study.tell(trial, max(values))
    return None


def _reported_run(study: optuna.Study, curve: list[tuple[float, float]], *, losses: bool = True) -> int | None:
    """Run a trial of (val_acc, val_loss) epochs through ml-search's EpochReporter; the epoch
    it was pruned at, or None (told COMPLETE). ``losses=False`` reports val_acc alone."""
    from kubetune.search.objective import EpochReporter

    trial = study.ask()
    trial.set_user_attr(TRIAL_STEPS_ATTR, len(curve))
    reporter = EpochReporter(trial, "val_acc", True, max, [], 0, 1, len(curve))
    for epoch, (acc, loss) in enumerate(curve, 1):
        try:
            reporter(epoch, {"val_acc": acc, "val_loss": loss} if losses else {"val_acc": acc})
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return epoch
    study.tell(trial, reporter.best)
    return None


@pytest.mark.parametrize("losses, third_pruned_at", [(True, 1), (False, 3)])
def test_trials_tied_at_a_rung_are_ranked_by_their_loss(losses, third_pruned_at):
    # 8-epoch trials: rungs at epochs 1 and 3. All sit at chance (0.1) after epoch 1, as
    # on a small training set: Optuna's rule promotes every tie, so the rung decides
    # nothing; ranked by val_loss, only the best third of the tied trials goes on.
    study = optuna.create_study(direction="maximize", pruner=TrialLengthHalvingPruner())
    def learner(loss):
        return [(0.1, loss)] + [(0.5 + 0.05 * e, loss - 0.2 * e) for e in range(1, 8)]
    assert _reported_run(study, learner(2.30), losses=losses) is None  # no rival yet
    assert _reported_run(study, learner(2.25), losses=losses) is None  # tied, and the lower loss
    stuck = [(0.1, 2.31)] * 8  # at chance throughout, its loss the highest of the three
    assert _reported_run(study, stuck, losses=losses) == third_pruned_at
    assert study.trials[-1].user_attrs.get(TIE_BREAK_ATTR) == (2.31 if losses else None)
    assert _reported_run(study, learner(2.20), losses=losses) is None  # the lowest loss of the tie


def test_the_tie_break_is_the_lowest_loss_so_far():
    from kubetune.search.objective import EpochReporter

    study = optuna.create_study(direction="maximize", pruner=TrialLengthHalvingPruner())
    trial = study.ask()
    reporter = EpochReporter(trial, "val_acc", True, max, [], 0, 1, 4)
    for epoch, (loss, lowest) in enumerate([(2.2, 2.2), (2.0, 2.0), (float("nan"), 2.0), (2.1, 2.0)], 1):
        reporter(epoch, {"val_acc": 0.1, "val_loss": loss})
        assert study.trials[-1].user_attrs[TIE_BREAK_ATTR] == lowest  # before every verdict
    assert (tie_break_metric("val_acc"), tie_break_metric("train_acc")) == ("val_loss", "train_loss")
    assert tie_break_metric("val_loss") is None  # a loss seldom ties: no tie-break, no attribute


def test_a_pruner_that_does_not_read_the_tie_break_gets_it_once_at_the_end():
    from kubetune.search.objective import EpochReporter

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    reporter = EpochReporter(trial, "val_acc", True, max, [], 0, 1, 3)
    for epoch, loss in enumerate([2.2, 2.0, 2.1], 1):
        reporter(epoch, {"val_acc": 0.1, "val_loss": loss})
    assert TIE_BREAK_ATTR not in study.trials[-1].user_attrs  # no write per epoch
    reporter.store_tie_break()
    assert study.trials[-1].user_attrs[TIE_BREAK_ATTR] == 2.0


@pytest.mark.parametrize("steps, first_rung", [(5, 1), (10, 2), (16, 2), (20, 2), (30, 3), (100, 5), (2, 1)])
def test_the_first_rung_is_half_the_square_root_of_the_trial(steps, first_rung):
    study = optuna.create_study(direction="maximize", pruner=TrialLengthHalvingPruner())
    assert _halving_run(study, [0.9] * steps, steps) is None  # the first trial has no rival
    assert _halving_run(study, [0.1] * steps, steps) == first_rung
    # Rungs then grow by the reduction factor: a trial good at the first rung is judged at the next.
    second = first_rung * HALVING_REDUCTION_FACTOR
    if second <= steps:
        assert _halving_run(study, [0.95] * first_rung + [0.1] * (steps - first_rung), steps) == second


@pytest.mark.parametrize("steps, values", [(1, [0.1]), (3, [0.95, 0.1, 0.1])])
def test_a_trial_is_not_pruned_at_its_last_step(steps, values):
    # With 1-step or 3-step trials a rung falls on the last step: a verdict there saves
    # nothing and would discard a finished trial, so the trial completes.
    study = optuna.create_study(direction="maximize", pruner=TrialLengthHalvingPruner())
    assert _halving_run(study, [0.9] * steps, steps) is None
    assert _halving_run(study, values, steps) is None
    assert _halving_run(study, [0.05] * (steps + 3), steps + 3) == 1  # a longer trial is still judged


def test_without_its_length_a_trial_is_timed_by_the_longest_completed_one():
    pruner = TrialLengthHalvingPruner()
    study = optuna.create_study(direction="maximize", pruner=pruner)
    assert _halving_run(study, [0.1] * 10, None) is None  # nothing completed: no verdict yet
    assert _halving_run(study, [0.9] * 10, None) is None
    assert pruner.min_resource(study, study.ask()) == 2
    assert _halving_run(study, [0.05] * 10, None) == 2


def test_halving_defaults_and_overrides():
    def built(**pruner):
        return build_pruner(SearchConfig.model_validate({"study_name": "s", "pruner": pruner}))

    default = built()  # `pruner:` left out of the config altogether
    assert isinstance(default, TrialLengthHalvingPruner)
    assert (default.reduction_factor, default.min_early_stopping_rate) == (HALVING_REDUCTION_FACTOR, 0)
    assert built(type="SuccessiveHalvingPruner", reduction_factor=2).reduction_factor == 2
    # An explicit first rung is Optuna's own pruner, exactly as configured.
    fixed = built(type="SuccessiveHalvingPruner", min_resource=3)
    assert type(fixed) is optuna.pruners.SuccessiveHalvingPruner
    assert (fixed._min_resource, fixed._reduction_factor) == (3, HALVING_REDUCTION_FACTOR)
    with pytest.raises(ValueError, match="n_warmup_steps does not apply to SuccessiveHalvingPruner"):
        built(type="SuccessiveHalvingPruner", n_warmup_steps=3)


@pytest.mark.parametrize("space, cv, expected", [
    ({}, False, None),
    ({"training.num_epochs": {"type": "int", "low": 5, "high": 20}}, False, 5),
    ({"training.num_epochs": {"type": "categorical", "choices": [10, 4, 20]}}, False, 4),
    ({"training.num_epochs": {"type": "int", "low": 5, "high": 20}}, True, 15),
])
def test_a_searched_length_judges_every_trial_at_the_shortest_ones_rungs(space, cv, expected):
    search = SearchConfig.model_validate({
        "study_name": "s", "search_space": space,
        "cross_validation": {"enabled": cv, "n_folds": 3}})
    assert shortest_trial_steps(search) == expected
    pruner = build_pruner(search)
    assert pruner.shortest_steps == expected
    if expected is not None:  # a 60-step trial is judged where the shortest one is (epoch 1, or 2 of 15)
        study = optuna.create_study(direction="maximize", pruner=pruner)
        assert _halving_run(study, [0.9] * 60, 60) is None
        assert _halving_run(study, [0.1] * 60, 60) == (1 if expected < 10 else 2) != first_rung(60)


def test_catching_up_a_resumed_run_asks_the_pruner_at_each_missing_epoch():
    from kubetune.search.objective import EpochReporter

    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=2, reduction_factor=3))
    assert _halving_run(study, [0.9] * 8, 8) is None
    trial = study.ask()
    reporter = EpochReporter(trial, "val_acc", True, max, [], 0, 1, 8)
    history = [{"epoch": e, "val_acc": v} for e, v in enumerate([0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9], 1)]
    with pytest.raises(optuna.TrialPruned, match="pruned at epoch 2"):
        reporter.catch_up(history, {})  # judged on epoch 2's 0.4, not epoch 8's 0.9
