"""ml-init-config through real subprocesses: inspect, write, refuse to overwrite, train as written."""

from __future__ import annotations

import json

import yaml

from tests.conftest import run_cli


def test_sample_then_config_that_trains_without_edits(tmp_path):
    result = run_cli("ml-init-config", "--sample", "digits", "data/digits", "--yes", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "10 classes, 1797 images, 8x8 px, 1 channel" in result.stdout
    config_path = tmp_path / "configs" / "digits_config.yaml"
    text = config_path.read_text()
    assert text.startswith("# kubetune config")  # commented
    config = yaml.safe_load(text)
    assert config["data"]["path"] == "data/digits"
    assert config["data"]["channels"] == 1 and config["model"]["architecture"] == "small_cnn"
    assert "search" not in config

    trained = run_cli("ml-train", "--config", "configs/digits_config.yaml", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    metrics_files = list((tmp_path / "runs" / "digits").glob("*/metrics.json"))
    assert len(metrics_files) == 1
    epochs = json.loads(metrics_files[0].read_text())["epochs"]
    assert len(epochs) == 10
    assert max(e["val_acc"] for e in epochs) >= 0.90


def test_optuna_section_and_overwrite_protection(tmp_path, digits_dir):
    out = tmp_path / "c.yaml"
    first = run_cli("ml-init-config", str(digits_dir), "--optuna", "--yes", "-o", str(out))
    assert first.returncode == 0, first.stderr
    search = yaml.safe_load(out.read_text())["search"]
    assert search["study_name"] == "digits_optimization"
    assert search["sampler"]["type"] == "TPESampler"
    assert search["pruner"]["type"] == "MedianPruner"
    assert set(search["search_space"]) == {
        "optimizer.lr", "optimizer.weight_decay", "model.dropout", "training.batch_size",
    }
    assert yaml.safe_load(out.read_text())["data"]["train_fraction"] == 1.0  # the demo's 0.1 is the sample's

    before = out.read_text()
    again = run_cli("ml-init-config", str(digits_dir), "--yes", "-o", str(out))
    assert again.returncode == 2
    assert "--force" in again.stderr and str(out) in again.stderr
    assert out.read_text() == before
    forced = run_cli("ml-init-config", str(digits_dir), "--yes", "-o", str(out), "--force")
    assert forced.returncode == 0
    assert "search" not in yaml.safe_load(out.read_text())


def test_missing_dataset_is_exit_2_and_writes_nothing(tmp_path):
    result = run_cli("ml-init-config", "nowhere", "--yes", cwd=tmp_path)
    assert result.returncode == 2
    assert "nowhere" in result.stderr and "does not exist" in result.stderr
    assert not (tmp_path / "configs").exists()
