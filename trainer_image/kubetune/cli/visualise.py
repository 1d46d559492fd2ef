"""``ml-visualise``: plots of an Optuna study (``--mode search``) or of training runs."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from kubetune.cli.common import ArgumentParser, add_common_flags, run_command
from kubetune.errors import UsageError
from kubetune.fileio import unwritable_reason

PROG = "ml-visualise"
# Kept here (not imported from kubetune.visualise) so --help needs no optuna or plotly import.
PLOT_TYPES = (
    "optimization_history", "param_importances", "slice", "contour",
    "parallel_coordinate", "intermediate_values", "edf", "timeline",
)
SEARCH_ONLY = ("study_name", "storage", "config", "plot_type", "params")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description=(
            "Draw Optuna's plots of a study (HTML, PNG and an index.html report), "
            "or the loss and accuracy curves of training runs."
        ),
    )
    parser.add_argument("--mode", choices=("search", "training"), default="search",
                        help="search: plots of an Optuna study (default); training: curves of runs")
    study = parser.add_argument_group("search mode")
    study.add_argument("--study-name", help="study to plot (default: the config's search.study_name)")
    study.add_argument(
        "--storage",
        help="Optuna storage URL (default: $KUBETUNE_STORAGE_URL, then the config's "
             "search.storage, then sqlite:///optuna_studies.db)",
    )
    study.add_argument("--config", "-c", help="kubetune config: study name, storage and output_dir")
    study.add_argument(
        "--plot-type", nargs="+", action="extend", choices=(*PLOT_TYPES, "pareto_front", "all"), metavar="TYPE",
        help=f"one or more of: {', '.join(PLOT_TYPES)}, pareto_front (several objectives; the others "
             "are drawn once per objective), all (default: all)",
    )
    study.add_argument(
        "--params", nargs="+", metavar="NAME",
        help="parameters for slice, contour, parallel_coordinate and param_importances: "
             "short names (lr) or dotted keys (optimizer.lr)",
    )
    study.add_argument("--top", type=int, default=10, metavar="N", help="trials in the report's table")
    training = parser.add_argument_group("training mode")
    training.add_argument("--logdir", nargs="+", metavar="DIR",
                          help="run folders with TensorBoard events, or folders holding many runs")
    parser.add_argument(
        "--format", choices=("html", "png", "both"),
        help="html (interactive), png (static, needs Chromium) or both (default: both, or html "
             "with a warning where no Chromium is found)",
    )
    parser.add_argument(
        "--output", "-o",
        help="output folder (search default: <output_dir>/optuna_studies/<study>/plots, "
             "output_dir from --config or runs; training default: <first logdir>/plots)",
    )
    add_common_flags(parser)
    return parser


def _check_flags(args: argparse.Namespace) -> None:
    if args.mode == "training":
        used = [f"--{name.replace('_', '-')}" for name in SEARCH_ONLY if getattr(args, name)]
        if used:
            verb = "applies" if len(used) == 1 else "apply"
            raise UsageError(f"{', '.join(used)} {verb} only to --mode search")
        if not args.logdir:
            raise UsageError("--mode training needs --logdir DIR [DIR ...]")
    elif args.logdir:
        raise UsageError("--logdir only applies to --mode training")
    if args.top < 1:
        raise UsageError(f"`--top` must be at least 1, but got {args.top}")


def _check_output(output: Path, given: bool) -> None:
    """Refuse an output folder that cannot be written before anything is drawn or written."""
    reason = unwritable_reason(output)
    if reason is None:
        return
    if given:
        raise UsageError(f"--output {output} cannot hold the plots: {reason}")
    raise UsageError(f"the plots folder {output} cannot be written: {reason}; choose another with --output DIR")


def _resolve_format(requested: str | None) -> str:
    """The format asked for; without ``--format``, both where Chromium is found, else HTML
    and one warning (an explicit ``png`` or ``both`` without Chromium fails before writing)."""
    if requested is not None:
        return requested
    from kubetune.visualise import ChromiumMissing, find_chromium
    from kubetune.visualise.export import BROWSER_ENV

    try:
        find_chromium()
    except ChromiumMissing as exc:
        if os.environ.get(BROWSER_ENV):  # a browser the user named that cannot run: theirs to fix
            raise
        print(f"{PROG}: warning: writing HTML only, no PNG files: {exc.detail}; to get PNGs "
              f"{exc.remedy}; pass --format html to silence this warning", file=sys.stderr)
        return "html"
    return "both"


def _plot_types(requested: list[str] | None) -> list[str] | None:
    """The plot types asked for; None for every one the study's shape has."""
    if not requested or "all" in requested:
        return None
    return list(dict.fromkeys(requested))


def _run_search(args: argparse.Namespace) -> int:
    import optuna

    from kubetune.config import resolve_config
    from kubetune.search.pareto import values_text
    from kubetune.search.storage import resolve_storage_url
    from kubetune.visualise import open_study, render_study, resolve_params, study_param_names
    from kubetune.visualise.study_info import counts_text
    from kubetune.visualise.study_report import NothingToPlot, skipped_text

    # Optuna's own log lines ("[W …] Param … unique value length is less than 2.") are
    # noise next to the one-line reasons ml-visualise prints; -v shows its warnings.
    optuna.logging.set_verbosity(optuna.logging.WARNING if args.verbose else optuna.logging.ERROR)
    config = resolve_config(args.config) if args.config else None
    search = config.search if config is not None else None
    study_name = args.study_name or (search.study_name if search is not None else None)
    if not study_name:
        raise UsageError("--study-name is required (or --config with a search.study_name)")
    url = resolve_storage_url(args.storage, search)
    if args.output:
        output = Path(args.output)
    else:
        root = Path(config.logging.output_dir) if config is not None else Path("runs")
        output = root / "optuna_studies" / study_name / "plots"
    _check_output(output, given=bool(args.output))
    study = open_study(url, study_name)
    params = resolve_params(args.params, study_param_names(study)) if args.params else None
    fmt = _resolve_format(args.format)
    try:
        report = render_study(
            study, output, plot_types=_plot_types(args.plot_type), params=params, fmt=fmt,
            top=args.top, default_metric=search.metric if search is not None else None,
            keep_others=bool(args.plot_type) and "all" not in args.plot_type,
        )
    except NothingToPlot as exc:
        flags = _selection_flags(args)
        if not flags:
            raise
        # The user's narrowing chose only plots this study cannot draw: theirs to change.
        raise UsageError(
            f"{flags} draws no plot of study {study_name}: {skipped_text(exc.skipped)}"
        ) from None
    summary = report.summary
    states = f"{summary.n_trials} trial{'' if summary.n_trials == 1 else 's'}: {counts_text(summary.counts)}"
    if summary.front is not None:
        print(f"study {summary.name}: Pareto front of {len(summary.front)} trial(s) ({states})")
        for trial in summary.front:
            print(f"  trial #{trial.number}: {values_text(study, trial)}")
    elif summary.best_trial is None:
        print(f"study {summary.name}: no completed trial yet ({states})")
    else:
        print(f"study {summary.name}: best {summary.metric}={summary.best_trial.value:.6g} "
              f"(trial #{summary.best_trial.number}; {states})")
    for plot_type, reason in report.skipped.items():
        print(f"skipped {plot_type}: {reason}", file=sys.stderr)
    print(f"wrote {len(report.files)} plot(s) ({fmt}) to {output}; report: {report.index}")
    return 0


def _selection_flags(args: argparse.Namespace) -> str:
    """``--plot-type contour --params lr`` as the user passed them; empty for the defaults."""
    parts = []
    if args.plot_type:
        parts.append(f"--plot-type {' '.join(dict.fromkeys(args.plot_type))}")
    if args.params:
        parts.append(f"--params {' '.join(args.params)}")
    return f"`{' '.join(parts)}`" if parts else ""


def _run_training(args: argparse.Namespace) -> int:
    from kubetune.visualise import render_training

    logdirs = [Path(d) for d in args.logdir]
    output = Path(args.output) if args.output else logdirs[0] / "plots"
    if args.output or logdirs[0].is_dir():  # a --logdir that is no folder is named by render_training
        _check_output(output, given=bool(args.output))
    report = render_training(logdirs, output, fmt=_resolve_format(args.format))
    for label, reason in report.skipped.items():
        print(f"skipped run {label}: {reason}", file=sys.stderr)
    files = ", ".join(str(p) for p in report.files.values())
    print(f"curves of {len(report.runs)} run(s): {files}")
    return 0


def _run(args: argparse.Namespace) -> int:
    _check_flags(args)
    return _run_training(args) if args.mode == "training" else _run_search(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ml-visualise``."""
    return run_command(PROG, _run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
