"""Resuming a run from its ``last.pt``: the same metrics as an uninterrupted run, on the CPU."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from kubetune.config import validate_config, with_overrides
from kubetune.config.loader import config_to_dict
from kubetune.errors import KubetuneError
from kubetune.training import train
from kubetune.training.checkpoint import CheckpointWriter, load_checkpoint, resumable

EPOCHS, STOP = 5, 2


def _config(fast_config, in_memory: bool, run_name: str):
    fast_config["training"]["num_epochs"] = EPOCHS
    # Exact only without DataLoader workers (runner.train's docstring says why).
    fast_config["data"].update(in_memory=in_memory, train_fraction=0.3, num_workers=0, augment={
        "random_crop_padding": 1, "horizontal_flip": True, "rotation_degrees": 10})
    fast_config["logging"]["run_name"] = run_name
    return validate_config(fast_config)


def _interrupted(config):
    """A run stopped by an interrupt after epoch STOP, as SIGTERM or Ctrl-C would."""
    def stop(epoch, _):
        if epoch == STOP:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train(config, callback=stop, progress=False, epoch_lines=False)


def _run_dir(config) -> Path:
    return Path(config.logging.output_dir) / config.logging.experiment_name / config.logging.run_name


def _steps(run_dir, tag="val_acc") -> list[int]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return [event.step for event in events.Scalars(tag)]


@pytest.mark.parametrize("in_memory", [True, False], ids=["in-memory", "streamed-no-workers"])
def test_a_resumed_run_ends_exactly_like_an_uninterrupted_one(fast_config, in_memory):
    config = _config(fast_config, in_memory, "run")
    _interrupted(config)
    run_dir = _run_dir(config)
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "interrupted"
    checkpoint = load_checkpoint(run_dir / "last.pt")
    assert checkpoint["epoch"] == STOP and len(checkpoint["history"]) == STOP
    assert set(checkpoint) >= {"model_state", "optimizer_state", "scheduler_state", "scaler_state",
                               "rng_state", "config", "run_id", "classes", "metrics"}

    trained = []
    resumed = train(config, resume=run_dir / "last.pt", progress=False, epoch_lines=False,
                    callback=lambda epoch, _: trained.append(epoch))
    assert trained == list(range(STOP + 1, EPOCHS + 1))  # no epoch the checkpoint holds
    assert resumed.run_dir == run_dir

    reference = train(with_overrides(config, {"logging.run_name": "reference"}), progress=False,
                      epoch_lines=False)
    assert resumed.history == reference.history
    assert resumed.best == reference.best
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == reference.history
    best = torch.load(run_dir / "best.pt", weights_only=True)
    assert best["epoch"] == reference.best["epoch"]
    assert _steps(run_dir) == list(range(1, EPOCHS + 1))  # the interrupted writer's steps purged


def test_resume_into_another_folder_writes_whole_curves(fast_config, tmp_path):
    config = _config(fast_config, True, "first")
    _interrupted(config)
    first = _run_dir(config)
    result = train(config, resume=first / "last.pt", run_dir=tmp_path / "second", progress=False,
                   epoch_lines=False)
    assert _steps(tmp_path / "second") == list(range(1, EPOCHS + 1))
    assert len(result.history) == EPOCHS
    assert load_checkpoint(tmp_path / "second" / "last.pt")["epoch"] == EPOCHS
    assert load_checkpoint(first / "last.pt")["epoch"] == STOP


def test_a_checkpoint_of_another_run_is_never_resumed(fast_config):
    config = _config(fast_config, True, "run")
    _interrupted(config)
    last = _run_dir(config) / "last.pt"
    other = with_overrides(config, {"optimizer.lr": 0.01})
    with pytest.raises(KubetuneError, match="not of this run"):
        train(other, resume=last, progress=False)
    assert resumable(last, config_to_dict(config)) is not None
    assert resumable(last, config_to_dict(other)) is None
    assert resumable(last, config_to_dict(config), run_id="study:3@2020-01-01T00:00:00") is None


def test_best_pt_is_written_before_last_pt(tmp_path, monkeypatch):
    """``last.pt`` is the commit point: a kill between the two writes never leaves a
    ``last.pt`` whose history names a best epoch that ``best.pt`` does not hold."""
    from kubetune.training import checkpoint

    class Killed(Exception):
        pass

    written, real, kill = [], checkpoint.write_bytes_atomic, []

    def write(path, data):
        written.append(path.name)
        if kill and len(written) == 2:
            raise Killed  # between the two writes
        real(path, data)

    monkeypatch.setattr(checkpoint, "write_bytes_atomic", write)
    with CheckpointWriter(tmp_path) as writer:
        writer.save({"epoch": 1}, best=True)
        writer.save({"epoch": 2}, best=False)
    assert written == ["best.pt", "last.pt", "last.pt"]
    written.clear()
    kill.append(True)
    with pytest.raises(Killed), CheckpointWriter(tmp_path) as writer:
        writer.save({"epoch": 3}, best=True)
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 3
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 2


def _disk_full(path, data):
    raise OSError(28, "No space left on device", str(path))


def _writes(monkeypatch, write=None, *, blocking=False):
    """Checkpoint files written by ``write`` (default: the real writer); ``blocking``
    writes wait for ``release.set()`` first, and ``started`` is set when one begins."""
    from kubetune.training import checkpoint

    started, release, write = threading.Event(), threading.Event(), write or checkpoint.write_bytes_atomic

    def blocked(path, data):
        started.set()
        assert release.wait(30)
        write(path, data)

    monkeypatch.setattr(checkpoint, "write_bytes_atomic", blocked if blocking else write)
    return started, release


def test_checkpoints_are_written_while_the_next_epoch_trains(tmp_path, monkeypatch):
    started, release = _writes(monkeypatch, blocking=True)
    payload = {"epoch": 1, "weights": torch.ones(3)}
    with CheckpointWriter(tmp_path) as writer:
        writer.save(payload, best=False)
        payload["weights"].add_(1)  # the next epoch trains on: the queued bytes keep epoch 1
        assert started.wait(30) and not (tmp_path / "last.pt").exists()  # save() did not wait
        release.set()
    saved = load_checkpoint(tmp_path / "last.pt")  # on disk once the block is left
    assert saved["epoch"] == 1 and saved["weights"].tolist() == [1.0, 1.0, 1.0]


def test_a_failed_checkpoint_write_stops_the_next_epoch(tmp_path, monkeypatch):
    _writes(monkeypatch, _disk_full)
    with pytest.raises(OSError, match="No space left"), CheckpointWriter(tmp_path) as writer:
        writer.save({"epoch": 1}, best=False)
        writer.save({"epoch": 2}, best=False)  # raises epoch 1's error
        pytest.fail("the second save went on after the first one's write failed")


def test_an_interrupt_waits_for_the_last_checkpoint_and_stays_the_error(tmp_path, monkeypatch, capsys):
    started, release = _writes(monkeypatch, blocking=True)
    with pytest.raises(KeyboardInterrupt), CheckpointWriter(tmp_path) as writer:
        writer.save({"epoch": 4}, best=False)
        assert started.wait(30)
        threading.Timer(0.2, release.set).start()
        raise KeyboardInterrupt  # SIGTERM (Terminated) or Ctrl-C while the write is queued
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 4  # the resume point landed

    _writes(monkeypatch, _disk_full)
    with pytest.raises(KeyboardInterrupt), CheckpointWriter(tmp_path) as writer:
        writer.save({"epoch": 5}, best=False)
        raise KeyboardInterrupt
    assert f"warning: the last checkpoint in {tmp_path} was not written" in capsys.readouterr().err
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 4


def test_an_interrupt_while_waiting_for_the_last_write_still_reports_its_error(tmp_path, monkeypatch, capsys):
    """SIGTERM or Ctrl-C while save() waits for the previous epoch's writes: the writes
    finish on the way out, and if they fail, the warning says so."""
    started, release = _writes(monkeypatch, _disk_full, blocking=True)

    def interrupt_then_release():
        time.sleep(0.3)  # the second save() is waiting by then
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.3)
        release.set()

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever ran before
    try:
        with pytest.raises(KeyboardInterrupt), CheckpointWriter(tmp_path) as writer:
            writer.save({"epoch": 1}, best=False)
            assert started.wait(30)
            threading.Thread(target=interrupt_then_release).start()
            writer.save({"epoch": 2}, best=False)  # waits for epoch 1's writes: interrupted there
    finally:
        signal.signal(signal.SIGINT, previous)
    assert f"warning: the last checkpoint in {tmp_path} was not written" in capsys.readouterr().err
