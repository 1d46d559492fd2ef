"""TensorBoard's HParams entry of a run: the searched keys, a few to compare by, the state."""

from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

from kubetune.config import validate_config
from kubetune.training.run_log import COMPARED, STATE_KEY, RunLog, tensorboard_hparams


@pytest.fixture
def digits_config(fast_config):
    return validate_config(fast_config)


def _plugin_data(run_dir) -> dict[str, plugin_data_pb2.HParamsPluginData]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    try:
        contents = events.PluginTagToContent("hparams")
    except KeyError:  # no summary of the plugin at all
        return {}
    return {tag: plugin_data_pb2.HParamsPluginData.FromString(content) for tag, content in contents.items()}


def test_only_searched_and_compared_keys_then_the_state():
    flat = {"optimizer.lr": 0.1, "model.dropout": 0.2, "data.num_workers": 2, "training.batch_size": 32,
            "model.architecture": "small_cnn", "logging.output_dir": "runs"}
    shown = tensorboard_hparams(flat, ["model.dropout", "optimizer.lr"], "pruned")
    assert list(shown) == ["model.dropout", "optimizer.lr", "model.architecture", "training.batch_size", STATE_KEY]
    assert shown[STATE_KEY] == "pruned" and "data.num_workers" not in shown


@pytest.mark.parametrize("state, status", [("completed", "STATUS_SUCCESS"), ("pruned", "STATUS_UNKNOWN"),
                                           ("failed", "STATUS_FAILURE")])
def test_the_session_carries_the_state_to_filter_by(tmp_path, digits_config, state, status):
    log = RunLog(tmp_path, digits_config, searched=["model.dropout"])
    log.log_epoch(1, {"train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.0, "val_acc": 0.5})
    log.close(state, None)
    data = _plugin_data(tmp_path)
    start = data["_hparams_/session_start_info"].session_start_info
    assert set(start.hparams) <= {"model.dropout", STATE_KEY, *COMPARED}
    assert "model.dropout" in start.hparams and start.hparams[STATE_KEY].string_value == state
    assert data["_hparams_/session_end_info"].session_end_info.status == api_pb2.Status.Value(status)


def test_an_interrupted_run_leaves_the_entry_to_its_resumed_run(tmp_path, digits_config):
    log = RunLog(tmp_path, digits_config)
    log.close("interrupted", None)
    assert _plugin_data(tmp_path) == {}
