"""examples/custom_model: the user's own nn.Module factory trains with ml-train and is tuned by ml-search."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from tests.conftest import run_cli

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_model"


def example_folder(tmp_path: Path, digits_dir: Path) -> Path:
    """The example as a user has it: its files in the working folder, the digits under data/."""
    work = tmp_path / "custom_model"
    shutil.copytree(EXAMPLE, work)
    shutil.copytree(digits_dir, work / "data" / "digits")
    return work


def test_ml_train_trains_the_factorys_model_for_an_epoch(tmp_path, digits_dir):
    work = example_folder(tmp_path, digits_dir)
    result = run_cli("ml-train", "--config", "config.yaml", "--epochs", "1", "--set", "model.kwargs.width=8",
                     cwd=work)
    assert result.returncode == 0, result.stderr
    (run,) = (work / "runs" / "digits").iterdir()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["architecture"] == "digits_net:build"
    assert saved["model"]["kwargs"] == {"width": 8, "depth": 2, "dropout": 0.1}
    assert "epoch 1/1" in result.stdout + result.stderr


def test_ml_search_tunes_the_factorys_own_arguments(tmp_path, digits_dir):
    work = example_folder(tmp_path, digits_dir)
    result = run_cli("ml-search", "--config", "config.yaml", "--n-trials", "3", "--set", "training.num_epochs=2",
                     cwd=work)
    assert result.returncode == 0, result.stderr
    study = work / "runs" / "optuna_studies" / "digits_net"
    best = yaml.safe_load((study / "best_config.yaml").read_text())
    assert best["model"]["architecture"] == "digits_net:build"
    assert best["model"]["kwargs"]["width"] in (8, 16, 32)
    trials = (study / "trials.csv").read_text()
    assert "model.kwargs.width" in trials.splitlines()[0]
    retrain = run_cli("ml-train", "--config", str(study / "best_config.yaml"), "--epochs", "1", cwd=work)
    assert retrain.returncode == 0, retrain.stderr
