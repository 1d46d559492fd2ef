"""Resuming a study with a changed search space: what Optuna can continue, and what it cannot."""

from __future__ import annotations

import copy
import re

import pytest

from kubetune.config import validate_config
from kubetune.errors import ConfigError
from kubetune.search.attributes import TRIAL_STEPS_ATTR
from kubetune.search.space import distributions
from kubetune.search.study import start_study
from tests.search.conftest import search_section


def _config(fast_config, tmp_path, **space):
    raw = copy.deepcopy(fast_config)
    section = search_section()
    section["search_space"] = {**section["search_space"], **space}
    raw["search"] = section
    return validate_config(raw)


def _one_trial(config, url):
    study = start_study(config, url, "unit", resume=False, n_trials=None).study
    trial = study.ask(distributions(config.search.search_space))
    study.tell(trial, 0.5)
    return study


@pytest.mark.parametrize("key, spec, says", [
    ("training.batch_size", {"type": "categorical", "choices": [16, 32]},
     "is categorical [16, 32], but study `unit` sampled it as categorical [32, 64]"),
    ("optimizer.lr", {"type": "uniform", "low": 0.01, "high": 0.2},
     "is float 0.01..0.2, but study `unit` sampled it as log-scale float 0.01..0.2"),
    ("training.batch_size", {"type": "int", "low": 16, "high": 64},
     "is int 16..64, but study `unit` sampled it as categorical [32, 64]"),
])
def test_resume_refuses_a_space_the_trials_cannot_continue_before_writing(fast_config, tmp_path,
                                                                           key, spec, says):
    url = f"sqlite:///{tmp_path}/s.db"
    study = _one_trial(_config(fast_config, tmp_path), url)
    attrs = dict(study.user_attrs)
    with pytest.raises(ConfigError, match=re.escape(f"`search.search_space.{key}` {says};") + ".*--study-name") as caught:
        start_study(_config(fast_config, tmp_path, **{key: spec}), url, "unit", resume=True, n_trials=5)
    assert caught.value.path == f"search.search_space.{key}"
    assert len(study.get_trials()) == 1 and study.user_attrs == attrs  # nothing written


def test_resume_continues_a_widened_range_and_a_new_parameter(fast_config, tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    _one_trial(_config(fast_config, tmp_path), url)
    config = _config(fast_config, tmp_path,
                     **{"optimizer.lr": {"type": "loguniform", "low": 0.001, "high": 0.5},
                        "model.dropout": {"type": "uniform", "low": 0.0, "high": 0.5}})
    study = start_study(config, url, "unit", resume=True, n_trials=1).study
    trial = study.ask(distributions(config.search.search_space))
    assert set(trial.params) == {"optimizer.lr", "training.batch_size", "model.dropout"}


def test_resume_refuses_choices_without_a_queued_trials_value(fast_config, tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    study = start_study(_config(fast_config, tmp_path), url, "unit", resume=False, n_trials=None).study
    (queued,) = study.get_trials()  # the config's own point, batch size 64, not run yet
    changed = _config(fast_config, tmp_path,
                      **{"training.batch_size": {"type": "categorical", "choices": [16, 32]}})
    with pytest.raises(ConfigError, match=re.escape(
            "`search.search_space.training.batch_size` is categorical [16, 32], but trial 0 of study "
            "`unit` is queued with 64")):
        start_study(changed, url, "unit", resume=True, n_trials=None)
    assert queued.state.name == "WAITING"


def test_resume_with_other_trial_lengths_warns_that_the_pruner_compares_them(fast_config, tmp_path, caplog):
    url = f"sqlite:///{tmp_path}/s.db"
    config = _config(fast_config, tmp_path)
    study = start_study(config, url, "unit", resume=False, n_trials=None).study
    trial = study.ask(distributions(config.search.search_space))
    trial.set_user_attr(TRIAL_STEPS_ATTR, 3)  # as the objective records a 3-epoch trial
    study.tell(trial, 0.5)
    start_study(config, url, "unit", resume=True, n_trials=1)  # the same length: quiet
    assert "pruner compares" not in caplog.text
    shorter = validate_config({**copy.deepcopy(fast_config), "search": search_section(trial_epochs=2)})
    start_study(shorter, url, "unit", resume=True, n_trials=1)
    assert ("study `unit`'s trials ran 3 epochs, this search's run 2: the pruner compares trials "
            "step by step") in caplog.text
