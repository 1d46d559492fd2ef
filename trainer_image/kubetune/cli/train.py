"""``ml-train``: train one model from a YAML config, with CLI overrides."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from kubetune.cli.common import ArgumentParser, add_common_flags, run_command
from kubetune.config import ALIASES, config_to_yaml, resolve_config
from kubetune.config.schema import Config
from kubetune.errors import ConfigError, UsageError
from kubetune.fileio import unwritable_reason

PROG = "ml-train"


def add_override_flags(parser: argparse.ArgumentParser) -> None:
    """``--set a.b=value`` plus the guide's short flags, shared by ml-train and ml-search."""
    group = parser.add_argument_group(
        "overrides", "Applied over the file: each --set in order, then the short flags."
    )
    group.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
        help="set any config key by its dotted name, e.g. --set optimizer.momentum=0.95",
    )
    types = {"lr": float, "momentum": float, "weight_decay": float, "dropout": float,
             "batch_size": int, "epochs": int, "seed": int}
    for alias, key in ALIASES.items():
        flags = dict.fromkeys([f"--{alias}", f"--{alias.replace('_', '-')}"])  # --batch-size too
        group.add_argument(
            *flags, dest=f"alias_{alias}", type=types.get(alias, str), metavar="V",
            help=f"alias of --set {key}=V",
        )


def alias_values(args: argparse.Namespace) -> dict[str, object]:
    return {alias: getattr(args, f"alias_{alias}") for alias in ALIASES}


def require_writable_output(config: Config) -> None:
    """Refuse, before any work, a ``logging.output_dir`` that runs could not be written to."""
    reason = unwritable_reason(config.logging.output_dir)
    if reason:
        raise ConfigError(f"`logging.output_dir` {config.logging.output_dir} cannot hold runs: {reason}",
                          path="logging.output_dir")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Train an image classifier from a kubetune YAML config.",
    )
    parser.add_argument("--config", "-c", required=True, help="YAML config file")
    add_override_flags(parser)
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )
    parser.add_argument(
        "--trial", metavar="STUDY:NUMBER",
        help="run the trial the storage already holds (what a Kubernetes trial pod runs)",
    )
    parser.add_argument("--storage", help="Optuna storage URL for --trial (default: the config's)")
    parser.add_argument(
        "--no-progress", action="store_true", help="plain lines instead of a progress bar"
    )
    add_common_flags(parser)
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.storage is not None and not args.trial:
        raise UsageError("--storage applies only with --trial (a plain run uses no storage)")
    config = resolve_config(args.config, sets=args.sets, flags=alias_values(args))
    if args.print_config:
        sys.stdout.write(config_to_yaml(config))
        return 0
    require_writable_output(config)
    if args.trial:
        from kubetune.search.single_trial import run_stored_trial

        return run_stored_trial(config, args.trial, storage=args.storage)
    from kubetune.training import train

    result = train(config, progress=False if args.no_progress or args.quiet else None, epoch_lines=not args.quiet)
    best = result.best
    print(
        f"best val_acc={best['val_acc']:.4f} (epoch {best['epoch']}); "
        f"run folder {result.run_dir}; view with: tensorboard --logdir {result.run_dir.parent.parent}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ml-train``."""
    return run_command(PROG, _run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
