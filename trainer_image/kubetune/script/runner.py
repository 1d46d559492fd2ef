"""Run the user's script (``search.command``) as each trial of ``ml-search``.

The script runs as a child process in ml-search's current directory, in a session
of its own, and dies with its worker. It finds its trial in the environment
(:mod:`kubetune.script.handover`): the storage URL, the study, the trial number,
the trial's config file (the config with the trial's values applied, written into
the trial's folder) and its checkpoint folder. It reports and prunes itself
through :mod:`kubetune.script.api`; this runner then tells Optuna what it ended
with, through the same objective as the built-in trainer (fail reasons, Ctrl-C
re-queueing, the exact budget).

- PRUNED when the script was pruned; COMPLETE with the value it recorded, when it
  exits 0; else FAIL, saying why: its exit code (or signal) and the last lines of
  its stderr, or that it exited 0 having reported nothing, under another metric,
  or without a final value.
- Ctrl-C is passed on to the script once; the trial then ends as FAIL
  ``interrupted`` and is queued again, like a built-in trial.
- A retry (a trial re-run after its worker died or a Ctrl-C) starts with the
  epochs and the checkpoint folder of the trial it retries, so the script resumes
  from its own checkpoint and reports only the epochs the storage lacks.
"""

from __future__ import annotations

import collections
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import optuna

from kubetune.config.loader import config_to_dict
from kubetune.config.schema import Config
from kubetune.config.yaml_io import dump_yaml
from kubetune.errors import ConfigError, KubetuneError
from kubetune.fileio import write_text_atomic
from kubetune.script import handover
from kubetune.search.attributes import (
    FINAL_VALUE_ATTR,
    PRUNED_ATTR,
    RETRY_HISTORY_ATTR,
    TRIAL_STEPS_ATTR,
)
from kubetune.search.interruption import Terminated, check_stop
from kubetune.search.objective import TrialTrainer
from kubetune.search.optuna_internals import stored_trial
from kubetune.search.results import trial_run_dir
from kubetune.search.storage import resolve_storage_url

STDERR_LINES = 5  # the last lines of a failed script's stderr kept in its fail_reason
_REASON_LIMIT = 480  # fail_reason holds one line of at most 500 characters
_GRACE_S = 30.0  # how long a script may take to stop after Ctrl-C before it is killed


class ScriptFailed(KubetuneError):
    """The user's script ended its trial without a value."""


class ScriptTrials(TrialTrainer):
    """The trials of a study whose ``search.command`` is the user's script."""

    def __init__(self, config: Config, study_name: str, *, quiet_epochs: bool = False,
                 storage: str | None = None) -> None:
        super().__init__(config, study_name, quiet_epochs=quiet_epochs)
        assert self.search.command is not None
        self.command = list(self.search.command)
        self.url = resolve_storage_url(storage, self.search)

    def prepare(self) -> None:
        """The command must be found before any trial runs (ConfigError)."""
        program = self.command[0]
        if shutil.which(program) is None:
            raise ConfigError(f"`search.command` runs {program!r}, which is not found on PATH "
                              f"or from {Path.cwd()}", path="search.command")

    def stopped_at(self, trial: optuna.Trial) -> str | None:
        """The last epoch the script reported ("epoch 4"), None before its first."""
        last = stored_trial(trial.study, trial).last_step
        return None if last is None else f"epoch {last}"

    def start_attrs(self, cfg: Config) -> dict[str, Any]:
        """A script trial's steps are its epochs (the script trains its own folds)."""
        return {TRIAL_STEPS_ATTR: cfg.training.num_epochs}

    def train_trial(self, trial: optuna.Trial, params: Mapping[str, Any]) -> float:
        """Run the script for ``trial``; its value, or TrialPruned, or ScriptFailed."""
        cfg = self.trial_config(params)
        folder = trial_run_dir(self.config, self.study_name, trial.number)
        folder.mkdir(parents=True, exist_ok=True)
        data = config_to_dict(cfg) | {"search": config_to_dict(self.config)["search"]}
        config_file = folder / handover.CONFIG_FILE
        write_text_atomic(config_file, dump_yaml(data))
        frozen = stored_trial(trial.study, trial)
        for attr in (FINAL_VALUE_ATTR, PRUNED_ATTR):  # an earlier pod's outcome, not told
            if frozen.user_attrs.get(attr) is not None:
                trial.set_user_attr(attr, None)
        _take_over_retried(trial, frozen, self.config, self.study_name, folder)
        self._clear_interrupted(trial, frozen)
        env = os.environ | {
            handover.STORAGE_ENV: self.url,
            handover.STUDY_ENV: self.study_name,
            handover.TRIAL_NUMBER_ENV: str(trial.number),
            handover.CONFIG_ENV: str(config_file.resolve()),
            handover.TRIAL_DIR_ENV: str(folder.resolve()),
            handover.CHECKPOINT_DIR_ENV: str(handover.checkpoint_dir(folder).resolve()),
        }
        code, tail = _run(self.command, env)
        return _outcome(stored_trial(trial.study, trial), self.command, code, tail, self.search.metric,
                        cfg.training.num_epochs)


def _take_over_retried(trial: optuna.Trial, frozen: optuna.trial.FrozenTrial, config: Config,
                       study_name: str, folder: Path) -> None:
    """A retry starts where the trial it retries stopped: its epochs and its checkpoints."""
    history = frozen.system_attrs.get(RETRY_HISTORY_ATTR)
    if not history:
        return
    source_number = history[-1]
    source = next((t for t in trial.study.get_trials(deepcopy=False) if t.number == source_number), None)
    if source is None:
        return
    own = frozen.intermediate_values
    for step, value in sorted(source.intermediate_values.items()):
        if step not in own:
            trial.report(value, step)
    checkpoints = handover.checkpoint_dir(trial_run_dir(config, study_name, source_number))
    target = handover.checkpoint_dir(folder)
    if checkpoints.is_dir() and not (target.is_dir() and any(target.iterdir())):
        shutil.copytree(checkpoints, target, dirs_exist_ok=True)


def _die_with_parent() -> None:
    """In the child, before exec: a SIGKILLed worker must not leave its script training."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _run(command: list[str], env: Mapping[str, str]) -> tuple[int, list[str]]:
    """Run ``command``; its exit code (negative: a signal) and its stderr's last lines.

    stderr passes through to ours as it comes. A Ctrl-C or SIGTERM that ml-search
    notes (:func:`check_stop`) is passed on once, as the same signal, and raised here
    once the script has ended; a script still running ``_GRACE_S`` later is killed.
    """
    proc = subprocess.Popen(command, env=dict(env), stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=_die_with_parent)
    assert proc.stderr is not None
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
    reader = threading.Thread(target=_pass_through, args=(proc.stderr, tail), daemon=True)
    reader.start()
    stop: KeyboardInterrupt | None = None
    deadline = 0.0
    try:
        while proc.poll() is None:
            if stop is None:
                try:
                    check_stop()
                except KeyboardInterrupt as exc:
                    stop, deadline = exc, time.monotonic() + _GRACE_S
                    proc.send_signal(signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)
            elif time.monotonic() > deadline:
                proc.kill()
            time.sleep(0.05)
    finally:
        if proc.poll() is None:  # a second Ctrl-C, or our own error
            proc.kill()
            proc.wait()
        reader.join(timeout=5)
    if stop is not None:
        raise stop
    return proc.returncode, list(tail)


def _pass_through(stream: IO[bytes], tail: collections.deque[str]) -> None:
    for raw in stream:
        sys.stderr.buffer.write(raw)
        sys.stderr.flush()
        line = raw.decode(errors="replace").rstrip()
        if line:
            tail.append(line)


def _outcome(frozen: optuna.trial.FrozenTrial, command: list[str], code: int, tail: list[str],
             metric: str, epochs: int) -> float:
    """The trial's value from what the script recorded, or TrialPruned, or ScriptFailed."""
    pruned = frozen.user_attrs.get(PRUNED_ATTR)
    if pruned:
        raise optuna.TrialPruned(str(pruned))
    program = " ".join(command)
    if code != 0:
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        raise ScriptFailed(_with_tail(f"`{program}` {how}", tail))
    value = frozen.user_attrs.get(FINAL_VALUE_ATTR)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not frozen.intermediate_values:
        raise ScriptFailed(f"`{program}` exited 0 without reporting `{metric}`: call "
                           f"trial.report(epoch, {{'{metric}': ...}}) after each epoch")
    last = max(frozen.intermediate_values)
    raise ScriptFailed(f"`{program}` exited 0 after reporting epoch {last} of {epochs} without a final "
                       f"value: report epoch {epochs} or call trial.finish()")


def _with_tail(head: str, tail: list[str]) -> str:
    """``head: line | line | line``, cut from the front of the tail to fit one fail_reason."""
    text = " | ".join(tail)
    room = _REASON_LIMIT - len(head) - 2
    if len(text) > room:
        text = "..." + text[len(text) - room + 3:]
    return f"{head}: {text}" if tail else head
