"""``grpc://host:port`` storages: Optuna's own gRPC proxy server in front of the real PostgreSQL."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from kubetune.errors import ConfigError
from kubetune.search.storage import make_storage
from tests.conftest import run_cli
from tests.search.conftest import search_section, small_base, write_config

pytestmark = pytest.mark.postgres


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
