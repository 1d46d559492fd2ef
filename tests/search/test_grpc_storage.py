"""``grpc://host:port`` storages: Optuna's own gRPC proxy server in front of the real PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import optuna
import pytest
from optuna.trial import TrialState

from kubetune.errors import ConfigError
from kubetune.search.storage import make_storage
from tests.cluster.controlplane import free_port
from tests.conftest import run_cli
from tests.search.conftest import search_section, small_base, write_config

pytestmark = pytest.mark.postgres

SERVE = ("import sys, optuna; optuna.storages.run_grpc_proxy_server("
         "optuna.storages.RDBStorage(sys.argv[1]), host='127.0.0.1', port=int(sys.argv[2]))")


@pytest.fixture
def grpc_url(postgres_url: str) -> Iterator[str]:
    """A gRPC proxy server (Optuna's) serving a fresh PostgreSQL database."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVE, postgres_url, str(port)],
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


def test_ml_search_through_the_grpc_proxy(fast_config, tmp_path, grpc_url, postgres_url):
    config = write_config(tmp_path / "c.yaml", small_base(fast_config, epochs=2, fraction=0.2),
                          search_section(study_name="via-grpc", n_trials=3))
    result = run_cli("ml-search", "--config", str(config), "--storage", grpc_url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # The trials are in PostgreSQL, behind the proxy.
    study = optuna.load_study(study_name="via-grpc", storage=postgres_url)
    assert len(study.trials) == 3
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    assert study.metric_names == ["val_acc"]


@pytest.mark.parametrize("url", ["grpc://", "grpc://host", "grpc://host:port"])
def test_a_grpc_url_needs_host_and_port(url):
    with pytest.raises(ConfigError, match="grpc://HOST:PORT"):
        make_storage(url)
