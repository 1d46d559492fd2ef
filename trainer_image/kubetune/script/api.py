"""The API a user's own training script calls: ``trial = kubetune.trial()``.

Run by ``ml-search`` (``search.command``) the trial is the one the runner handed
over through the environment (:mod:`kubetune.script.handover`): ``report`` writes
the search metric's running value for each epoch to the Optuna storage, skips the
epochs it already holds (a resumed trial), asks the study's pruner and raises
:class:`Pruned`; the trial's value is the running value at the last epoch
(``training.num_epochs``) or what :meth:`Trial.finish` gives. Reporting, pruning
and the skipping of stored epochs are the built-in trainer's own
(:class:`kubetune.search.objective.EpochReporter`).

Run alone (``python train.py --config config.yaml``) the trial has the config's
own values and reports nowhere.

Importing this module imports the standard library only: Optuna and the config
models load when :func:`trial` is called; torch, plotting and the Kubernetes
client never.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubetune.script import handover

if TYPE_CHECKING:
    import optuna

    from kubetune.config.schema import Config
    from kubetune.search.objective import EpochReporter

__all__ = ["Pruned", "ReportError", "Trial", "trial"]


class Pruned(SystemExit):
    """The pruner stopped the trial; raised by :meth:`Trial.report`.

    A ``SystemExit``, so an ``except Exception`` in a training loop lets it through:
    left uncaught, the script ends quietly (exit 0) and its runner records the trial
    as PRUNED.
    """

    def __init__(self, message: str) -> None:
        super().__init__(0)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ReportError(ValueError):
    """Metrics that lack the search's metric, or a value that is not a finite number."""


class _StoredTrial:
    """The Optuna trial behind a script run by ``ml-search``: report, prune, record the outcome."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial, reporter: EpochReporter) -> None:
        self.study, self.trial, self.reporter = study, trial, reporter

    def report(self, epoch: int, metrics: dict[str, float]) -> None:
        import optuna

        from kubetune.search.attributes import PRUNED_ATTR

        try:
            self.reporter(epoch, metrics)
        except optuna.TrialPruned as exc:
            self.trial.set_user_attr(PRUNED_ATTR, str(exc))
            print(f"kubetune: trial {self.trial.number} {exc}", file=sys.stderr, flush=True)
            raise Pruned(str(exc)) from None

    def finish(self, value: float) -> None:
        from kubetune.search.attributes import FINAL_VALUE_ATTR

        self.reporter.store_tie_break()
        self.trial.set_user_attr(FINAL_VALUE_ATTR, value)

    def last_epoch(self) -> int:
        return max(self.reporter.reported, default=0)


class Trial:
    """One training run of the user's script: its config, params, folders and reports."""

    def __init__(self, config: Config, *, params: Mapping[str, Any], number: int | None,
                 trial_dir: Path, stored: _StoredTrial | None = None) -> None:
        from kubetune.config.loader import config_to_dict

        search = config.search
        #: The resolved config (this trial's values applied), without its search section.
        self.config: dict[str, Any] = config_to_dict(config, include_search=False)
        #: The searched values, by dotted key (``{"optimizer.lr": 0.01}``); empty run alone.
        self.params: dict[str, Any] = dict(params)
        #: The Optuna trial number, or None run alone.
        self.number = number
        #: The trial's folder (TensorBoard logs go here): on Kubernetes, the results volume.
        self.dir = trial_dir
        #: Where to save what resuming needs; it outlives the process (and the pod).
        self.checkpoint_dir = handover.checkpoint_dir(trial_dir)
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        self.metric = search.metric if search else "val_acc"
        self.maximize = search.direction == "maximize" if search else True
        self.epochs = config.training.num_epochs
        self.value: float | None = None  # the running value: the best metric so far
        self.final: float | None = None
        self._stored = stored

    def resume_epoch(self) -> int:
        """The last epoch the storage holds for this trial (0 for a fresh one, or run alone).

        Save the checkpoint before reporting an epoch: then it is never behind this.
        """
        return self._stored.last_epoch() if self._stored else 0

    def report(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        """Report ``metrics`` of ``epoch`` (1-based); raises :class:`Pruned` when pruned.

        ``metrics`` must hold the search's metric (``search.metric``); a matching loss
        (``val_loss`` for ``val_acc``) breaks ties between trials at a pruning rung.
        Reporting the last epoch (``training.num_epochs``) records the trial's value.
        """
        values = self._numbers(metrics, f"trial.report(epoch={epoch})")
        value = values[self.metric]
        if self.value is None or (value > self.value if self.maximize else value < self.value):
            self.value = value
        if self._stored is not None:
            self._stored.report(int(epoch), values)
        if epoch >= self.epochs:
            self.finish()

    def finish(self, metrics: Mapping[str, Any] | None = None) -> float:
        """Record the trial's value: ``metrics[search.metric]``, else the running value
        (the best reported). Needed only when the script stops before its last epoch."""
        if metrics is not None:
            value = self._numbers(metrics, "trial.finish()")[self.metric]
        elif self.value is None:
            raise ReportError(f"trial.finish(): nothing reported yet; pass the final metrics, "
                              f"e.g. trial.finish({{'{self.metric}': ...}})")
        else:
            value = self.value
        self.final = value
        if self._stored is not None:
            self._stored.finish(value)
        return value

    def _numbers(self, metrics: Mapping[str, Any], where: str) -> dict[str, float]:
        if self.metric not in metrics:
            got = ", ".join(map(str, metrics)) or "nothing"
            raise ReportError(f"{where}: the metrics lack `{self.metric}` (search.metric), but got {got}")
        values: dict[str, float] = {}
        for name, raw in metrics.items():
            try:
                values[str(name)] = float(raw)
            except (TypeError, ValueError):
                raise ReportError(f"{where}: `{name}` must be a number, but got {raw!r}") from None
        if not math.isfinite(values[self.metric]):
            raise ReportError(f"{where}: `{self.metric}` must be a finite number, but got {values[self.metric]}")
        return values


def trial(config: str | Path | None = None) -> Trial:
    """This process's trial.

    Run by ``ml-search`` it is the trial handed over through the environment. Run alone
    it trains the config's own values (``config``, else ``--config PATH`` on the command
    line, else ``$KUBETUNE_CONFIG``) and reports nowhere. A missing or bad config ends
    the script with a one-line error and exit code 2.
    """
    from kubetune.errors import KubetuneError

    try:
        if os.environ.get(handover.STUDY_ENV):
            return _search_trial()
        return _standalone_trial(config)
    except KubetuneError as exc:
        print(f"kubetune.trial(): error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def _config_path(config: str | Path | None, argv: Sequence[str]) -> str:
    from kubetune.errors import UsageError

    if config is not None:
        return str(config)
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.partition("=")[2]
    if path := os.environ.get(handover.CONFIG_ENV):
        return path
    raise UsageError(f"no config: pass --config PATH (or set ${handover.CONFIG_ENV})")


def _standalone_trial(config: str | Path | None) -> Trial:
    from kubetune.config.loader import resolve_config

    cfg = resolve_config(_config_path(config, sys.argv[1:]))
    folder = Path(cfg.logging.output_dir) / (cfg.logging.experiment_name or "script") / \
        (cfg.logging.run_name or "standalone")
    return Trial(cfg, params={}, number=None, trial_dir=folder)


def _search_trial() -> Trial:
    import statistics

    import optuna

    from kubetune.config.loader import resolve_config
    from kubetune.errors import UsageError
    from kubetune.search.checks import require_search
    from kubetune.search.objective import EpochReporter
    from kubetune.search.optuna_internals import stored_trial, trial_id_by_number
    from kubetune.search.study import load_search_study

    env = os.environ
    names = (handover.STORAGE_ENV, handover.STUDY_ENV, handover.TRIAL_NUMBER_ENV,
             handover.CONFIG_ENV, handover.TRIAL_DIR_ENV)
    if missing := [name for name in names if not env.get(name)]:
        raise UsageError(f"${handover.STUDY_ENV} is set but {', '.join('$' + m for m in missing)} not")
    if not env[handover.TRIAL_NUMBER_ENV].isdigit():
        raise UsageError(f"${handover.TRIAL_NUMBER_ENV} must be a trial number, "
                         f"but got {env[handover.TRIAL_NUMBER_ENV]!r}")
    config = resolve_config(env[handover.CONFIG_ENV])
    search = require_search(config)
    study_name, number = env[handover.STUDY_ENV], int(env[handover.TRIAL_NUMBER_ENV])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = load_search_study(config, env[handover.STORAGE_ENV], study_name, heartbeat=False)
    try:
        optuna_trial = optuna.trial.Trial(study, trial_id_by_number(study, number))
    except KeyError:
        raise UsageError(f"study `{study_name}` has no trial {number}") from None
    frozen = stored_trial(study, optuna_trial)
    if frozen.state.is_finished():
        raise UsageError(f"trial {number} of {study_name} is already {frozen.state.name}")
    reporter = EpochReporter(optuna_trial, search.metric, search.direction == "maximize", statistics.fmean,
                             [], 0, 1, config.training.num_epochs, frozen.intermediate_values)
    return Trial(config, params=frozen.params, number=number, trial_dir=Path(env[handover.TRIAL_DIR_ENV]),
                 stored=_StoredTrial(study, optuna_trial, reporter))
