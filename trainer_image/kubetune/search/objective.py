"""Train one trial: the single code path behind ``ml-search`` and ``ml-train --trial``.

A trial's params are applied as dotted overrides to a copy of the config (plus the
trial-only shortcuts ``search.trial_epochs`` and ``search.trial_train_fraction``),
the model trains, and after every epoch the trial reports its *running value*:
the value it would return if it stopped now. Without cross-validation that is
the best ``search.metric`` so far; with it, the folds run one after another and
the value at step ``fold * epochs + epoch`` aggregates (mean or median) the
finished folds' best values and the current fold's best so far. Each step means
the same thing in every trial, so the pruner compares like with like, and a
trial can be pruned in any fold.

Torch is imported only when a trial trains.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial

from kubetune.config.loader import with_overrides
from kubetune.config.schema import Config
from kubetune.errors import KubetuneError
from kubetune.search.attributes import (
    INTERRUPTED_ATTR,
    LR_DROP_ATTR,
    TIE_BREAK_ATTR,
    TRIAL_STEPS_ATTR,
    last_epoch_values_step,
)
from kubetune.search.checks import overrides_for_trial, require_search
from kubetune.search.interruption import Terminated, check_stop
from kubetune.search.ledger import record_fail_reason
from kubetune.search.objectives import checkpoint_metric
from kubetune.search.objectives_reporter import ObjectivesReporter
from kubetune.search.optuna_internals import set_trial_user_attrs, trial_view, writes_together
from kubetune.search.pruners import reads_tie_break, tie_break_metric
from kubetune.search.results import trial_run_dir
from kubetune.search.space import distributions, value_range
from kubetune.search.usage import record_trial

if TYPE_CHECKING:
    from kubetune.data.datasets import DataSplits

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted"
_CACHED_DATASETS = 2  # loaded datasets a worker keeps (more only when data settings are searched)


def suggest_params(trial: optuna.Trial, dists: Mapping[str, BaseDistribution]) -> dict[str, Any]:
    """Ask ``trial`` for every param; params the storage already holds come back as they are."""
    params: dict[str, Any] = {}
    for name, dist in dists.items():
        if isinstance(dist, CategoricalDistribution):
            params[name] = trial.suggest_categorical(name, list(dist.choices))
        elif isinstance(dist, IntDistribution):
            params[name] = trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
        elif isinstance(dist, FloatDistribution):
            params[name] = trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
        else:  # pragma: no cover - space.py builds only these three
            raise TypeError(f"unsupported distribution {dist!r}")
    return params


def fail_reason(exc: BaseException) -> str:
    """One line for the trial's ``fail_reason`` user attribute."""
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if name == "OutOfMemoryError" or "out of memory" in text.lower():
        prefix = "CUDA out of memory"
    elif name == "TrainingDiverged":
        prefix = "NaN loss"
    else:
        prefix = name
    reason = f"{prefix}: {text}" if text else prefix
    return reason if len(reason) <= 500 else reason[:497] + "..."


class EpochReporter:
    """The epoch callback: report the running value, then ask the pruner.

    For an accuracy metric it also keeps the lowest matching loss of the running fold
    so far in the ``tie_break`` user attribute, before the pruner is asked: successive
    halving ranks trials tied on accuracy by it (``search/pruners.py``).
    """

    def __init__(self, trial: optuna.Trial, metric: str, maximize: bool, aggregate: Callable[[list[float]], float],
                 done_folds: list[float], fold: int, folds: int, epochs: int,
                 reported: Iterable[int] = ()) -> None:
        self.trial, self.metric, self.maximize, self.aggregate = trial, metric, maximize, aggregate
        self.done_folds, self.fold, self.folds, self.epochs = done_folds, fold, folds, epochs
        self.best: float | None = None
        self.tie_metric = tie_break_metric(metric)
        self.tie_best: float | None = None  # the lowest tie_metric of this fold so far
        self.tie_stored = True  # tie_best is what the storage holds
        # Only successive halving reads the tie-break, at its rungs: other pruners get it
        # once, at the end, instead of a write per improving epoch.
        self.tie_for_pruner = reads_tie_break(trial.study.pruner)
        self.where: str | None = None  # "epoch 4" (of fold 2): the last epoch seen
        # Steps the trial holds already (from earlier pods), kept, not reported again: a pod
        # killed after reporting an epoch whose checkpoint had not landed trains it again.
        self.reported = set(reported)

    def _update(self, epoch: int, metrics: Mapping[str, float]) -> tuple[float, int]:
        value = float(metrics[self.metric])
        if self.best is None or (value > self.best if self.maximize else value < self.best):
            self.best = value
        tie = metrics.get(self.tie_metric) if self.tie_metric else None
        if tie is not None and math.isfinite(tie) and (self.tie_best is None or tie < self.tie_best):
            self.tie_best, self.tie_stored = float(tie), False
        self.where = f"epoch {epoch}" + (f" of fold {self.fold + 1}" if self.folds > 1 else "")
        return self.aggregate([*self.done_folds, self.best]), self.fold * self.epochs + epoch

    def unstored_tie_break(self) -> dict[str, float]:
        """The fold's lowest tie-break loss as the attribute to write, if it changed since the
        last write (it then counts as written); else nothing."""
        if self.tie_stored or self.tie_best is None:
            return {}
        self.tie_stored = True
        return {TIE_BREAK_ATTR: self.tie_best}

    def store_tie_break(self) -> None:
        """Write the fold's lowest tie-break loss, if it changed since the last write."""
        for key, value in self.unstored_tie_break().items():
            self.trial.set_user_attr(key, value)

    def _prune(self, running: float) -> None:
        if self.tie_for_pruner:
            self.store_tie_break()  # before the pruner judges the step
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at {self.where} with {self.metric}={running:.4f}")

    def __call__(self, epoch: int, metrics: dict[str, float]) -> None:
        running, step = self._update(epoch, metrics)
        self._report(running, step)
        self._prune(running)

    def _report(self, value: float, step: int) -> None:
        if step not in self.reported:
            self.trial.report(value, step)
            self.reported.add(step)

    def catch_up(self, history: list[dict[str, float]], values: Mapping[int, float]) -> None:
        """Take over a resumed run's epochs: report the steps the trial lacks (``values``
        where the source trial has them, else the running value), asking the pruner
        after each as a live run does (successive halving judges a rung at its own step).

        The pruner is asked at the end even when no step was missing: a pod stopped
        between ``report`` and telling PRUNED must end the trial now, not after another epoch.
        """
        running = None
        for entry in history:
            running, step = self._update(int(entry["epoch"]), entry)
            if step not in self.reported:
                value = values.get(step, running)
                self._report(value, step)
                self._prune(value)
        if running is not None:
            self._prune(running)


def trial_runner(config: Config, study_name: str, *, quiet_epochs: bool = False,
                 storage: str | None = None) -> TrialTrainer:
    """What trains the study's trials: the user's script (``search.command``) or kubetune's trainer."""
    search = require_search(config)
    if search.command is not None:
        from kubetune.script.runner import ScriptTrials

        return ScriptTrials(config, study_name, quiet_epochs=quiet_epochs, storage=storage)
    return TrialTrainer(config, study_name, quiet_epochs=quiet_epochs)


class TrialTrainer:
    """Trains trials of one study; data is loaded once per process and reused."""

    def __init__(self, config: Config, study_name: str, *, quiet_epochs: bool = False) -> None:
        self.config = config
        self.search = require_search(config)
        self.study_name = study_name
        self.quiet_epochs = quiet_epochs
        self.dists = distributions(self.search.search_space)
        self._base = config.model_copy(update={"search": None})
        self._data: dict[tuple[str, int], DataSplits] = {}
        self._folds: dict[tuple[str, int], list[DataSplits]] = {}
        self.reporter: EpochReporter | ObjectivesReporter | None = None  # the running trial's
        self.ending_attrs: dict[str, Any] = {}  # the running trial's last attributes, written with its usage
        # User attributes every trial gets, written with the trial's own in one transaction.
        self.trial_attrs: dict[str, Any] = {}
        # Every trial is told in this process right after objective() (ml-search's workers):
        # the trial's last attributes are written with its outcome, one transaction for both.
        self.told_after = False

    def free_memory(self) -> None:
        """Free the accelerator memory of the trial just told (:func:`free_accelerator_memory`);
        ml-search's worker calls it between trials, once Optuna has let go of the trial."""
        with contextlib.suppress(KubetuneError):  # a device gone meanwhile: the next trial says it
            free_accelerator_memory(self._base.training.device)

    def stopped_at(self, trial: optuna.Trial) -> str | None:
        """Where the running trial stopped training ("epoch 4"), None before its first epoch."""
        return self.reporter.where if self.reporter else None

    def trial_config(self, params: Mapping[str, Any]) -> Config:
        """The config one trial trains: params and the trial-only shortcuts applied."""
        return with_overrides(self._base, overrides_for_trial(self.search, self._base, params))

    def prepare(self) -> None:
        """Meet what a trial with the config's own values meets first, before any trial runs:
        its data (DataError), its device and its model (ConfigError: no GPU for
        ``training.device: cuda``, pretrained weights missing from the cache)."""
        from kubetune.data.sizes import check_data_sizes
        from kubetune.models import build_model
        from kubetune.search.checks import config_point
        from kubetune.training.precision import resolve_device

        space = self.search.search_space  # the ends of searched data ranges are checked too
        searched = {field: value_range(space[f"data.{field}"])[end]
                    for field, end in (("train_fraction", 0), ("val_split", 1)) if f"data.{field}" in space}
        check_data_sizes(self._base.data, self.search.trial_train_fraction, searched)  # names the field to raise
        cfg = self.trial_config(config_point(self.config))
        resolve_device(cfg.training.device)
        splits = self._splits(cfg)
        if self.search.cross_validation.enabled:
            self._fold_splits(cfg)
        build_model(cfg.model, splits.num_classes, splits.channels, cfg.data.image_size)

    def _splits(self, cfg: Config) -> DataSplits:
        from kubetune.data.datasets import load_splits

        key = (cfg.data.model_dump_json(), cfg.training.seed)
        if key not in self._data:
            if len(self._data) >= _CACHED_DATASETS:  # a searched data setting: keep memory bounded
                self._data.pop(next(iter(self._data)))
                self._folds.clear()
            self._data[key] = load_splits(cfg.data, cfg.training.seed)
        return self._data[key]

    def _fold_splits(self, cfg: Config) -> list[DataSplits]:
        from kubetune.data.datasets import DataSplits, stratified_folds

        key = (cfg.data.model_dump_json(), cfg.training.seed)
        if key not in self._folds:
            splits = self._splits(cfg)
            train = splits.train
            folds = stratified_folds(train.targets.tolist(), self.search.cross_validation.n_folds,
                                     cfg.training.seed)
            self._folds[key] = [
                DataSplits(train=train.subset(tr, transform=train.transform),
                           val=train.subset(va, transform=splits.val.transform),
                           classes=splits.classes, channels=splits.channels)
                for tr, va in folds
            ]
        return self._folds[key]

    def objective(self, trial: optuna.Trial,
                  after_sampling: Callable[[optuna.Trial], None] | None = None) -> float | list[float]:
        """Sample (or load) the params, then train; failures leave a ``fail_reason``.

        ``after_sampling(trial)`` runs once the params are stored (ml-search releases
        the study lock there). However it ends, the trial's ``usage`` gets this attempt.
        """
        start, cpu_start = time.time(), time.process_time()
        self.ending_attrs = {}
        try:
            with writes_together(trial):  # the params and the first attributes: one transaction
                params = suggest_params(trial, self.dists)
                self.write_trial_attrs(trial, self.start_attrs(self.trial_config(params)))
            if after_sampling is not None:
                after_sampling(trial)
            return self.train_trial(trial, params)
        except (optuna.TrialPruned, Terminated):
            raise
        except BaseException as exc:
            with contextlib.suppress(Exception):
                record_fail_reason(trial.study, trial, fail_reason(exc))
            if isinstance(exc, OSError) and exc.errno is not None:
                # The machine's (a full disk, a read-only folder): its line says it all.
                log.warning("trial %d failed: %s", trial.number, fail_reason(exc))
            elif isinstance(exc, Exception) and not isinstance(exc, KubetuneError):
                # Not a user mistake: keep the traceback (the search goes on regardless).
                log.warning("trial %d raised %s", trial.number, type(exc).__name__, exc_info=True)
            raise
        finally:
            with contextlib.suppress(Exception):  # accounting never fails a trial
                record_trial(trial, start, cpu_start, _device_name(self._base.training.device), self.ending_attrs,
                             with_outcome=self.told_after)

    def train_trial(self, trial: optuna.Trial, params: Mapping[str, Any]) -> float | list[float]:
        """Train ``trial`` with ``params``; report every epoch; return its value (its values
        under ``search.objectives``).

        Without cross-validation a trial continues from its own ``last.pt`` or that of
        the trial it retries (:mod:`kubetune.search.resume`); a cross-validated trial
        always starts from scratch (its folds keep no resume point).
        """
        from kubetune.training import train

        cfg = self.trial_config(params)
        search = self.search
        maximize = search.direction == "maximize"
        aggregate = statistics.median if search.cross_validation.aggregation == "median" else statistics.fmean
        run_dir = trial_run_dir(self.config, self.study_name, trial.number)
        if search.cross_validation.enabled:
            folds = self._fold_splits(cfg)
            run_dirs = [run_dir / f"fold-{k + 1}" for k in range(len(folds))]
        else:
            folds, run_dirs = [self._splits(cfg)], [run_dir]
        if search.objectives is not None:
            return self._train_objectives(trial, cfg, run_dir)
        done: list[float] = []
        frozen = trial_view(trial)  # what earlier pods reported
        for fold, (data, folder) in enumerate(zip(folds, run_dirs, strict=True)):
            reporter = EpochReporter(trial, search.metric, maximize, aggregate, done, fold,
                                     len(folds), cfg.training.num_epochs, frozen.intermediate_values)
            self.reporter = reporter
            resume, run_id = (None, None) if search.cross_validation.enabled else \
                self._resume(trial, frozen, cfg, reporter)
            if fold == 0:
                self._clear_interrupted(trial, frozen)
            # A quiet search prints one line per trial instead of the epoch lines.
            result = train(cfg, data=data, run_dir=Path(folder), monitor=search.metric,
                           callback=reporter, progress=False,
                           epoch_lines=not self.quiet_epochs, resume=resume, run_id=run_id,
                           searched=list(self.dists), stop_check=check_stop)
            self.ending_attrs.update(reporter.unstored_tie_break())
            done.append(float(result.best[search.metric]))
        return float(aggregate(done))

    def _train_objectives(self, trial: optuna.Trial, cfg: Config, run_dir: Path) -> list[float]:
        """Train one trial of ``search.objectives`` (:mod:`kubetune.search.objectives_reporter`)."""
        from kubetune.training import train

        frozen = trial_view(trial)
        done = last_epoch_values_step(frozen.system_attrs) or 0
        reporter = ObjectivesReporter(trial, self.search, cfg.training.num_epochs, range(1, done + 1))
        self.reporter = reporter
        resume, run_id = self._resume(trial, frozen, cfg, reporter)
        self._clear_interrupted(trial, frozen)
        train(cfg, data=self._splits(cfg), run_dir=run_dir, monitor=checkpoint_metric(self.search),
              callback=reporter, progress=False, epoch_lines=not self.quiet_epochs, resume=resume,
              run_id=run_id, searched=list(self.dists), stop_check=check_stop)
        return reporter.finish()

    def start_attrs(self, cfg: Config) -> dict[str, Any]:
        """The user attributes a trial of ``cfg`` starts with: what kubetune's pruners time
        their first verdict by."""
        from kubetune.training.optim import first_lr_drop

        attrs: dict[str, Any] = {TRIAL_STEPS_ATTR: cfg.training.num_epochs * self.search.cross_validation.folds}
        drop = first_lr_drop(cfg.scheduler, cfg.training.num_epochs)
        if drop is not None:  # the median pruner's warm-up may end there
            attrs[LR_DROP_ATTR] = drop
        return attrs

    def write_trial_attrs(self, trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
        """Write :attr:`trial_attrs` and ``attrs`` on ``trial``, one transaction for all."""
        set_trial_user_attrs(trial.study, trial, {**self.trial_attrs, **attrs})

    def _resume(self, trial: optuna.Trial, frozen: FrozenTrial, cfg: Config,
                reporter: EpochReporter | ObjectivesReporter) -> tuple[Path | None, str]:
        """(checkpoint to continue from or None, the run id of ``trial``'s checkpoints)."""
        from kubetune.config.loader import config_to_dict
        from kubetune.search.resume import find_resume_point, trial_run_id

        run_id = trial_run_id(self.study_name, frozen)
        point = find_resume_point(self.config, trial.study, self.study_name, frozen, config_to_dict(cfg))
        if point is None:
            return None, run_id
        where = "last.pt" if point.source == trial.number else f"trial-{point.source}/last.pt"
        print(f"trial {trial.number} of {self.study_name}: resuming from epoch {point.epoch} of "
              f"{cfg.training.num_epochs} ({where})", flush=True)
        reporter.catch_up(point.history, point.values)
        return point.path, run_id

    @staticmethod
    def _clear_interrupted(trial: optuna.Trial, frozen: FrozenTrial) -> None:
        """The trial trains again: where an earlier pod stopped is history now."""
        if frozen.user_attrs.get(INTERRUPTED_ATTR):
            trial.set_user_attr(INTERRUPTED_ATTR, "")


def _device_name(setting: str) -> str:
    """The device a trial of ``training.device`` trains on: ``cpu``, ``cuda:<index>``, ``mps``."""
    import torch

    from kubetune.training.precision import resolve_device

    device = resolve_device(setting)
    if device.type == "cuda" and device.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(device)


def free_accelerator_memory(setting: str) -> None:
    """Give back the GPU (or MPS) memory a finished trial's tensors held, before the next
    trial of this process allocates: the cycles that keep them (a pruned or failed trial's
    traceback holds its frames, model included) are collected and the allocator's cache is
    emptied. Python's collector counts objects, not the device memory behind them, so it
    would get there late. On the CPU nothing is done: host memory goes back to Python's own
    collections, which the next trial's allocations run."""
    import torch

    from kubetune.training.precision import resolve_device

    kind = resolve_device(setting).type
    if kind == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
    elif kind == "mps":
        gc.collect()
        torch.mps.empty_cache()
