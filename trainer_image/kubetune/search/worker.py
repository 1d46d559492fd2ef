"""One ml-search worker: ask for trials until the study's total is reached.

Each trial runs inside ``study.optimize(n_trials=1)``, because Optuna's RDB
heartbeats only beat inside ``optimize``: a worker that is SIGKILLed stops
beating, and the next worker to look fails its trial and queues a retry with the
same params (``RetryHeartbeatStaleTrialCallback``, bounded by ``MAX_RETRIES``).
A retry continues from the ``last.pt`` of the trial it retries
(:mod:`kubetune.search.resume`).
Counting, asking and sampling happen under the study lock (see ``locking``), so
``n_trials`` is exact however many workers share the storage.

Ctrl-C is noted, not raised (:mod:`kubetune.search.interruption`): the running
trial stops at its next batch, ends as FAIL (``fail_reason: interrupted``) and is
queued again, so ``--resume`` re-runs that point. A worker stops too when the last
few trials all failed with the same ``OSError`` (a full disk), instead of spending
the budget on it.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import sys
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from kubetune.config.schema import Config
from kubetune.errors import KubetuneError
from kubetune.search.attributes import (
    FAIL_REASON_ATTR,
    TRIAL_STEPS_ATTR,
    WORKER_ATTR,
    last_epoch_values_step,
)
from kubetune.search.interruption import INTERRUPTED_EXIT, check_stop, watch_interrupts
from kubetune.search.ledger import budget, enqueue_retry, stored_target
from kubetune.search.locking import StudyLock
from kubetune.search.objectives import goal_trial
from kubetune.search.optuna_internals import reuse_trials_read, stored_trial
from kubetune.search.outage import unreachable_in
from kubetune.search.pareto import values_text
from kubetune.search.results import best_trial
from kubetune.search.storage import heartbeat_settings
from kubetune.search.study import load_search_study, take_sampler_session

if TYPE_CHECKING:
    from kubetune.search.objective import TrialTrainer

log = logging.getLogger(__name__)

STOPPED_EXIT = 3  # a worker that stopped on a repeated OSError
FIRST_PAUSE = 0.5  # seconds a worker with nothing to start first waits for others' trials


@dataclass
class WorkerResult:
    trials: int = 0
    interrupted: bool = False
    states: dict[str, int] = field(default_factory=dict)
    stopped: str | None = None  # the OSError that failed the last trials, if that stopped it
    goal: int | None = None  # the trial that reached search.goal, if that stopped it


def pruned_at(trial: FrozenTrial, folds: int = 1) -> str:
    """``after epoch 3/10``, or ``after epoch 2/4 of fold 3/5`` under cross-validation
    (a trial's steps are its epochs, fold after fold)."""
    step = trial.last_step if trial.last_step is not None else last_epoch_values_step(trial.system_attrs)
    if step is None:
        return "before its first epoch"
    total = trial.user_attrs.get(TRIAL_STEPS_ATTR)
    epochs = total // folds if isinstance(total, int) and total >= folds else None
    if folds > 1 and epochs:
        fold, epoch = divmod(step - 1, epochs)
        return f"after epoch {epoch + 1}/{epochs} of fold {fold + 1}/{folds}"
    return f"after epoch {step}" + (f"/{total}" if isinstance(total, int) else "")


def describe_trial(study: optuna.Study, trial: FrozenTrial, metric: str, folds: int = 1,
                   target: int | None = None) -> str:
    """``trial 4 COMPLETE val_acc=0.9611 {...} | 5/20 done | best val_acc=0.97 (trial 2)``;
    ``target``: the study's total (default: read from the storage)."""
    parts = [f"trial {trial.number} {trial.state.name}"]
    multi = len(study.directions) > 1
    if trial.state == TrialState.COMPLETE:
        parts.append(values_text(study, trial) if multi else f"{metric}={trial.value:.4f}")
    elif trial.state == TrialState.PRUNED:
        parts.append(pruned_at(trial, folds))
    elif trial.state == TrialState.FAIL:
        parts.append(f"({trial.user_attrs.get(FAIL_REASON_ATTR, 'no reason recorded')})")
    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in trial.params.items())
    line = " ".join(parts) + f" [{params}]"
    state = budget(study, target)
    line += f" | {state.finished}/{state.target} done"
    if multi:
        line += f" | Pareto front: {len(study.best_trials)} trials"
    elif (best := best_trial(study)) is not None:
        line += f" | best {metric}={best.value:.4f} (trial {best.number})"
    return line


def run_worker(config: Config, url: str, study_name: str, *, quiet_epochs: bool = True,
               progress: bool = True, trainer: TrialTrainer | None = None) -> WorkerResult:
    """Run trials of ``study_name`` until its total is reached; return what this worker did.

    ``trainer`` (a prepared ``TrialTrainer``) saves loading the data a second time.
    """
    from kubetune.search.objective import INTERRUPTED, trial_runner

    search = config.search
    assert search is not None
    study = load_search_study(config, url, study_name)
    if trainer is None:
        trainer = trial_runner(config, study_name, quiet_epochs=quiet_epochs, storage=url)
        trainer.prepare()
    # What lives as long as the worker (modules, torch, the data) is left out of the
    # collection after every trial, which would otherwise walk all of it each time;
    # the set-up's garbage (the model prepare() built) is collected first, not kept.
    gc.collect()
    gc.freeze()
    lock = StudyLock(url, study_name)
    with lock:
        take_sampler_session(study, search)
    result = WorkerResult()
    poll = heartbeat_settings()[0]
    folds = search.cross_validation.folds

    trainer.trial_attrs[WORKER_ATTR] = f"{socket.gethostname()}:{os.getpid()}"
    trainer.told_after = True  # study.optimize tells every trial however its objective ends
    target = stored_target(study) or 0  # re-read before stopping: only a resume changes it, upwards

    told: list[optuna.Trial] = []  # trials this worker ran, reported once a count under the lock has read them

    def after_sampling(_: optuna.Trial) -> None:
        lock.release()
        report_told()

    def objective(trial: optuna.Trial) -> float | list[float]:
        try:
            value = trainer.objective(trial, after_sampling=after_sampling)
        except KeyboardInterrupt:  # the interrupted trial gets the resume line, not its own
            frozen = stored_trial(study, trial)
            if frozen.user_attrs.get(FAIL_REASON_ATTR) == INTERRUPTED and set(frozen.params) == set(trainer.dists):
                enqueue_retry(study, frozen, frozen.params, trainer.dists)
            raise
        except BaseException:
            told.append(trial)
            raise
        told.append(trial)
        return value

    def report_told() -> None:
        """Count and print the trials this worker ran since the last report. The count made
        since (under the lock) read them, so Optuna's cache holds them: no read here, where
        a callback of ``optimize`` would read each trial as it ends."""
        while told:
            trial = stored_trial(study, told.pop(0))
            if not trial.state.is_finished():
                continue
            result.trials += 1
            result.states[trial.state.name] = result.states.get(trial.state.name, 0) + 1
            if progress:
                print(describe_trial(study, trial, search.metric, folds, target), file=sys.stderr, flush=True)

    watch_interrupts()
    pause = FIRST_PAUSE
    try:
        while True:
            check_stop()
            lock.acquire()
            try:
                with warnings.catch_warnings():  # the storage looks once a heartbeat interval
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    optuna.storages.fail_stale_trials(study)
                state = budget(study, target)
                if state.done and (stored := stored_target(study) or 0) != target:
                    target = stored
                    state = replace(state, target=target)
                if state.repeated_failure:
                    result.stopped = state.repeated_failure
                    break
                if (reached := goal_trial(study, search)) is not None:
                    result.goal = reached.number
                    break
                if state.waiting or state.has_room:
                    check_stop()
                    reuse_trials_read(study)  # ask's look for WAITING trials: the count's read
                    try:
                        study.optimize(objective, n_trials=1, catch=(Exception,))
                    except Exception as exc:
                        if (unreachable := unreachable_in(exc)) is not None:
                            raise unreachable from None  # one line, not Optuna's aftermath
                        raise
                    trainer.free_memory()
                    pause = FIRST_PAUSE
                    continue
            finally:
                lock.release()
            report_told()
            if state.running_workers:
                # Trials of other workers are still running; if one of them dies, its
                # retry lands here. Wait rather than leave the study half-finished: briefly
                # at first (short trials end soon), then a heartbeat interval at a time.
                _wait(pause)
                pause = min(2 * pause, poll)
                continue
            break
        report_told()
    except KeyboardInterrupt:
        result.interrupted = True
        report_told()
    finally:
        lock.close()
    return result


def _wait(seconds: float) -> None:
    """Sleep, looking for Ctrl-C several times a second."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        check_stop()
        time.sleep(min(left, 0.2))


def worker_process(config_data: dict[str, Any], url: str, study_name: str, quiet_epochs: bool,
                   progress: bool, threads: int, log_level: int, ready: Any = None) -> None:
    """Entry of one ``--n-jobs`` worker process (spawned: no state shared with the parent).

    ``ready`` (an Event) is set once Ctrl-C is watched for: the parent forwards exactly
    one SIGINT after that, and the worker starts with SIGINT ignored until then.
    """
    os.setpgrp()  # Ctrl-C reaches the parent, which forwards exactly one SIGINT here
    watch_interrupts()
    if ready is not None:
        ready.set()
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING if log_level <= logging.DEBUG else optuna.logging.ERROR)
    from kubetune.config.loader import validate_config

    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover
        pass
    config = validate_config(config_data)
    try:
        outcome = run_worker(config, url, study_name, quiet_epochs=quiet_epochs, progress=progress)
    except KeyboardInterrupt:  # before the first trial: nothing to hand back
        sys.exit(INTERRUPTED_EXIT)
    except KubetuneError as exc:
        print(f"ml-search worker {os.getpid()}: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    if outcome.interrupted:
        sys.exit(INTERRUPTED_EXIT)
    # The parent reads why from the study and says it once for every worker.
    sys.exit(STOPPED_EXIT if outcome.stopped else 0)
