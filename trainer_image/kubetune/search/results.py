"""What a study leaves behind: best_config.yaml, trials.csv and the top-trials table.

Torch-free: the operator builds its best-config ConfigMap with :func:`best_config_dict`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import optuna
from optuna.trial import FrozenTrial, TrialState

from kubetune.config.loader import config_to_dict, with_overrides
from kubetune.config.schema import Config
from kubetune.config.yaml_io import dump_yaml
from kubetune.fileio import write_text_atomic
from kubetune.search.attributes import FAIL_REASON_ATTR, RETRY_HISTORY_ATTR, last_epoch_values_step
from kubetune.search.ledger import retried_numbers
from kubetune.search.usage import record_of, spent, study_records, totals

if TYPE_CHECKING:
    from rich.table import Table


def best_config_dict(config: Config, best_params: Mapping[str, Any]) -> dict[str, Any]:
    """The complete config with ``best_params`` applied and no search section.

    Epochs and the training fraction are the config's own: ``search.trial_epochs``
    and ``search.trial_train_fraction`` only ever shorten trials.
    """
    base = config.model_copy(update={"search": None})
    return config_to_dict(with_overrides(base, dict(best_params)), include_search=False)


def study_dir(config: Config, study_name: str) -> Path:
    """``<logging.output_dir>/optuna_studies/<study>``: where results of a study go."""
    return Path(config.logging.output_dir) / "optuna_studies" / study_name


def trial_run_dir(config: Config, study_name: str, number: int) -> Path:
    """``<logging.output_dir>/<study>/trial-<number>``: a trial's TensorBoard folder."""
    return Path(config.logging.output_dir) / study_name / f"trial-{number}"


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best COMPLETE trial, or None when there is none yet; under several
    objectives the Pareto front's best on the first (:mod:`kubetune.search.pareto`)."""
    if len(study.directions) > 1:
        from kubetune.search.pareto import picked_trial

        return picked_trial(study)
    try:
        return study.best_trial
    except ValueError:
        return None


def best_config_text(config: Config, study: optuna.Study, trial: FrozenTrial) -> str:
    search = config.search
    metric = search.metric if search else "value"
    header = (
        f"# Best trial {trial.number} of study {study.study_name}: {metric}={trial.value:.6g}.\n"
        f"# Train it: ml-train --config <this file>\n"
    )
    return header + dump_yaml(best_config_dict(config, trial.params))


def trial_rows(study: optuna.Study) -> tuple[list[str], list[dict[str, Any]]]:
    """trials.csv's header and rows, one per trial, in trial-number order."""
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    retry_of = {}
    for t in trials:
        history = t.system_attrs.get(RETRY_HISTORY_ATTR)
        if history:
            retry_of[t.number] = history[-1]
    param_keys: list[str] = []
    for t in trials:
        for key in t.params:
            if key not in param_keys:
                param_keys.append(key)
    names = (study.metric_names or [f"value{i}" for i in range(len(study.directions))]) \
        if len(study.directions) > 1 else ["value"]
    header = ["number", "state", *names, *param_keys, "epochs", "duration_s", *USAGE_COLUMNS,
              "datetime_start", "datetime_complete", FAIL_REASON_ATTR, "retry_of", "retried"]
    records = study_records(study.user_attrs)
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        duration = t.duration.total_seconds() if t.duration is not None else None
        record = record_of(t, records)
        used = totals(record)
        rows.append({
            "number": t.number,
            "state": t.state.name,
            **{name: t.values[i] if t.values else None for i, name in enumerate(names)},
            **{key: t.params.get(key) for key in param_keys},
            "epochs": t.last_step if t.last_step is not None else last_epoch_values_step(t.system_attrs),
            "duration_s": round(duration, 3) if duration is not None else None,
            **({"wall_s": used.wall_seconds, "gpu_s": used.gpu_seconds, "cpu_s": used.cpu_seconds,
                "device": used.device or None} if record else dict.fromkeys(USAGE_COLUMNS)),
            "datetime_start": t.datetime_start.isoformat() if t.datetime_start else None,
            "datetime_complete": t.datetime_complete.isoformat() if t.datetime_complete else None,
            FAIL_REASON_ATTR: t.user_attrs.get(FAIL_REASON_ATTR),
            "retry_of": retry_of.get(t.number),
            "retried": t.number in retried,
        })
    return header, rows


USAGE_COLUMNS = ("wall_s", "gpu_s", "cpu_s", "device")  # kubetune.search.usage's totals


def usage_line(study: optuna.Study) -> str | None:
    """``usage: 12 trials, 3.1 min, 0.052 GPU-hours (0.021 until the best trial, 7)``;
    None when no trial recorded any."""
    trials = study.get_trials(deepcopy=False)
    records = study_records(study.user_attrs)
    found = [r for r in (record_of(t, records) for t in trials) if r]
    if not found:
        return None
    wall = sum(totals(r).wall_seconds for r in found)
    gpu = spent(found)[0]
    line = f"usage: {len(found)} trials, {wall / 60:.1f} min of trial time, {gpu / 3600:.3f} GPU-hours"
    best = best_trial(study)
    if best is not None and best.datetime_complete is not None:
        line += (f" ({spent(found, best.datetime_complete.timestamp())[0] / 3600:.3f} "
                 f"until the best trial, {best.number}, completed)")
    devices = sorted({totals(r).device for r in found} - {""})
    return line + (f" on {', '.join(devices)}" if devices else "")


def trials_csv_text(study: optuna.Study) -> str:
    header, rows = trial_rows(study)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue()


def export_results(config: Config, study: optuna.Study, output_dir: Path | None = None) -> dict[str, Path]:
    """Write ``trials.csv`` and, when a trial completed, ``best_config.yaml``."""
    target = output_dir if output_dir is not None else study_dir(config, study.study_name)
    written = {}
    csv_path = target / "trials.csv"
    write_text_atomic(csv_path, trials_csv_text(study))
    written["trials_csv"] = csv_path
    if config.search is not None and config.search.objectives is not None:
        from kubetune.search.pareto import export_front

        written.update(export_front(config, study, target, config.search.pick))
        return written
    best = best_trial(study)
    if best is not None:
        path = target / "best_config.yaml"
        write_text_atomic(path, best_config_text(config, study, best))
        written["best_config"] = path
    return written


def _retries_text(trials: Sequence[FrozenTrial]) -> str:
    """``2 retried with the same params, 1 queued for a retry``: a retry still WAITING (a
    search stopped before it ran) has not retried anything yet."""
    queued: set[int] = set()
    ran: set[int] = set()
    for t in trials:
        if history := t.system_attrs.get(RETRY_HISTORY_ATTR):  # the last entry is the trial it re-runs
            (queued if t.state == TrialState.WAITING else ran).add(history[-1])
    parts = [f"{len(ran)} retried with the same params"] if ran else []
    if queued:
        parts.append(f"{len(queued)} queued for a retry")
    return ", ".join(parts)


def top_trials_table(study: optuna.Study, metric: str, limit: int = 10,
                     own_params: Mapping[str, Any] | None = None) -> Table:
    """A rich Table of the best COMPLETE trials, best first.

    ``own_params``: the config's own point; the caption says what it scored, so the
    table shows what tuning gained.
    """
    from rich.table import Table

    trials = study.get_trials(deepcopy=False)  # one read of the storage serves the table and its caption
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
    everything = sorted(complete, key=lambda t: cast(float, t.value), reverse=reverse)  # COMPLETE: it has one
    ranked = everything[:limit]
    keys: list[str] = []
    for t in ranked:
        keys.extend(k for k in t.params if k not in keys)
    counts = {s.name: 0 for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    for t in trials:
        if t.state.name in counts:
            counts[t.state.name] += 1
    caption = ", ".join(f"{n} {name.lower()}" for name, n in counts.items())
    if retries := _retries_text(trials):
        caption += f" ({retries})"
    own = next((t for t in everything if own_params and t.params == dict(own_params)), None)
    if own is not None:
        caption += (f"\nthe config's own values (trial {own.number}): {metric}={own.value:.4f}, "
                    f"rank {everything.index(own) + 1} of {len(everything)}")
    table = Table(title=f"Top trials of {study.study_name}", caption=caption)
    table.add_column("rank", justify="right")
    table.add_column("trial", justify="right")
    table.add_column(metric, justify="right")
    leaves = [key.rsplit(".", 1)[-1] for key in keys]
    for key, leaf in zip(keys, leaves, strict=True):
        table.add_column(leaf if leaves.count(leaf) == 1 else key, justify="right")
    for rank, t in enumerate(ranked, 1):
        table.add_row(str(rank), str(t.number), f"{t.value:.4f}",
                      *(format_value(t.params.get(k)) for k in keys))
    return table


def format_value(value: Any, digits: int = 4, missing: str = "-") -> str:
    """A table cell: floats to ``digits`` significant digits, None as ``missing``."""
    if value is None:
        return missing
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)
