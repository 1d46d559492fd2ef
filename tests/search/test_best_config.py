"""best_config.yaml trains through ml-train and reproduces the best trial's metric."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.conftest import run_cli
from tests.search.conftest import CLEAN_ENV, load_trials, search_section, small_base, write_config


def test_best_config_reproduces_the_best_trial(fast_config, tmp_path, sqlite_url):
    config = write_config(tmp_path / "c.yaml", small_base(fast_config, epochs=3, fraction=0.3),
                          search_section(study_name="repro", n_trials=3))
    result = run_cli("ml-search", "--config", str(config), "--storage", sqlite_url, cwd=tmp_path,
                     env=CLEAN_ENV)
    assert result.returncode == 0, result.stderr
    study, _ = load_trials(sqlite_url, "repro")
    best_path = tmp_path / "runs" / "optuna_studies" / "repro" / "best_config.yaml"
    best = yaml.safe_load(best_path.read_text())
    assert best["optimizer"]["lr"] == study.best_params["optimizer.lr"]
    assert best["training"]["batch_size"] == study.best_params["training.batch_size"]
    assert best["training"]["num_epochs"] == 3 and "search" not in best

    train = run_cli("ml-train", "--config", str(best_path), "--no-progress", cwd=tmp_path, env=CLEAN_ENV)
    assert train.returncode == 0, train.stderr
    reached = float(re.search(r"best val_acc=([0-9.]+)", train.stdout).group(1))
    # Same data split, seed and params on the CPU: the same run, up to float noise.
    assert reached == pytest.approx(study.best_value, abs=0.01)
