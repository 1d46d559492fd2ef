"""The errors kubetune raises for things a user can fix.

Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class KubetuneError(Exception):
    """A problem the user can act on; the CLI prints it on one line."""

    exit_code = 1

    def __str__(self) -> str:
        text = super().__str__()
        # Raised in a DataLoader worker, it comes back re-raised with the worker's whole
        # traceback as its message (torch's ExceptionWrapper); the last line is ours.
        if text.startswith("Caught ") and "\nOriginal Traceback" in text:
            return text.rstrip().rsplit("\n", 1)[-1].split(": ", 1)[-1]
        return text


class UsageError(KubetuneError):
    """Bad command-line input."""

    exit_code = 2


class ConfigError(KubetuneError):
    """A config value that is unknown, of the wrong type or impossible.

    ``path`` is the dotted key (``optimizer.lr``) or the file that is wrong.
    """

    exit_code = 2

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class DataError(KubetuneError):
    """A dataset folder that is missing or cannot be read."""

    exit_code = 2
