"""What every command shares: logging flags and turning user errors into one line."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from kubetune.errors import KubetuneError


class ArgumentParser(argparse.ArgumentParser):
    """argparse as every kubetune command parses: flags spelt out in full (no
    abbreviations), a misspelt flag reported before a missing required one and with a
    "did you mean", usage errors on one line with exit code 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None,
    ) -> tuple[argparse.Namespace, list[str]]:
        # argparse checks required flags before it reports unknown ones, so `--conf x.yaml`
        # would say "--config is required"; check them after, and only when all is known.
        required = [a for a in self._actions if a.required]
        for action in required:
            action.required = False
        try:
            parsed, extras = super().parse_known_args(args, namespace)
        finally:
            for action in required:
                action.required = True
        if not any(extra.startswith("-") for extra in extras):
            missing = [a for a in required if getattr(parsed, a.dest, None) is None]
            if missing:
                self.error("the following arguments are required: "
                           + ", ".join("/".join(a.option_strings) or str(a.metavar or a.dest) for a in missing))
        return parsed, extras

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments: "):
            flag = next((arg for arg in message.split()[2:] if arg.startswith("--")), None)
            if flag:
                message += self.suggest(flag.split("=", 1)[0])
        self.exit(2, f"{self.prog}: error: {message}\n(see {self.prog} --help)\n")

    def suggest(self, flag: str) -> str:
        """`` (did you mean `--x`?)``: the one flag ``flag`` abbreviates, else the closest."""
        from kubetune.config.loader import did_you_mean

        flags = [f for f in self._option_string_actions if f.startswith("--")]
        starting = [f for f in flags if f.startswith(flag)]
        if len(starting) == 1:
            return f" (did you mean `{starting[0]}`?)"
        return did_you_mean(flag, flags)


def add_version_flag(parser: argparse.ArgumentParser) -> None:
    """``--version``: ``<prog> <kubetune version>``, as pip, kubectl and helm answer it."""
    from kubetune import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """``--version``, ``-v/--verbose``, ``-q/--quiet`` and ``--debug`` (tracebacks for every error)."""
    add_version_flag(parser)
    group = parser.add_argument_group("output")
    group.add_argument("-v", "--verbose", action="store_true",
                       help="show log lines (kubetune's, Optuna's and other libraries') and every epoch")
    group.add_argument("-q", "--quiet", action="store_true", help="print only errors and results")
    group.add_argument("--debug", action="store_true", help="show tracebacks for every error")


def setup_logging(args: argparse.Namespace) -> None:
    # Log lines are for -v; without it a command prints its own lines and warnings only.
    level = logging.DEBUG if args.verbose else logging.ERROR if args.quiet else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("PIL", "matplotlib", "urllib3", "kaleido", "choreographer", "tensorboard"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def run_command(
    prog: str, body: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
) -> int:
    """Parse ``argv``, run ``body``; user errors print one line and return their exit code."""
    args = parser.parse_args(argv)
    setup_logging(args)
    try:
        return body(args)
    except KubetuneError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
