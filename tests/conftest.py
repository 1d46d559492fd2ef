"""Shared fixtures: the digits sample, fast configs, real PostgreSQL (alone or behind Optuna's gRPC proxy) and Chromium.

With ``KUBETUNE_REQUIRE_SERVICES=1`` (set by .ci/run) a missing PostgreSQL or
Chromium fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Tiny models on 2 cores train several times faster on one thread per process;
# subprocesses (CLI tests, local workers) inherit the setting.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REQUIRE_SERVICES = os.environ.get("KUBETUNE_REQUIRE_SERVICES") == "1"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BIN = Path(sys.executable).parent


def missing_service(reason: str) -> None:
    """Skip locally; fail where CI promised the service."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (KUBETUNE_REQUIRE_SERVICES=1: this test must run)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """The real 8x8 digits sample as an ImageFolder tree, written once per session."""
    from kubetune.data.sample import write_digits

    root = tmp_path_factory.mktemp("data") / "digits"
    write_digits(root)
    return root


@pytest.fixture
def fast_config(digits_dir: Path, tmp_path: Path) -> dict:
    """A config dict that trains the small CNN on digits in a few seconds."""
    return {
        "model": {"architecture": "small_cnn", "dropout": 0.1},
        "data": {
            "path": str(digits_dir),
            "image_size": 8,
            "channels": 1,
            "normalize": {"mean": [0.3], "std": [0.37]},
        },
        "training": {"num_epochs": 3, "batch_size": 64, "seed": 0, "device": "cpu"},
        "optimizer": {"type": "sgd", "lr": 0.05, "momentum": 0.9},
        "scheduler": {"type": "cosine"},
        "logging": {"output_dir": str(tmp_path / "runs"), "experiment_name": "digits"},
    }


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """The URL of the PostgreSQL server tests may use (``$KUBETUNE_TEST_POSTGRES_URL``)."""
    url = os.environ.get("KUBETUNE_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(url)
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("select 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means "no server"
        missing_service(f"PostgreSQL not reachable at {url}: {str(exc).splitlines()[0]}")
    return url


@pytest.fixture
def postgres_url(postgres_server_url: str):
    """A fresh, empty database on the test server, dropped afterwards."""
    import sqlalchemy

    name = f"kt_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    url = sqlalchemy.engine.make_url(postgres_server_url).set(database=name)
    yield url.render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


# Optuna's own gRPC storage proxy server, in a process of its own.
GRPC_SERVE = ("import sys, optuna; optuna.storages.run_grpc_proxy_server("
              "optuna.storages.RDBStorage(sys.argv[1]), host='127.0.0.1', port=int(sys.argv[2]))")


@pytest.fixture
def grpc_url(postgres_url: str) -> Iterator[str]:
    """``grpc://127.0.0.1:<port>``: Optuna's gRPC proxy server in front of a fresh PostgreSQL database."""
    import optuna

    from kubetune.search.storage import make_storage

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-c", GRPC_SERVE, postgres_url, str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"grpc://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            optuna.get_all_study_summaries(make_storage(url))
            break
        except Exception:  # noqa: BLE001 - not serving yet
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the gRPC proxy did not start: {server.stderr.read().decode()[-2000:]}") from None
            time.sleep(0.3)
    yield url
    server.terminate()
    server.wait(10)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of a Chromium that kaleido can drive."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    missing_service("Chromium is not installed (apt-get install chromium)")
    raise AssertionError("unreachable")


def run_cli(command: str, *args: str, cwd: Path | None = None, env: dict | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """Run one of kubetune's console scripts as a real subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [str(BIN / command), *args], cwd=cwd, env=full_env, capture_output=True, text=True,
        timeout=timeout,
    )


def sqlite_files_without_optuna_tables(folder: Path) -> list[Path]:
    """An empty file and a SQLite database of other tables: neither is an Optuna storage."""
    import sqlite3

    empty = folder / "empty.db"
    empty.write_bytes(b"")
    other = folder / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    conn.close()
    return [empty, other]
