"""Storage URLs: precedence, masking, heartbeat settings, connection errors."""

from __future__ import annotations

import pytest

from kubetune.config.search_schema import SearchConfig
from kubetune.errors import ConfigError, KubetuneError
from kubetune.search.storage import heartbeat_settings, make_storage, mask_url, resolve_storage_url


def _search(storage=None) -> SearchConfig:
    return SearchConfig(study_name="s", storage=storage)


def test_precedence_cli_then_env_then_config_then_default(monkeypatch):
    monkeypatch.delenv("KUBETUNE_STORAGE_URL", raising=False)
    assert resolve_storage_url(None, _search()) == "sqlite:///optuna_studies.db"
    assert resolve_storage_url(None, _search("sqlite:///c.db")) == "sqlite:///c.db"
    monkeypatch.setenv("KUBETUNE_STORAGE_URL", "sqlite:///env.db")
    assert resolve_storage_url(None, _search("sqlite:///c.db")) == "sqlite:///env.db"
    assert resolve_storage_url("sqlite:///cli.db", _search("sqlite:///c.db")) == "sqlite:///cli.db"


def test_mask_url_hides_only_the_password():
    assert mask_url("postgresql+psycopg://kt:hunter2@db:5432/optuna") == \
        "postgresql+psycopg://kt:***@db:5432/optuna"
    assert mask_url("sqlite:///optuna_studies.db") == "sqlite:///optuna_studies.db"


def test_unreachable_storage_is_one_line_without_the_password():
    with pytest.raises(KubetuneError) as info:
        make_storage("postgresql://kt:hunter2@127.0.0.1:1/optuna")
    assert "hunter2" not in str(info.value)
    assert "kt:***@127.0.0.1:1" in str(info.value)


def test_heartbeat_settings_from_the_environment(monkeypatch):
    monkeypatch.delenv("KUBETUNE_HEARTBEAT_INTERVAL", raising=False)
    monkeypatch.delenv("KUBETUNE_HEARTBEAT_GRACE", raising=False)
    assert heartbeat_settings() == (10, 30)
    monkeypatch.setenv("KUBETUNE_HEARTBEAT_INTERVAL", "2")
    monkeypatch.setenv("KUBETUNE_HEARTBEAT_GRACE", "1")
    assert heartbeat_settings() == (2, 3)  # the grace period always outlasts one interval
    monkeypatch.setenv("KUBETUNE_HEARTBEAT_INTERVAL", "soon")
    with pytest.raises(ConfigError, match="KUBETUNE_HEARTBEAT_INTERVAL must be a positive"):
        heartbeat_settings()
