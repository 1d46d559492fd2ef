"""Writing files so that a reader never sees half of one, even after a crash."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, then rename."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename.

    The file is flushed to disk before the rename (and the folder after it), so a node
    crash leaves the old file or the new one, never an empty one. It gets the mode an
    ordinary new file gets (0666 less the umask, not mkstemp's 0600): checkpoints and
    metrics on a shared results volume stay readable by TensorBoard and notebooks.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}-{secrets.token_hex(8)}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o666)  # the kernel applies the umask (and a default ACL)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)



def unwritable_reason(folder: str | Path) -> str | None:
    """Why files cannot be written under ``folder``, or None when they can.

    The folder may be missing (writers make it): then its nearest existing parent is
    checked, by making and removing a folder in it, since permission bits do not tell
    (root writes anywhere, /proc takes no folders). Nothing is left behind, so a command
    can refuse before it starts any work.
    """
    probe = Path(folder)
    try:
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        if not probe.is_dir():
            return f"{probe} is a file, not a folder"
    except OSError as exc:  # a parent this user may not enter
        return f"{probe}: {exc.strerror or exc}"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".kubetune-probe-", dir=probe))
    except OSError as exc:
        return f"{probe} takes no new folders ({exc.strerror or exc})"
    return None
