"""A PostgreSQL server of a test's own, to stop and restart without touching the shared one."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"no PostgreSQL {name} under /usr/lib/postgresql/*/bin")
    return found[-1]


def missing_binaries() -> str | None:
    """Why no server of a test's own can run here (no initdb or pg_ctl), or None."""
    for name in ("initdb", "pg_ctl"):
        if not glob.glob(f"/usr/lib/postgresql/*/bin/{name}"):
            return f"no PostgreSQL {name} under /usr/lib/postgresql/*/bin"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OwnPostgres:
    """``initdb`` into ``folder`` (as the ``postgres`` user when run as root), trust auth,
    on a free port; :meth:`stop`, :meth:`start` and :meth:`restart` as ``pg_ctl`` does."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.port = _free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:  # initdb refuses root
            shutil.chown(folder, "postgres", "postgres")
        self._run(_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def _run(self, *cmd: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*prefix, *cmd], capture_output=True, text=True, cwd=self.folder)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip() or done.stdout.strip()}")

    def _ctl(self, action: str, *extra: str) -> None:
        self._run(_bin("pg_ctl"), action, "-D", str(self.data), "-w", "-l", str(self.folder / "log"),
                  "-o", f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1", *extra)

    def start(self) -> None:
        self._ctl("start")

    def stop(self) -> None:
        self._ctl("stop", "-m", "fast")

    def restart(self) -> None:
        self._ctl("restart", "-m", "fast")

    def close(self) -> None:
        try:
            self._run(_bin("pg_ctl"), "stop", "-D", str(self.data), "-m", "immediate")
        except RuntimeError:
            pass  # already stopped


@contextlib.contextmanager
def own_postgres_server() -> Iterator[OwnPostgres]:
    """A started :class:`OwnPostgres` in a folder of its own, stopped and removed afterwards."""
    # Not under pytest's tmp_path: the server runs as the postgres user, which may not enter it.
    folder = Path(tempfile.mkdtemp(prefix="kubetune-pg-"))
    server: OwnPostgres | None = None
    try:
        server = OwnPostgres(folder)
        server.start()
        yield server
    finally:
        if server is not None:
            server.close()
        shutil.rmtree(folder, ignore_errors=True)
