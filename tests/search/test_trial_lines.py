"""The line ml-search prints for each finished trial: epochs, not Optuna's steps."""

from __future__ import annotations

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from kubetune.search.attributes import TRIAL_STEPS_ATTR
from kubetune.search.worker import describe_trial, pruned_at


def _pruned(last_step: int | None, steps: int | None) -> optuna.trial.FrozenTrial:
    values = {} if last_step is None else {s: 0.5 for s in range(1, last_step + 1)}
    attrs = {} if steps is None else {TRIAL_STEPS_ATTR: steps}
    return create_trial(state=TrialState.PRUNED, params={"optimizer.lr": 0.01},
                        distributions={"optimizer.lr": FloatDistribution(1e-4, 1.0, log=True)},
                        intermediate_values=values, user_attrs=attrs)


def test_a_pruned_trial_says_after_which_epoch_of_how_many():
    assert pruned_at(_pruned(3, 10)) == "after epoch 3/10"
    assert pruned_at(_pruned(3, None)) == "after epoch 3"
    assert pruned_at(_pruned(None, 10)) == "before its first epoch"


def test_under_cross_validation_the_fold_is_named():
    # 5 folds of 4 epochs: step 11 is the third epoch of the third fold.
    assert pruned_at(_pruned(11, 20), folds=5) == "after epoch 3/4 of fold 3/5"
    assert pruned_at(_pruned(4, 20), folds=5) == "after epoch 4/4 of fold 1/5"


def test_the_trial_line_has_no_step():
    study = optuna.create_study(direction="maximize")
    trial = _pruned(2, 10)
    study.add_trial(trial)
    line = describe_trial(study, study.trials[0], "val_acc")
    assert "trial 0 PRUNED after epoch 2/10 [optimizer.lr=0.01]" in line
    assert "step" not in line


def test_a_worker_prints_each_trial_once_from_the_count_it_reads_anyway(fast_config, tmp_path, capsys, monkeypatch):
    # Real training on digits, a pruner that stops trials: a line per trial, in order, with
    # its state; the finished trial comes from the read of the trials the next count made,
    # not from a read of its own (Optuna's callbacks would read each one).
    from kubetune.config import validate_config
    from kubetune.search.study import start_study
    from kubetune.search.worker import run_worker
    from tests.search.conftest import search_section, small_base

    url = f"sqlite:///{tmp_path / 's.db'}"
    config = validate_config({**small_base(fast_config, epochs=3), "search": search_section(
        n_trials=4, storage=url, pruner={"type": "SuccessiveHalvingPruner", "min_resource": 1})})
    start_study(config, url, "unit", resume=False, n_trials=None)
    finished_reads: list[int] = []
    real = optuna.storages.RDBStorage.get_trial

    def get_trial(self, trial_id):
        trial = real(self, trial_id)
        if trial.state.is_finished():
            finished_reads.append(trial.number)
        return trial
    monkeypatch.setattr(optuna.storages.RDBStorage, "get_trial", get_trial)
    from kubetune.search.objective import TrialTrainer

    freed: list[int] = []  # the accelerator's memory given back between trials, once each
    monkeypatch.setattr(TrialTrainer, "free_memory", lambda self: freed.append(1))
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # as ml-search sets it: no "Best is trial" line
    try:
        result = run_worker(config, url, "unit", progress=True)
    finally:
        optuna.logging.set_verbosity(verbosity)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("trial ")]
    trials = optuna.load_study(study_name="unit", storage=url).trials
    assert result.trials == 4 and [line.split()[:3] for line in lines] == [
        ["trial", str(t.number), t.state.name] for t in trials]
    assert sum(result.states.values()) == 4 and result.states.get("PRUNED", 0) >= 1
    assert all(f"{t.number + 1}/4 done" in line for t, line in zip(trials, lines, strict=True))
    assert finished_reads == [] and len(freed) == 4
