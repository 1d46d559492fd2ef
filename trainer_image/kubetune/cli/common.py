"""What every command shares: logging flags and turning user errors into one line."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn

from kubetune.errors import KubetuneError


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports usage errors on one line with exit code 2."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments: "):
            from kubetune.config.loader import did_you_mean

            flag = next((arg for arg in message.split()[2:] if arg.startswith("--")), None)
            if flag:
                message += did_you_mean(flag.split("=", 1)[0], self._option_string_actions)
        self.exit(2, f"{self.prog}: error: {message}\n(see {self.prog} --help)\n")


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """``-v/--verbose``, ``-q/--quiet`` and ``--debug`` (tracebacks for every error)."""
    group = parser.add_argument_group("output")
    group.add_argument("-v", "--verbose", action="store_true", help="log more")
    group.add_argument("-q", "--quiet", action="store_true", help="log only warnings")
    group.add_argument("--debug", action="store_true", help="show tracebacks for every error")


def setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
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
