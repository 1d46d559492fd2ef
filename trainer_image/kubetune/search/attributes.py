"""Every attribute name kubetune writes on Optuna trials and studies, and who uses it.

Trial pods, ``ml-search`` workers and the operator share no state but the storage;
these names are the contract between them. Torch-free: the operator imports it.

The rule for names:

- **Short names** for what a user reads to understand a trial: shown by
  optuna-dashboard, trials.csv or the README (``fail_reason``, ``trial_steps``,
  ``lr_first_drop``, ``tie_break``, ``source``).
- **``kubetune.`` names** for bookkeeping: what the processes coordinate through
  (who owns or runs a trial, its Job, retries, the study's budget).
- **Optuna's own names** (``completed_rung_<k>``, ``failed_trial``,
  ``retry_history``, ``fixed_params``) are Optuna's to choose: kubetune reads and
  writes them as Optuna does, so its retries and Optuna's look alike.
  ``tests/search/test_optuna_internals.py`` checks Optuna still uses them.

A value cannot be deleted from the storage: readers treat a falsy value as absent.
"""

from __future__ import annotations

# Trial user attributes a user reads ---------------------------------------------------

# Why the trial failed. Written by the trial (its exception), the operator (the Job's
# reason: OOMKilled, StudyJobDeleted, ...) or a Ctrl-C ("interrupted"); shown in
# trials.csv, the workers' progress lines and the operator's events.
FAIL_REASON_ATTR = "fail_reason"
# The steps a trial reports (epochs x folds). Written by the objective; read by
# kubetune's pruners (first rung, no verdict at the last step) and ``changed_length``.
TRIAL_STEPS_ATTR = "trial_steps"
# The epoch the trial's learning rate first drops. Written by the objective; read by
# the warm-up-fraction pruner, which may end its warm-up there.
LR_DROP_ATTR = "lr_first_drop"
# The lowest loss of the trial's running fold so far. Written by the objective (when it
# improves); read by successive halving to rank trials tied at a rung.
TIE_BREAK_ATTR = "tie_break"
# Where a queued trial's point came from ("enqueued": the config's own point or
# ``search.enqueue_trials``). Written by ``ml-search`` when it creates a study.
SOURCE_ATTR = "source"
ENQUEUED = "enqueued"
# What the trial held and for how long (:mod:`kubetune.search.usage`): wall, GPU and CPU
# seconds over its attempts, and its device. Written by the trial process just before
# the trial ends; shown in trials.csv, the report and the ``ml-search`` summary.
USAGE_ATTR = "usage"

# Trial user attributes for bookkeeping -------------------------------------------------

# Where a SIGTERM stopped the trial ("terminated (SIGTERM) after epoch 4"); "" once a
# new pod trains it again. Written by the trial pod; read by the operator, which
# resumes the trial in a new Job or fails it.
INTERRUPTED_ATTR = "kubetune.interrupted"
# What a trial run by the user's own script (``search.command``) ended with, written by
# the script through :mod:`kubetune.script`: its final value (a float), or why the pruner
# stopped it. Read by whoever runs the script, which tells Optuna the outcome.
FINAL_VALUE_ATTR = "kubetune.final_value"
PRUNED_ATTR = "kubetune.pruned"
# "<host>:<pid>" of the ``ml-search`` worker that runs the trial (it sends heartbeats).
# Read by the ledger: such trials are the workers' to wait for.
WORKER_ATTR = "kubetune.worker"
# "<namespace>/<name>" of the StudyJob that asked the trial. Written by the operator
# before the trial exists (on the queued point); read by the operator to tell its
# trials from others'. The study carries it too (see below).
OWNER_ATTR = "kubetune.owner"
# The name of the trial's current Job, written just before the Job is created; a
# RUNNING trial with it and no Job lost its Job.
JOB_ATTR = "kubetune.job"
# Set on a trial the operator asks ahead, while its StudyJob's slots are full, so that
# the next free slot only creates a Job: the trial is RUNNING, counts towards
# ``n_trials``, and has no JOB_ATTR until its Job is made. Once the Job exists, the time
# it was made (Unix seconds), from which the trial's deadline counts. Written and read
# by the operator.
AHEAD_ATTR = "kubetune.ahead"
# How many times the trial was disrupted and resumed in a new Job (the ``-r<k>`` of its
# Job). Written by the operator before the new Job exists.
PREEMPTED_ATTR = "kubetune.preempted"
# ``[job, node]``: the trial's Job whose pod the operator saw stuck on a node that stopped
# answering (NotReady, unreachable). Written by the operator; when that Job ends
# disrupted, the trial resumes as NodeLost.
NODE_LOST_ATTR = "kubetune.node_lost"
# ``{job: count}``: how many times Kueue evicted (suspended) each of the trial's Jobs after
# admitting it; the trial goes on in the same Job once Kueue admits it again. Written by
# the operator.
KUEUE_EVICTIONS_ATTR = "kubetune.kueue_evictions"

# Study user attributes -----------------------------------------------------------------

# The study's total number of trials (``n_trials``, across all workers). Written by
# ``ml-search`` (new study, ``--resume --n-trials``) and the operator (the spec's);
# read by every ``ml-search`` worker's ledger.
TARGET_ATTR = "kubetune.n_trials"
# How many processes have sampled for the study; each seeds its sampler by it.
# Counted up by ``ml-search`` workers (under the study lock) and by the operator each
# time it opens the study.
SAMPLER_SESSIONS_ATTR = "kubetune.sampler_sessions"
# ``kubetune.usage.<trial number>``: what the trial's pods held, as the API says (the
# record of USAGE_ATTR). Written by the operator when a pod ends (a finished trial takes
# no user attributes); read by the operator (``status.usage``) and trials.csv.
USAGE_STUDY_PREFIX = "kubetune.usage."
# OWNER_ATTR on a study: the StudyJob that holds it ("" or absent: free). Written by
# the operator when it claims or releases the study.

# Trial system attributes ---------------------------------------------------------------

# Successive halving's value at rung k is Optuna's ``completed_rung_<k>``; next to it
# kubetune records the trial's tie-breaking loss at that rung. Both are per attempt:
# a retry does not copy them.
COMPLETED_RUNG_ATTR = "completed_rung_{}"  # Optuna's SuccessiveHalvingPruner
TIE_BREAK_RUNG_ATTR = "kubetune.tie_break_rung_{}"
# Under ``search.objectives``: the trial's objective values at a rung of the
# non-dominated halving pruner (``{"values": [...], "feasible": bool}``), and after
# every epoch (``[...]``, as Optuna's intermediate values for one objective).
PARETO_RUNG_ATTR = "kubetune.pareto_rung_{}"
EPOCH_VALUES_ATTR = "kubetune.values_{}"
RUNG_ATTR_PREFIXES = tuple(key.format("") for key in (COMPLETED_RUNG_ATTR, TIE_BREAK_RUNG_ATTR, PARETO_RUNG_ATTR))
# Optuna's marks on a retry (RetryHeartbeatStaleTrialCallback's): the trial it re-runs,
# and every trial before it in the chain, oldest first. The ledger counts by them.
FAILED_TRIAL_ATTR = "failed_trial"
RETRY_HISTORY_ATTR = "retry_history"
# Optuna's record of a queued trial's params (``study.enqueue_trial``).
FIXED_PARAMS_ATTR = "fixed_params"
# A one-off mark on every trial a process creates, so a creation whose connection
# dropped is looked for before it is repeated. Written and read by
# ``kubetune.search.outage`` only.
ASK_MARK_ATTR = "kubetune.ask_mark"


def completed_rung(rung: int) -> str:
    """Optuna's system attribute for a trial's value at successive halving's ``rung``."""
    return COMPLETED_RUNG_ATTR.format(rung)


def tie_break_rung(rung: int) -> str:
    """kubetune's system attribute for a trial's tie-breaking loss at ``rung``."""
    return TIE_BREAK_RUNG_ATTR.format(rung)


def pareto_rung(rung: int) -> str:
    """kubetune's system attribute for a trial's objective values at the Pareto pruner's ``rung``."""
    return PARETO_RUNG_ATTR.format(rung)


def epoch_values(step: int) -> str:
    """kubetune's system attribute for a multi-objective trial's values after ``step``."""
    return EPOCH_VALUES_ATTR.format(step)


def last_epoch_values_step(system_attrs: dict[str, object]) -> int | None:
    """The last step a multi-objective trial recorded values for; None before its first."""
    prefix = EPOCH_VALUES_ATTR.format("")
    steps = [int(k[len(prefix):]) for k in system_attrs if k.startswith(prefix)]
    return max(steps, default=None)
