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


@pytest.mark.parametrize("in_memory", [True, False], ids=["in-memory", "streamed"])
def test_seeded_runs_are_reproducible_on_the_cpu(fast_config, in_memory):
    fast_config["training"]["num_epochs"] = 2
    fast_config["data"].update(in_memory=in_memory, train_fraction=0.5, augment={
        "random_crop_padding": 1, "horizontal_flip": True, "rotation_degrees": 10})
    config = validate_config(fast_config)
    a = train(config, progress=False).history
    b = train(config, progress=False).history
    assert a == b
    other = config.model_copy(update={"training": config.training.model_copy(update={"seed": 1})})
    assert train(other, progress=False).history != a


def test_both_data_paths_give_the_same_accuracy_distribution(fast_config):
    """Batched augmentation on held data vs per-item torchvision on streamed files."""
    from scipy.stats import ttest_ind

    fast_config["training"]["num_epochs"] = 2
    fast_config["data"]["augment"] = {"random_crop_padding": 1, "rotation_degrees": 10}
    accuracy: dict[bool, list[float]] = {True: [], False: []}
    for seed in range(4):
        for in_memory in accuracy:
            fast_config["training"]["seed"] = seed
            fast_config["data"]["in_memory"] = in_memory
            result = train(validate_config(fast_config), progress=False, epoch_lines=False)
            accuracy[in_memory].append(result.final["val_acc"])
    held, streamed = accuracy[True], accuracy[False]
    assert min(held + streamed) > 0.85
    assert abs(sum(held) / 4 - sum(streamed) / 4) < 0.02, accuracy
    assert ttest_ind(held, streamed, equal_var=False).pvalue > 0.01, accuracy


def test_streamed_data_trains_with_persistent_workers(fast_config):
    fast_config["training"]["num_epochs"] = 2
    fast_config["data"].update(in_memory=False, num_workers=2)
    result = train(validate_config(fast_config), progress=False)
    assert result.final["val_acc"] > 0.8


@pytest.mark.parametrize("image_size", [8, 32])
def test_the_init_config_default_passes_90_percent_within_3_epochs(digits_dir, tmp_path, image_size):
    """What ml-init-config writes for digits, at the native size and upscaled to 32x32."""
    import yaml

    from kubetune.cli.init_config import suggest
    from kubetune.config import with_overrides
    from kubetune.config.template import render_config
    from kubetune.data import inspect_dataset

    text = render_config(suggest(inspect_dataset(digits_dir), str(digits_dir)), with_search=False)
    config = with_overrides(validate_config(yaml.safe_load(text)), {
        "data.image_size": image_size, "training.device": "cpu",
        "logging.output_dir": str(tmp_path)})
    assert config.model.architecture == "small_cnn" and config.training.num_epochs >= 3
    result = train(config, progress=False, epoch_lines=False, callback=lambda epoch, _: epoch == 3)
    assert max(e["val_acc"] for e in result.history) >= 0.9, result.history


def test_compile_trains_the_compiled_model_and_saves_plain_weights(fast_config, monkeypatch):
    compiled = []
    real_compile = torch.compile

    def eager_compile(model):  # dynamo without inductor: no C++ toolchain needed
        compiled.append(model)
        return real_compile(model, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    fast_config["training"].update(num_epochs=1, compile=True)
    result = train(validate_config(fast_config), progress=False)
    assert len(compiled) == 1
    assert result.final["val_acc"] > 0.5
    state = torch.load(result.run_dir / "last.pt", weights_only=False)["model_state"]
    assert not any(key.startswith("_orig_mod") for key in state)
    from kubetune.models import build_model

    build_model(validate_config(fast_config).model, 10, 1).load_state_dict(state)


def test_cuda_trains_channels_last():
    from kubetune.training.precision import build_precision

    assert build_precision("standard", torch.device("cuda")).memory_format == torch.channels_last
    assert build_precision("standard", torch.device("cpu")).memory_format == torch.preserve_format


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
