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
