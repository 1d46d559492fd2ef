"""Real training on the digits sample: accuracy, TensorBoard events, checkpoints, reproducibility."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from kubetune.config import validate_config
from kubetune.training import TrainingDiverged, train
from kubetune.training.run_log import SCALARS


def test_small_cnn_reaches_90_percent_within_10_epochs(fast_config):
    fast_config["training"]["num_epochs"] = 10
    result = train(validate_config(fast_config), progress=False)
    assert len(result.history) == 10
    assert max(e["val_acc"] for e in result.history) >= 0.90


@pytest.fixture(scope="module")
def two_epoch_run(digits_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("tb")
    config = validate_config({
        "data": {"path": str(digits_dir), "image_size": 8, "channels": 1},
        "training": {"num_epochs": 2, "batch_size": 64, "device": "cpu"},
        "optimizer": {"lr": 0.05},
        "logging": {"output_dir": str(out), "experiment_name": "exp", "run_name": "r"},
    })
    return config, train(config, progress=False)


def test_tensorboard_has_every_scalar_for_every_epoch(two_epoch_run):
    _, result = two_epoch_run
    events = EventAccumulator(str(result.run_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in SCALARS:
        assert tag in tags
        values = events.Scalars(tag)
        assert [v.step for v in values] == [1, 2]
        assert values[-1].value == pytest.approx(result.history[-1][tag], rel=1e-5)
    # The HParams tab needs the plugin's session data.
    assert "hparams" in events.PluginTagToContent("hparams") or events.PluginTagToContent("hparams")


def test_run_folder_has_metrics_checkpoints_and_config(two_epoch_run):
    config, result = two_epoch_run
    run_dir = result.run_dir
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert metrics["hparams"]["optimizer.lr"] == 0.05
    assert len(metrics["epochs"]) == 2
    for name in ("best.pt", "last.pt"):
        checkpoint = torch.load(run_dir / name, weights_only=False)
        assert checkpoint["config"]["optimizer"]["lr"] == 0.05
        assert checkpoint["classes"] == [str(i) for i in range(10)]
        assert "model_state" in checkpoint
    assert (run_dir / "config.yaml").read_text().startswith("model:")


def test_a_new_run_never_overwrites_an_old_one(two_epoch_run):
    config, first = two_epoch_run
    config = config.model_copy(update={"training": config.training.model_copy(update={"num_epochs": 1})})
    second = train(config, progress=False)
    assert second.run_dir != first.run_dir
    assert second.run_dir.name == "r-1"
    assert len(json.loads((first.run_dir / "metrics.json").read_text())["epochs"]) == 2


def test_seeded_runs_are_reproducible_on_the_cpu(fast_config):
    fast_config["training"]["num_epochs"] = 2
    config = validate_config(fast_config)
    a = train(config, progress=False).history
    b = train(config, progress=False).history
    assert a == b


def test_callback_can_stop_the_run(fast_config):
    fast_config["training"]["num_epochs"] = 5
    seen = []

    def stop_after_two(epoch, metrics):
        seen.append((epoch, set(metrics)))
        return epoch == 2

    result = train(validate_config(fast_config), callback=stop_after_two, progress=False)
    assert [e for e, _ in seen] == [1, 2]
    assert seen[0][1] >= set(SCALARS)
    assert result.stopped_early and len(result.history) == 2
    assert json.loads((result.run_dir / "metrics.json").read_text())["status"] == "stopped"


def test_callback_exception_propagates_and_marks_run(fast_config):
    class TrialPruned(Exception):
        pass

    def prune(epoch, metrics):
        raise TrialPruned()

    with pytest.raises(TrialPruned):
        train(validate_config(fast_config), callback=prune, progress=False)
    runs = list((fast_config_dir(fast_config)).iterdir())
    assert json.loads((runs[0] / "metrics.json").read_text())["status"] == "pruned"


def fast_config_dir(fast_config):
    from pathlib import Path

    return Path(fast_config["logging"]["output_dir"]) / fast_config["logging"]["experiment_name"]


def test_nan_loss_raises_training_diverged(fast_config):
    fast_config["optimizer"] = {"type": "sgd", "lr": 1e30, "momentum": 0.9}
    fast_config["model"]["dropout"] = 0.0
    with pytest.raises(TrainingDiverged, match="optimizer.lr"):
        train(validate_config(fast_config), progress=False)


def test_mixed_precision_on_cpu_uses_bfloat16(fast_config, caplog):
    fast_config["training"].update(num_epochs=1, trainer="mixed_precision")
    with caplog.at_level(logging.WARNING):
        result = train(validate_config(fast_config), progress=False)
    assert "bfloat16" in caplog.text
    assert result.history[0]["val_acc"] > 0.2


def test_every_optimizer_and_scheduler_trains(fast_config):
    fast_config["training"]["num_epochs"] = 2
    for optimizer, scheduler in [("adam", "step"), ("adamw", "none"), ("sgd", "cosine")]:
        fast_config["optimizer"] = {"type": optimizer, "lr": 0.01 if optimizer != "sgd" else 0.05}
        fast_config["scheduler"] = {"type": scheduler, "step_size": 1}
        fast_config["logging"]["run_name"] = f"{optimizer}-{scheduler}"
        result = train(validate_config(fast_config), progress=False)
        assert result.final["val_acc"] > 0.5, (optimizer, scheduler)
