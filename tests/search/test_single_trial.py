"""One stored trial, as the operator creates it (study.ask) and a trial pod runs it."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from kubetune.config import validate_config
from kubetune.search.attributes import (
    FAIL_REASON_ATTR,
    LR_DROP_ATTR,
    TIE_BREAK_ATTR,
    TRIAL_STEPS_ATTR,
)
from kubetune.search.single_trial import run_stored_trial
from kubetune.search.space import distributions
from kubetune.search.storage import make_storage
from kubetune.training.checkpoint import load_checkpoint
from tests.conftest import run_cli
from tests.search.conftest import search_section, small_base, write_config


def _operator_study(config, url: str, name: str) -> optuna.Study:
    """What the operator does: create the study, then ask() with the config's distributions."""
    return optuna.create_study(study_name=name, storage=make_storage(url, heartbeat=False),
                               direction="maximize")


@pytest.mark.postgres
def test_run_stored_trial_trains_reports_and_tells(fast_config, tmp_path, postgres_url, capsys):
    config = validate_config({**small_base(fast_config, epochs=3), "search": search_section(study_name="op")})
    study = _operator_study(config, postgres_url, "op")
    trial = study.ask(distributions(config.search.search_space))
    assert study.get_trials()[0].state == TrialState.RUNNING

    assert run_stored_trial(config, "op:0", storage=postgres_url) == 0
    stored = study.get_trials()[0]
    assert stored.state == TrialState.COMPLETE
    assert sorted(stored.intermediate_values) == [1, 2, 3]
    assert stored.value == pytest.approx(max(stored.intermediate_values.values()))
    run_dir = Path(config.logging.output_dir) / "op" / "trial-0"
    trained = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert trained["optimizer"]["lr"] == trial.params["optimizer.lr"]
    assert trained["training"]["batch_size"] == trial.params["training.batch_size"]
    events = sorted(run_dir.glob("events.out.tfevents.*"))
    assert events
    history = load_checkpoint(run_dir / "last.pt")["history"]  # what successive halving breaks ties by:
    assert stored.user_attrs[TIE_BREAK_ATTR] == min(e["val_loss"] for e in history)  # the lowest val_loss

    capsys.readouterr()
    assert run_stored_trial(config, "op:0", storage=postgres_url) == 0  # a restarted pod
    assert "already COMPLETE" in capsys.readouterr().out
    assert sorted(run_dir.glob("events.out.tfevents.*")) == events  # nothing trained again


def test_run_stored_trial_prunes(fast_config, tmp_path):
    url = f"sqlite:///{tmp_path / 'op.db'}"
    search = search_section(study_name="op", pruner={"type": "MedianPruner", "n_startup_trials": 1,
                                                     "n_warmup_steps": 0})
    config = validate_config({**small_base(fast_config, epochs=3), "search": search})
    study = _operator_study(config, url, "op")
    dists = distributions(config.search.search_space)
    study.add_trial(optuna.trial.create_trial(
        params={"optimizer.lr": 0.05, "training.batch_size": 64}, distributions=dists, value=0.99,
        intermediate_values={1: 0.99, 2: 0.99, 3: 0.99}))
    study.enqueue_trial({"optimizer.lr": 0.0101, "training.batch_size": 32})
    trial = study.ask(dists)
    assert run_stored_trial(config, f"op:{trial.number}", storage=url) == 0
    stored = study.get_trials()[trial.number]
    assert stored.state == TrialState.PRUNED and stored.last_step == 1


def test_the_median_pruner_prunes_from_the_trials_first_lr_drop(fast_config, tmp_path):
    """The trial says when its rate first drops (step 1 here); half the length would be step 2."""
    url = f"sqlite:///{tmp_path / 'op.db'}"
    search = search_section(study_name="op", pruner={"type": "MedianPruner", "n_startup_trials": 1})
    base = {**small_base(fast_config, epochs=4), "scheduler": {"type": "step", "step_size": 1}}
    config = validate_config({**base, "search": search})
    study = _operator_study(config, url, "op")
    dists = distributions(config.search.search_space)
    study.add_trial(optuna.trial.create_trial(
        params={"optimizer.lr": 0.05, "training.batch_size": 64}, distributions=dists, value=0.99,
        intermediate_values={1: 0.99, 2: 0.99, 3: 0.99, 4: 0.99}))
    study.enqueue_trial({"optimizer.lr": 0.0101, "training.batch_size": 32})
    trial = study.ask(dists)
    assert run_stored_trial(config, f"op:{trial.number}", storage=url) == 0
    stored = study.get_trials()[trial.number]
    assert stored.user_attrs[LR_DROP_ATTR] == 1
    assert stored.user_attrs[TRIAL_STEPS_ATTR] == config.training.num_epochs  # what the default pruner times by
    assert stored.state == TrialState.PRUNED and stored.last_step == 1


def test_ml_train_trial_fails_with_reason_and_storage_from_env(fast_config, tmp_path):
    url = f"sqlite:///{tmp_path / 'op.db'}"
    search = search_section(study_name="op", search_space={
        "optimizer.lr": {"type": "loguniform", "low": 1e-3, "high": 1e12}})
    config_path = write_config(tmp_path / "c.yaml", small_base(fast_config, epochs=2), search)
    study = optuna.create_study(study_name="op", storage=url, direction="maximize")
    study.enqueue_trial({"optimizer.lr": 1e10})
    study.ask({"optimizer.lr": FloatDistribution(1e-3, 1e12, log=True)})

    result = run_cli("ml-train", "--config", str(config_path), "--trial", "op:0", cwd=tmp_path,
                     env={"KUBETUNE_STORAGE_URL": url})
    assert result.returncode == 1, result.stderr
    failed = study.get_trials()[0]
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs[FAIL_REASON_ATTR].startswith("NaN loss")

    from kubetune.cli.train import main as ml_train

    for spec in ("op:7", "op", "op:x"):
        assert ml_train(["--config", str(config_path), "--trial", spec, "--storage", url]) == 2, spec
    assert len(study.get_trials()) == 1
