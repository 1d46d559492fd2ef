"""A trial pod stopped by SIGTERM leaves its trial RUNNING; the next pod resumes it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from kubetune.config import validate_config, with_overrides
from kubetune.search.attributes import FAIL_REASON_ATTR, INTERRUPTED_ATTR
from kubetune.search.interruption import TERMINATED_EXIT, Terminated
from kubetune.search.objective import EpochReporter, TrialTrainer
from kubetune.search.single_trial import run_stored_trial
from kubetune.search.space import distributions
from kubetune.training import train
from kubetune.training.checkpoint import load_checkpoint
from tests.conftest import BIN, run_cli
from tests.search.conftest import search_section, small_base, write_config

EPOCHS, STOP = 15, 2

if sys.platform == "win32":  # pragma: no cover
    pytestmark = pytest.mark.skip("POSIX signals")


def trained_epochs(output: str, epochs: int = EPOCHS) -> list[int]:
    """The epochs a run trained, from its epoch lines."""
    return [int(n) for n in re.findall(rf"^epoch (\d+)/{epochs} ", output, re.MULTILINE)]


def wait_for_checkpoint(path: Path, epoch: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if path.is_file() and load_checkpoint(path)["epoch"] >= epoch:
            return
        time.sleep(0.02)
    raise AssertionError(f"no {path} of epoch {epoch} within {timeout} s")


def test_sigterm_leaves_the_trial_running_and_the_next_pod_resumes_it(fast_config, tmp_path):
    url = f"sqlite:///{tmp_path / 'op.db'}"
    base = small_base(fast_config, epochs=EPOCHS, fraction=0.3)
    config_path = write_config(tmp_path / "c.yaml", base, search_section(study_name="op"))
    config = validate_config({**base, "search": search_section(study_name="op")})
    study = optuna.create_study(study_name="op", storage=url, direction="maximize")
    trial = study.ask(distributions(config.search.search_space))  # what the operator does
    run_dir = Path(config.logging.output_dir) / "op" / "trial-0"

    pod = subprocess.Popen([str(BIN / "ml-train"), "--config", str(config_path), "--trial", "op:0"],
                           cwd=tmp_path, env={**os.environ, "KUBETUNE_STORAGE_URL": url},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_checkpoint(run_dir / "last.pt", STOP, pod)
    pod.send_signal(signal.SIGTERM)
    _, err = pod.communicate(timeout=120)
    assert pod.returncode == TERMINATED_EXIT == 143, err
    saved = load_checkpoint(run_dir / "last.pt")["epoch"]
    first = trained_epochs(err)
    assert STOP <= saved < EPOCHS and first[:saved] == list(range(1, saved + 1))
    stored = study.get_trials()[0]
    assert stored.state == TrialState.RUNNING
    assert re.fullmatch(r"terminated \(SIGTERM\) after epoch \d+", stored.user_attrs[INTERRUPTED_ATTR])
    assert FAIL_REASON_ATTR not in stored.user_attrs
    assert f"trial 0 of op: {stored.user_attrs[INTERRUPTED_ATTR]}" in err

    second = run_cli("ml-train", "--config", str(config_path), "--trial", "op:0", cwd=tmp_path,
                     env={"KUBETUNE_STORAGE_URL": url})
    assert second.returncode == 0, second.stderr
    assert f"trial 0 of op: resuming from epoch {saved} of {EPOCHS} (last.pt)" in second.stdout
    assert trained_epochs(second.stderr) == list(range(saved + 1, EPOCHS + 1))
    print(f"epochs saved by resuming: {saved} of {EPOCHS}")

    stored = study.get_trials()[0]
    assert stored.state == TrialState.COMPLETE and stored.user_attrs[INTERRUPTED_ATTR] == ""
    assert sorted(stored.intermediate_values) == list(range(1, EPOCHS + 1))
    assert stored.value == pytest.approx(max(stored.intermediate_values.values()))
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert [e.step for e in events.Scalars("val_acc")] == list(range(1, EPOCHS + 1))

    # The interrupted and resumed trial trained exactly what one uninterrupted run trains.
    trial_config = TrialTrainer(config, "op").trial_config(trial.params)
    reference = train(with_overrides(trial_config, {"logging.output_dir": str(tmp_path / "ref")}),
                      progress=False, epoch_lines=False)
    history = json.loads((run_dir / "metrics.json").read_text())["epochs"]
    assert history == reference.history
    assert stored.value == reference.best["val_acc"]


@pytest.mark.postgres
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_retried_trial_continues_from_the_killed_workers_checkpoint(fast_config, tmp_path, postgres_url):
    base = small_base(fast_config, epochs=EPOCHS, fraction=0.3)
    config_path = write_config(tmp_path / "c.yaml", base, search_section(study_name="killed", n_trials=1))
    env = {**os.environ, "KUBETUNE_STORAGE_URL": postgres_url, "KUBETUNE_HEARTBEAT_INTERVAL": "1",
           "KUBETUNE_HEARTBEAT_GRACE": "2"}
    runs = Path(base["logging"]["output_dir"]) / "killed"
    victim = subprocess.Popen([str(BIN / "ml-search"), "--config", str(config_path), "--verbose"],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    wait_for_checkpoint(runs / "trial-0" / "last.pt", STOP, victim)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    saved = load_checkpoint(runs / "trial-0" / "last.pt")["epoch"]
    assert STOP <= saved < EPOCHS

    retry = run_cli("ml-search", "--config", str(config_path), "--resume", "--verbose", cwd=tmp_path,
                    env={k: env[k] for k in ("KUBETUNE_STORAGE_URL", "KUBETUNE_HEARTBEAT_INTERVAL",
                                              "KUBETUNE_HEARTBEAT_GRACE")})
    assert retry.returncode == 0, retry.stderr
    assert f"trial 1 of killed: resuming from epoch {saved} of {EPOCHS} (trial-0/last.pt)" in retry.stdout
    assert trained_epochs(retry.stderr) == list(range(saved + 1, EPOCHS + 1))
    print(f"epochs saved by resuming the retry: {saved} of {EPOCHS}")

    trials = optuna.load_study(study_name="killed", storage=postgres_url).get_trials()
    lost, retried = trials
    assert lost.state == TrialState.FAIL
    assert optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(retried) == 0
    assert retried.state == TrialState.COMPLETE and retried.params == lost.params
    assert sorted(retried.intermediate_values) == list(range(1, EPOCHS + 1))
    assert all(retried.intermediate_values[step] == value
               for step, value in lost.intermediate_values.items())
    assert len(json.loads((runs / "trial-1" / "metrics.json").read_text())["epochs"]) == EPOCHS


def _stop_pod_after(monkeypatch, epoch: int, where: str = "epoch {epoch}") -> None:
    """SIGTERM right after the trial reported ``epoch``, before the pruner is asked."""
    real = EpochReporter._prune

    def prune(self, running):
        if self.where == where.format(epoch=epoch):
            raise Terminated()
        real(self, running)

    monkeypatch.setattr(EpochReporter, "_prune", prune)


@pytest.mark.parametrize("pruned", [True, False], ids=["pruner-says-prune", "pruner-says-go-on"])
def test_a_resumed_pod_asks_the_pruner_before_training_and_clears_interrupted(
        fast_config, tmp_path, monkeypatch, capsys, pruned):
    url = f"sqlite:///{tmp_path / 'op.db'}"
    pruner = {"type": "MedianPruner", "n_startup_trials": 1, "n_warmup_steps": STOP} if pruned \
        else {"type": "none"}
    config = validate_config({**small_base(fast_config, epochs=4), "search": search_section(
        study_name="op", pruner=pruner)})
    study = optuna.create_study(study_name="op", storage=url, direction="maximize")
    dists = distributions(config.search.search_space)
    study.add_trial(optuna.trial.create_trial(  # a trial no other beats: the median prunes
        params={"optimizer.lr": 0.05, "training.batch_size": 64}, distributions=dists, value=1.0,
        intermediate_values=dict.fromkeys(range(1, 5), 1.0)))
    trial = study.ask(dists)
    last = Path(config.logging.output_dir) / "op" / f"trial-{trial.number}" / "last.pt"

    with monkeypatch.context() as patched:
        _stop_pod_after(patched, STOP)
        assert run_stored_trial(config, f"op:{trial.number}", storage=url) == TERMINATED_EXIT
    stopped = study.get_trials()[trial.number]
    assert stopped.state == TrialState.RUNNING and stopped.last_step == STOP  # reported, not told
    assert stopped.user_attrs[INTERRUPTED_ATTR] == f"terminated (SIGTERM) after epoch {STOP}"
    assert load_checkpoint(last)["epoch"] == STOP
    capsys.readouterr()

    assert run_stored_trial(config, f"op:{trial.number}", storage=url) == 0
    output = capsys.readouterr()
    stored = study.get_trials()[trial.number]
    if pruned:  # at once: the resumed pod trains no epoch first
        assert stored.state == TrialState.PRUNED and stored.last_step == STOP
        assert f"pruned at epoch {STOP}" in output.err
        assert load_checkpoint(last)["epoch"] == STOP
        assert stored.user_attrs[INTERRUPTED_ATTR] == stopped.user_attrs[INTERRUPTED_ATTR]
    else:
        assert stored.state == TrialState.COMPLETE and sorted(stored.intermediate_values) == [1, 2, 3, 4]
        assert trained_epochs(output.err, 4) == [3, 4]
        assert stored.user_attrs[INTERRUPTED_ATTR] == ""  # it trained again: no longer stopped


def _run_without_reporting_twice(config, number: int, url: str) -> None:
    """The next pod of trial ``number`` completes without Optuna's "already reported" warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run_stored_trial(config, f"op:{number}", storage=url) == 0
    assert not [w for w in caught if "already reported" in str(w.message)]


def test_an_epoch_reported_before_its_checkpoint_landed_is_trained_again_not_reported_twice(
        fast_config, tmp_path, monkeypatch, capsys):
    """Checkpoints are written in the background: a pod killed (SIGKILL, a lost node)
    after reporting epoch STOP can leave last.pt at STOP - 1. The next pod trains epoch
    STOP again and keeps the trial's stored value for it, without Optuna's warning."""
    from kubetune.training.checkpoint import CheckpointWriter

    url = f"sqlite:///{tmp_path / 'op.db'}"
    config = validate_config({**small_base(fast_config, epochs=4), "search": search_section(
        study_name="op", pruner={"type": "none"})})
    study = optuna.create_study(study_name="op", storage=url, direction="maximize")
    trial = study.ask(distributions(config.search.search_space))
    last = Path(config.logging.output_dir) / "op" / f"trial-{trial.number}" / "last.pt"

    real_save = CheckpointWriter.save
    with monkeypatch.context() as patched:
        _stop_pod_after(patched, STOP)
        patched.setattr(CheckpointWriter, "save", lambda self, payload, best: None
                        if payload["epoch"] == STOP else real_save(self, payload, best=best))
        assert run_stored_trial(config, f"op:{trial.number}", storage=url) == TERMINATED_EXIT
    reported = study.get_trials()[trial.number].intermediate_values
    assert sorted(reported) == [1, STOP] and load_checkpoint(last)["epoch"] == STOP - 1
    capsys.readouterr()

    _run_without_reporting_twice(config, trial.number, url)
    assert trained_epochs(capsys.readouterr().err, 4) == [STOP, 3, 4]
    stored = study.get_trials()[trial.number]
    assert stored.state == TrialState.COMPLETE and sorted(stored.intermediate_values) == [1, 2, 3, 4]
    assert stored.intermediate_values[STOP] == reported[STOP]  # same seed: the same value again


def test_a_restarted_cross_validated_trial_trains_again_without_reporting_twice(
        fast_config, tmp_path, monkeypatch, capsys):
    """Cross-validated trials keep no resume point: the next pod starts fold 1 again,
    and the steps the stopped pod reported keep their stored values."""
    url = f"sqlite:///{tmp_path / 'op.db'}"
    config = validate_config({**small_base(fast_config, epochs=3), "search": search_section(
        study_name="op", cross_validation={"enabled": True, "n_folds": 2})})
    study = optuna.create_study(study_name="op", storage=url, direction="maximize")
    trial = study.ask(distributions(config.search.search_space))
    with monkeypatch.context() as patched:
        _stop_pod_after(patched, STOP, "epoch {epoch} of fold 1")
        assert run_stored_trial(config, f"op:{trial.number}", storage=url) == TERMINATED_EXIT
    reported = study.get_trials()[trial.number].intermediate_values
    assert sorted(reported) == [1, STOP]
    capsys.readouterr()

    _run_without_reporting_twice(config, trial.number, url)
    stored = study.get_trials()[trial.number]
    assert stored.state == TrialState.COMPLETE and sorted(stored.intermediate_values) == list(range(1, 7))
    assert all(stored.intermediate_values[step] == value for step, value in reported.items())


class _SigtermWhileTold(Exception):
    """An exception whose message is read while the outcome is being recorded; reading it
    the first time sends this process a SIGTERM (the pod is deleted just then)."""

    sent = False

    def __str__(self) -> str:
        if not _SigtermWhileTold.sent:
            _SigtermWhileTold.sent = True
            signal.raise_signal(signal.SIGTERM)
        return "the end"


class _PrunedThenSigterm(_SigtermWhileTold, optuna.TrialPruned):
    pass


@pytest.mark.parametrize(("error", "state", "code"), [
    (_PrunedThenSigterm, TrialState.PRUNED, 0), (_SigtermWhileTold, TrialState.FAIL, 1)],
    ids=["pruned", "failed"])
def test_a_sigterm_after_training_ended_does_not_stop_the_outcome_being_told(
        fast_config, tmp_path, monkeypatch, error, state, code):
    url = f"sqlite:///{tmp_path / 'op.db'}"
    config = validate_config({**small_base(fast_config), "search": search_section(study_name="op")})
    study = optuna.create_study(study_name="op", storage=url, direction="maximize")
    study.ask(distributions(config.search.search_space))

    def objective(self, trial):
        raise error()

    monkeypatch.setattr(TrialTrainer, "prepare", lambda self: None)
    monkeypatch.setattr(TrialTrainer, "objective", objective)
    monkeypatch.setattr(_SigtermWhileTold, "sent", False)
    received = []

    def ours(signum, frame):
        received.append(signum)

    outer = signal.signal(signal.SIGTERM, ours)
    try:
        try:
            code_returned = run_stored_trial(config, "op:0", storage=url)
        except KeyboardInterrupt:
            pytest.fail("the SIGTERM escaped while the outcome was recorded")
        restored = signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, outer)
    assert _SigtermWhileTold.sent and not received  # it came while the trial pod's handler was in
    assert code_returned == code
    assert study.get_trials()[0].state == state
    assert restored is ours  # the handler from before the trial is back
