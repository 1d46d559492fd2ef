"""Run one trial the storage already holds: what a Kubernetes trial pod does.

``ml-train --config C --trial STUDY:NUMBER`` (storage URL from ``--storage`` or
``$KUBETUNE_STORAGE_URL``). The operator created the trial with
``study.ask(distributions)``, so it is RUNNING with its params set; this loads
it, trains with those params through the same ``TrialTrainer`` as ml-search,
reports every epoch, obeys the pruner and tells the result. Re-running a
finished trial does nothing, so a restarted pod is harmless; re-running a
RUNNING trial whose folder has its ``last.pt`` continues from that epoch.

SIGTERM (eviction, preemption, node drain, Job deletion) while the trial trains
leaves it RUNNING with the user attribute ``kubetune.interrupted`` and exits 143:
the operator then starts a new pod for the same trial, or fails it; that pod sets
the attribute to "" once it trains. A SIGTERM after training ended does not stop
the outcome being told. Ctrl-C and trainer errors end the trial as FAIL with a
``fail_reason``.

No heartbeats here: the operator watches the trial's Job instead and fails
(and possibly retries) the trial when the Job dies without telling.
"""

from __future__ import annotations

import contextlib
import logging
import sys

import optuna
from optuna.trial import TrialState

from kubetune.config.schema import Config
from kubetune.errors import UsageError
from kubetune.search.attributes import INTERRUPTED_ATTR
from kubetune.search.checks import check_search
from kubetune.search.interruption import TERMINATED_EXIT, SigtermGuard, Terminated
from kubetune.search.ledger import record_fail_reason
from kubetune.search.objectives import metric_names
from kubetune.search.optuna_internals import storage_of, trial_id_by_number
from kubetune.search.outage import Outage
from kubetune.search.pareto import format_values
from kubetune.search.storage import mask_url, resolve_storage_url
from kubetune.search.study import load_search_study

log = logging.getLogger(__name__)

TERMINATED = "terminated (SIGTERM)"  # how INTERRUPTED_ATTR starts


def parse_trial_spec(spec: str) -> tuple[str, int]:
    """``"STUDY:NUMBER"`` -> (study, number)."""
    study, sep, number = spec.rpartition(":")
    if not sep or not study or not number.isdigit():
        raise UsageError(f"--trial must be STUDY:NUMBER (e.g. digits_optimization:3), but got {spec!r}")
    return study, int(number)


def run_stored_trial(config: Config, spec: str, storage: str | None) -> int:
    """Train trial ``spec`` of its study; 0 for COMPLETE or PRUNED, 1 for FAIL, 143 for SIGTERM."""
    from kubetune.search.objective import fail_reason, trial_runner

    search = check_search(config)
    study_name, number = parse_trial_spec(spec)
    url = resolve_storage_url(storage, search)
    # The operator asked this trial while the storage answered: a pod that starts during
    # an outage waits it out (up to $KUBETUNE_STORAGE_OUTAGE) instead of failing the trial.
    study = Outage(mask_url(url)).run(lambda: load_search_study(config, url, study_name, heartbeat=False))
    stored = storage_of(study)
    try:
        trial_id = trial_id_by_number(study, number)
    except KeyError:
        raise UsageError(f"study `{study_name}` in {mask_url(url)} has no trial {number}") from None
    frozen = stored.get_trial(trial_id)
    if frozen.state.is_finished():
        print(f"trial {number} of {study_name} is already {frozen.state.name}: nothing to do")
        return 0
    if frozen.state == TrialState.WAITING and not stored.set_trial_state_values(trial_id, TrialState.RUNNING):
        raise UsageError(f"trial {number} of {study_name} was claimed by another worker")

    trial = optuna.trial.Trial(study, trial_id)
    trainer = trial_runner(config, study_name, storage=url)
    state, value = TrialState.FAIL, None
    with SigtermGuard() as guard:
        try:
            try:
                trainer.prepare()
                value = trainer.objective(trial)
            finally:
                guard.disarm()  # training is over: from here on the outcome gets told
            state = TrialState.COMPLETE
        except optuna.TrialPruned as exc:
            state = TrialState.PRUNED
            print(f"trial {number}: {exc}", file=sys.stderr)
        except Terminated:
            where = trainer.stopped_at(trial)
            # Stopped again before taking over the last pod's epochs: it stopped where that did.
            reason = f"{TERMINATED} after {where}" if where else \
                frozen.user_attrs.get(INTERRUPTED_ATTR) or f"{TERMINATED} before its first epoch"
            with contextlib.suppress(Exception):
                trial.set_user_attr(INTERRUPTED_ATTR, reason)
            print(f"trial {number} of {study_name}: {reason}; left RUNNING to resume", file=sys.stderr)
            return TERMINATED_EXIT
        except (Exception, KeyboardInterrupt) as exc:
            with contextlib.suppress(Exception):
                record_fail_reason(study, trial, fail_reason(exc))
            log.debug("trial %d failed", number, exc_info=True)
            print(f"trial {number} failed: {fail_reason(exc)}", file=sys.stderr)
        return _tell(study, trial, metric_names(search), state, value)


def _tell(study: optuna.Study, trial: optuna.Trial, metrics: list[str], state: TrialState,
          value: float | list[float] | None) -> int:
    """Record the outcome; 0 for COMPLETE or PRUNED, 1 for FAIL or when it cannot be recorded."""
    number = trial.number
    try:
        if state == TrialState.COMPLETE:
            study.tell(trial, value)
        else:
            study.tell(trial, state=state)
    except (ValueError, optuna.exceptions.UpdateFinishedTrialError) as exc:
        print(f"trial {number}: could not record {state.name}: {exc}", file=sys.stderr)
        return 1
    if state == TrialState.COMPLETE:
        shown = f"{metrics[0]}={value:.4f}" if isinstance(value, float) else format_values(metrics, value or [])
        print(f"trial {number} of {study.study_name} COMPLETE: {shown}")
    return 0 if state in (TrialState.COMPLETE, TrialState.PRUNED) else 1
