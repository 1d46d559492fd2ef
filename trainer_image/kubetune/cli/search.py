"""``ml-search``: search a config's hyperparameters with Optuna, locally or with a team.

The config and the search space are checked, then the storage is opened and
checked (a wrong URL fails in a second, not after the data is read), then the
data; only then is the study created or resumed. Trials run in this process or in
``--n-jobs`` worker processes, and the results land in
``<logging.output_dir>/optuna_studies/<study>/``.

Exit codes: 0 when the study reached its total (a worker that died on the way is
said in one line), 1 when it did not, 2 for usage and config errors, 130 after
Ctrl-C (with the line that continues the search, once).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import os
import shlex
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kubetune.cli.common import ArgumentParser, add_common_flags, run_command
from kubetune.cli.train import add_override_flags, alias_values, require_writable_output
from kubetune.config import config_to_dict, resolve_config, with_overrides
from kubetune.config.schema import Config
from kubetune.errors import ConfigError, KubetuneError, UsageError
from kubetune.fileio import unwritable_reason

PROG = "ml-search"
log = logging.getLogger("kubetune.search")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, but got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, but got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Search hyperparameters of a kubetune config with Optuna (its `search:` section).",
    )
    parser.add_argument("--config", "-c", required=True, help="YAML config with a search section")
    parser.add_argument("--n-trials", type=_positive, metavar="N",
                        help="trials in the study, all workers together (default: search.n_trials); "
                             "with --resume: N more trials")
    parser.add_argument("--resume", action="store_true",
                        help="continue the existing study of this name (or join its workers)")
    parser.add_argument("--n-jobs", type=_positive, default=1, metavar="K",
                        help="worker processes on this machine sharing the study (default 1)")
    parser.add_argument("--storage", metavar="URL",
                        help="Optuna storage URL (default: $KUBETUNE_STORAGE_URL, then search.storage, "
                             "then sqlite:///optuna_studies.db)")
    parser.add_argument("--study-name", metavar="NAME", help="override search.study_name")
    parser.add_argument("--export-only", action="store_true",
                        help="run no trials: write best_config.yaml and trials.csv of the study")
    parser.add_argument("--output-dir", metavar="DIR",
                        help="where results go (default: <logging.output_dir>/optuna_studies/<study>)")
    add_override_flags(parser)
    add_common_flags(parser)
    return parser


def _load_config(args: argparse.Namespace) -> Config:
    from kubetune.search.checks import check_search, require_search

    if args.study_name is not None and not args.study_name.strip():
        raise UsageError("--study-name must not be empty (leave it out to use search.study_name)")
    config = resolve_config(args.config, sets=args.sets, flags=alias_values(args), searching=True)
    require_search(config)
    if args.study_name is not None:
        try:
            config = with_overrides(config, {"search.study_name": args.study_name})
        except ConfigError as exc:
            raise ConfigError(f"--study-name: {exc}", path=exc.path) from None
    check_search(config)
    return config


def _export(config: Config, study, output_dir: Path | None, quiet: bool) -> bool:
    """Write the results and print the top trials; False when no trial completed."""
    from rich.console import Console

    from kubetune.search.results import export_results, study_dir, top_trials_table, usage_line

    folder = output_dir or study_dir(config, study.study_name)
    try:
        written = export_results(config, study, output_dir)
    except OSError as exc:  # a full disk, a folder gone read-only: the study itself is safe
        print(f"{PROG}: error: cannot write the results to {folder}: {exc.strerror or exc}", file=sys.stderr)
        return False
    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 120)
    if not quiet:
        from kubetune.search.checks import config_point, require_search
        from kubetune.search.pareto import front_table

        search = require_search(config)
        if search.objectives is not None:
            console.print(front_table(study))
        else:
            console.print(top_trials_table(study, search.metric, own_params=config_point(config)))
    if "pareto_" in " ".join(written):
        print(f"Pareto-optimal configs: {Path(written['trials_csv']).parent / 'pareto'}")
    print(f"trials: {written['trials_csv']}")
    if (used := usage_line(study)) is not None:
        print(used)
    if "best_config" in written:
        command = config.search.command if config.search else None
        trainer = shlex.join(command) if command else "ml-train"  # a script runs alone with --config
        print(f"best config: {written['best_config']} "
              f"(train it: {trainer} --config {written['best_config']})")
        print(f"TensorBoard: tensorboard --logdir {Path(config.logging.output_dir) / study.study_name}")
        return True
    log.warning("no trial of study %s completed: no best_config.yaml in %s", study.study_name, folder)
    return False


@dataclass
class _Outcome:
    interrupted: bool = False
    broken: list[int] = field(default_factory=list)  # exit codes of workers that died


def _run_processes(config: Config, url: str, study_name: str, n_jobs: int, args) -> _Outcome:
    """Run ``n_jobs`` worker processes; Ctrl-C is forwarded to each exactly once."""
    from kubetune.search.interruption import INTERRUPTED_EXIT, interrupt_requested
    from kubetune.search.worker import STOPPED_EXIT, worker_process

    ctx = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // n_jobs)
    level = logging.getLogger().getEffectiveLevel()
    ready = [ctx.Event() for _ in range(n_jobs)]  # set once a worker notes Ctrl-C itself
    procs = [
        ctx.Process(
            target=worker_process, name=f"ml-search-worker-{i}",
            args=(config_to_dict(config), url, study_name, not args.verbose, args.trial_lines,
                  threads, level, ready[i]),
        )
        for i in range(n_jobs)
    ]
    # Workers start with Ctrl-C ignored (an ignored signal survives exec), so one that
    # arrives while they import is not a traceback; each gets its SIGINT from here once
    # it watches for it.
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for proc in procs:
            proc.start()
    finally:
        signal.signal(signal.SIGINT, handler)
    forwarded: set[int] = set()
    while any(proc.is_alive() for proc in procs):
        if interrupt_requested():
            for i, proc in enumerate(procs):
                if i not in forwarded and ready[i].is_set() and proc.is_alive() and proc.pid:
                    forwarded.add(i)
                    os.kill(proc.pid, signal.SIGINT)
        for proc in procs:
            proc.join(0.1)
    codes = [proc.exitcode for proc in procs]
    return _Outcome(
        interrupted=interrupt_requested() or INTERRUPTED_EXIT in codes,
        broken=[code for code in codes if code not in (0, INTERRUPTED_EXIT, STOPPED_EXIT) and code is not None],
    )


def _run(args: argparse.Namespace) -> int:
    from kubetune.search.interruption import watch_interrupts

    watch_interrupts()  # Ctrl-C is acted on between steps, never in the middle of one
    try:
        return _search(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; continue with: {resume_command(args.argv)}", file=sys.stderr)
        return 130


def _search(args: argparse.Namespace) -> int:
    import optuna

    from kubetune.search.checks import require_search
    from kubetune.search.interruption import check_stop
    from kubetune.search.storage import mask_url, open_before_work, resolve_storage_url

    optuna.logging.set_verbosity(optuna.logging.WARNING if args.verbose else optuna.logging.ERROR)
    config = _load_config(args)
    if not (args.export_only and args.output_dir):  # trials and default results go there
        require_writable_output(config)
    if args.output_dir and (reason := unwritable_reason(args.output_dir)):
        raise UsageError(f"--output-dir {args.output_dir} cannot hold the results: {reason}")
    search = require_search(config)
    study_name = search.study_name
    url = resolve_storage_url(args.storage, search)
    output_dir = Path(args.output_dir) if args.output_dir else None

    if args.export_only:
        if args.resume or args.n_trials:
            raise UsageError("--export-only runs no trials; drop --resume and --n-trials")
        from kubetune.search.study import load_search_study

        study = load_search_study(config, url, study_name, heartbeat=False)
        return 0 if _export(config, study, output_dir, args.quiet) else 1

    from kubetune.search.objective import trial_runner
    from kubetune.search.pruners import build_pruner
    from kubetune.search.samplers import build_sampler
    from kubetune.search.study import require_startable, start_study
    from kubetune.search.worker import run_worker

    build_sampler(search)  # GridSampler's grid and friends fail here, before the storage
    build_pruner(search)
    storage = open_before_work(url)  # a wrong URL or a server down fails now, not after the data
    if storage is not None:
        require_startable(storage, url, study_name, resume=args.resume)
    check_stop()
    trainer = trial_runner(config, study_name, quiet_epochs=not args.verbose, storage=url)
    trainer.prepare()  # data errors stop here, before the study is written
    check_stop()

    start = start_study(config, url, study_name, resume=args.resume, n_trials=args.n_trials,
                        storage=storage)
    from kubetune.search.ledger import budget

    state = budget(start.study, start.target)
    if not args.quiet:
        print(f"study {study_name} ({'new' if start.created else 'resumed'}) in {mask_url(url)}: "
              f"{state.finished}/{start.target} trials done, {state.counted - state.finished} queued or running",
              file=sys.stderr)
        if state.done:
            print(f"study {study_name} already has its {start.target} trials; add more with --resume --n-trials N",
                  file=sys.stderr)
    live = sys.stderr.isatty() and not args.quiet and not args.verbose
    args.trial_lines = not args.quiet and not live  # the live line prints them itself
    outcome = _Outcome()
    with _progress(config, url, study_name, start.target, live):
        try:
            check_stop()
            if args.n_jobs == 1:
                outcome.interrupted = run_worker(config, url, study_name, quiet_epochs=not args.verbose,
                                                 progress=args.trial_lines, trainer=trainer).interrupted
            else:
                outcome = _run_processes(config, url, study_name, args.n_jobs, args)
        except KeyboardInterrupt:
            outcome.interrupted = True
    completed = _export(config, start.study, output_dir, args.quiet)
    if outcome.interrupted:
        raise KeyboardInterrupt  # the one line that continues the search: _run's
    from kubetune.search.checks import require_search
    from kubetune.search.objectives import goal_trial

    if (reached := goal_trial(start.study, require_search(config))) is not None:
        print(f"study {study_name}: trial {reached.number} reached search.goal; no more trials were started")
        return 0 if completed else 1
    return _verdict(start.study, args, outcome, completed)


def _verdict(study, args: argparse.Namespace, outcome: _Outcome, completed: bool) -> int:
    """0 when the study reached its total, else one line saying why and exit 1."""
    from kubetune.search.ledger import budget

    state = budget(study)
    workers = f"{len(outcome.broken)} of {args.n_jobs} workers exited early (exit codes {outcome.broken})"
    if state.done:
        if outcome.broken:
            print(f"{PROG}: {workers}; the study still reached its {state.target} trials", file=sys.stderr)
        return 0 if completed else 1
    where = f"{state.finished}/{state.target} trials done"
    if state.repeated_failure:
        raise KubetuneError(f"stopped: the last trials all failed with {state.repeated_failure}; "
                            f"fix that, then continue with: {resume_command(args.argv)} ({where})")
    cause = workers if outcome.broken else "the workers stopped"
    raise KubetuneError(f"{cause} before the study reached its total ({where}); "
                        f"continue with: {resume_command(args.argv)}")


def _progress(config: Config, url: str, study_name: str, target: int, live: bool) -> contextlib.AbstractContextManager:
    """The live progress line on a terminal; nothing elsewhere."""
    if not live:
        return contextlib.nullcontext()
    from kubetune.search.checks import require_search
    from kubetune.search.progress import LiveProgress
    from kubetune.search.study import load_search_study
    from kubetune.search.worker import describe_trial

    search = require_search(config)
    folds = search.cross_validation.folds
    return LiveProgress(lambda: load_search_study(config, url, study_name, heartbeat=False), target, search.metric,
                        lambda study, trial: describe_trial(study, trial, search.metric, folds), sys.stderr)


def resume_command(argv: Sequence[str]) -> str:
    """The command line that continues an interrupted search: the same flags, with
    ``--resume`` and without ``--n-trials`` (a resumed study keeps its total)."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--n-trials":
            skip = True
        elif not arg.startswith("--n-trials="):
            kept.append(arg)
    if "--resume" not in kept:
        kept.append("--resume")
    return shlex.join([PROG, *kept])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ml-search``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    parser.set_defaults(argv=argv)
    return run_command(PROG, _run, parser, argv)


if __name__ == "__main__":
    sys.exit(main())
