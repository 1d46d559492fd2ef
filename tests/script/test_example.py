"""examples/custom_script (plain PyTorch, no kubetune trainer) tuned by ml-search on digits."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState

from tests.conftest import run_cli
from tests.search.conftest import CLEAN_ENV, load_trials, start_search, trials_now

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_script"


def _example(tmp_path: Path, url: str, *, epochs: int, n_trials: int, pruner: dict | None = None) -> Path:
    shutil.copy(EXAMPLE / "train.py", tmp_path / "train.py")
    config = yaml.safe_load((EXAMPLE / "config.yaml").read_text())
    config["training"]["num_epochs"] = epochs
    config["search"].update(storage=url, n_trials=n_trials, command=[sys.executable, "train.py"])
    if pruner is not None:
        config["search"]["pruner"] = pruner
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.mark.parametrize("storage", ["sqlite", "postgresql"])
def test_the_example_script_is_tuned_by_ml_search(tmp_path, storage, request):
    url = f"sqlite:///{tmp_path / 'studies.db'}" if storage == "sqlite" else request.getfixturevalue("postgres_url")
    config = _example(tmp_path, url, epochs=2, n_trials=2, pruner={"type": "none"})
    result = run_cli("ml-search", "--config", str(config), cwd=tmp_path, env=CLEAN_ENV)
    assert result.returncode == 0, result.stderr
    _, trials = load_trials(url, "custom_script")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    for trial in trials:  # the value is the best reported val_acc, as for the built-in trainer
        assert set(trial.intermediate_values) == {1, 2}
        assert trial.value == max(trial.intermediate_values.values())
        assert (tmp_path / "runs" / "custom_script" / f"trial-{trial.number}" / "checkpoints" / "last.pt").is_file()
    best = yaml.safe_load((tmp_path / "runs" / "optuna_studies" / "custom_script" / "best_config.yaml").read_text())
    assert "search" not in best
    alone = subprocess.run([sys.executable, "train.py", "--config", str(tmp_path / "runs" / "optuna_studies" /
                            "custom_script" / "best_config.yaml")], cwd=tmp_path, capture_output=True, text=True,
                           env={**os.environ, **CLEAN_ENV})
    assert alone.returncode == 0, alone.stderr
    assert "epoch 2/2" in alone.stdout


def test_an_interrupted_script_trial_resumes_from_its_checkpoint(tmp_path, sqlite_url):
    config = _example(tmp_path, sqlite_url, epochs=40, n_trials=1, pruner={"type": "none"})
    search = start_search(config, cwd=tmp_path, env={})
    started = time.monotonic()
    while not any(len(t.intermediate_values) >= 3 for t in trials_now(sqlite_url, "custom_script")):
        assert search.poll() is None, search.communicate()
        time.sleep(0.2)
    pace = (time.monotonic() - started) / 3  # an upper bound of one epoch, torch's import included
    search.send_signal(signal.SIGINT)
    out, err = search.communicate(timeout=60 + 10 * pace)
    assert search.returncode == 130, err
    _, trials = load_trials(sqlite_url, "custom_script")
    first = trials[0]
    assert first.state == TrialState.FAIL and first.user_attrs["fail_reason"] == "interrupted"
    assert trials[1].state == TrialState.WAITING  # queued again, as a built-in trial is
    stopped = max(first.intermediate_values)

    resumed = subprocess.run([sys.executable, "-m", "kubetune.cli.search", "--config", str(config), "--resume"],
                             cwd=tmp_path, env={**os.environ, **CLEAN_ENV}, capture_output=True, text=True,
                             timeout=120 + 60 * pace)
    assert resumed.returncode == 0, resumed.stderr
    _, trials = load_trials(sqlite_url, "custom_script")
    retry = trials[1]
    assert retry.state == TrialState.COMPLETE
    assert sorted(retry.intermediate_values) == list(range(1, 41))
    for step in range(1, stopped + 1):  # the epochs the first run reported are taken over
        assert retry.intermediate_values[step] == first.intermediate_values[step]
    epochs = [line.split("/")[0] for line in resumed.stdout.splitlines() if line.startswith("epoch ")]
    assert "resuming after epoch " in resumed.stdout
    assert "epoch 1" not in epochs and int(epochs[0].split()[1]) >= stopped  # from its own checkpoint
