"""Several workers on one study: exact n_trials, heartbeats for killed workers, Ctrl-C."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from kubetune.search.attributes import (
    FAIL_REASON_ATTR,
    RETRY_HISTORY_ATTR,
    SAMPLER_SESSIONS_ATTR,
    TARGET_ATTR,
    WORKER_ATTR,
)
from tests.conftest import BIN
from tests.search.conftest import CLEAN_ENV, load_trials, search_section, small_base, write_config

pytestmark = pytest.mark.postgres


def _start(config: Path, *args: str, cwd: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "ml-search"), "--config", str(config), *args], cwd=cwd,
        env={**os.environ, **CLEAN_ENV, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(predicate, timeout: float = 240, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _trials(url: str, study: str):
    try:
        return optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)
    except KeyError:
        return None


def _finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def test_two_processes_share_one_study_exactly(fast_config, tmp_path, postgres_url):
    config = write_config(tmp_path / "c.yaml", small_base(fast_config, epochs=2, fraction=0.2),
                          search_section(study_name="shared", n_trials=6))
    env = {"KUBETUNE_STORAGE_URL": postgres_url}
    # Two shells (or machines) started together; --resume creates the study if it is missing.
    procs = [_start(config, "--resume", cwd=tmp_path, env=env) for _ in range(2)]
    for proc in procs:
        code, _, err = _finish(proc)
        assert code == 0, err
    study, trials = load_trials(postgres_url, "shared")
    assert len(trials) == 6
    assert sorted(t.number for t in trials) == list(range(6))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    workers = {t.user_attrs[WORKER_ATTR] for t in trials}
    assert len(workers) == 2, workers  # both processes trained trials
    assert study.user_attrs[SAMPLER_SESSIONS_ATTR] == 2

    code, _, err = _finish(_start(config, "--resume", "--n-trials", "3", cwd=tmp_path, env=env))
    assert code == 0, err
    study, trials = load_trials(postgres_url, "shared")
    assert len(trials) == 9 and study.user_attrs[TARGET_ATTR] == 9
    assert all(t.state == TrialState.COMPLETE for t in trials)
    # Same seed in every process, yet no process (nor the resume) repeats another's draws.
    points = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(points)) == len(points), points


def test_a_sigkilled_worker_is_failed_by_heartbeat_and_its_trial_retried(fast_config, tmp_path, postgres_url):
    base = small_base(fast_config, epochs=2, fraction=0.2)
    config = write_config(tmp_path / "c.yaml", base, search_section(study_name="killed", n_trials=2))
    env = {"KUBETUNE_STORAGE_URL": postgres_url, "KUBETUNE_HEARTBEAT_INTERVAL": "1",
           "KUBETUNE_HEARTBEAT_GRACE": "2"}
    # The victim trains long trials, so it is surely mid-trial when it dies.
    victim = _start(config, "--epochs", "200", cwd=tmp_path, env=env)

    def reported():
        trials = _trials(postgres_url, "killed")
        return trials and trials[0].state == TrialState.RUNNING and trials[0].intermediate_values
    _wait_for(reported, what="trial 0 to report an epoch")
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    lost = _trials(postgres_url, "killed")[0]
    assert lost.state == TrialState.RUNNING  # nobody told it: only the heartbeat can tell

    code, _, err = _finish(_start(config, "--resume", cwd=tmp_path, env=env))
    assert code == 0, err
    study, trials = load_trials(postgres_url, "killed")
    assert trials[0].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get(RETRY_HISTORY_ATTR) == [0]]
    assert len(retries) == 1
    assert retries[0].params == lost.params and retries[0].state == TrialState.COMPLETE
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    counted = [t for t in trials if t.number != 0]
    assert len(counted) == 2  # the study completed its two trials


def test_ctrl_c_fails_the_trial_and_resume_reruns_it(fast_config, tmp_path, postgres_url):
    config = write_config(tmp_path / "c.yaml", small_base(fast_config, epochs=2, fraction=0.2),
                          search_section(study_name="from-the-file", n_trials=5))
    env = {"KUBETUNE_STORAGE_URL": postgres_url}
    flags = ["--study-name", "interrupted", "--epochs", "200"]
    proc = _start(config, *flags, "--n-trials", "2", cwd=tmp_path, env=env)

    def reported():
        trials = _trials(postgres_url, "interrupted")
        return trials and trials[0].intermediate_values
    _wait_for(reported, what="trial 0 to report an epoch")
    proc.send_signal(signal.SIGINT)
    code, _, err = _finish(proc)
    assert code == 130, err
    # The hint repeats every flag but the count: a resumed study keeps its total.
    assert f"continue with: {shlex.join(['ml-search', '--config', str(config), *flags, '--resume'])}\n" in err
    trials = _trials(postgres_url, "interrupted")
    assert trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs[FAIL_REASON_ATTR] == "interrupted"
    assert trials[1].state == TrialState.WAITING and trials[1].params == trials[0].params
    assert not [t for t in trials if t.state == TrialState.RUNNING]

    code, _, err = _finish(_start(config, "--study-name", "interrupted", "--resume", cwd=tmp_path, env=env))
    assert code == 0, err
    _, trials = load_trials(postgres_url, "interrupted")  # 2 as started, not the file's 5
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[1].params == trials[0].params


if sys.platform == "win32":  # pragma: no cover
    pytestmark = pytest.mark.skip("POSIX signals")
