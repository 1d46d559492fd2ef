"""Storage URLs: precedence, masking, heartbeat settings, connection errors."""

from __future__ import annotations

import pickle

import optuna
import pytest

from kubetune.config.search_schema import SearchConfig
from kubetune.errors import ConfigError, KubetuneError, UsageError
from kubetune.search.storage import (
    StorageUrl,
    heartbeat_settings,
    make_storage,
    mask_url,
    require_existing,
    resolve_storage_url,
)


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


def test_the_resolved_url_remembers_where_it_came_from(monkeypatch):
    monkeypatch.delenv("KUBETUNE_STORAGE_URL", raising=False)
    assert resolve_storage_url(None, _search()).source is None  # the default
    assert resolve_storage_url(None, _search("sqlite:///c.db")).source == "search.storage"
    monkeypatch.setenv("KUBETUNE_STORAGE_URL", "sqlite:///env.db")
    assert resolve_storage_url(None, _search("sqlite:///c.db")).source == "$KUBETUNE_STORAGE_URL"
    url = resolve_storage_url("sqlite:///cli.db", _search("sqlite:///c.db"))
    assert url.source == "--storage"
    # Worker processes get it pickled: the source travels with it.
    again = pickle.loads(pickle.dumps(url))
    assert again == "sqlite:///cli.db" and again.source == "--storage"


def _not_a_database(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a database\n")
    return f"sqlite:///{path}", "is not one (file is not a database)"


BAD_URLS = {
    "unparsable": lambda tmp: ("nonsense", "must be a database URL such as sqlite:///optuna_studies.db"),
    "unknown-kind": lambda tmp: ("bogus://x", "must be a sqlite://, postgresql:// or grpc:// URL, "
                                              "but got 'bogus://x' (no database kind 'bogus')"),
    "no-driver": lambda tmp: ("mysql://kt@db/optuna", "'mysql://kt@db/optuna', whose driver is not installed"),
    "no-folder": lambda tmp: (f"sqlite:///{tmp}/missing/dir/x.db",
                              f"must name a SQLite file in an existing folder, but {tmp}/missing/dir does not exist"),
    "a-folder": lambda tmp: (f"sqlite:///{tmp}", f"must name a SQLite database file, but {tmp} is a folder"),
    "not-a-database": _not_a_database,
    "grpc-without-port": lambda tmp: ("grpc://host", "must be grpc://HOST:PORT, but got 'grpc://host'"),
}


@pytest.mark.parametrize("kind", list(BAD_URLS))
@pytest.mark.parametrize("source, error", [
    ("--storage", UsageError), ("$KUBETUNE_STORAGE_URL", ConfigError), ("search.storage", ConfigError),
])
def test_a_bad_url_is_a_one_line_exit_2_error_blaming_its_source(kind, source, error, tmp_path):
    url, expected = BAD_URLS[kind](tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(error) as info:
        make_storage(StorageUrl(url, source))
    message = str(info.value)
    assert message.startswith(f"`{source}` ") and expected in message, message
    assert info.value.exit_code == 2 and "\n" not in message
    assert "sqlalchemy" not in message.lower() and "plugin" not in message.lower()
    if isinstance(info.value, ConfigError):
        assert info.value.path == source
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing created


def test_an_environment_url_is_blamed_on_the_environment(monkeypatch):
    monkeypatch.setenv("KUBETUNE_STORAGE_URL", "nonsense")
    with pytest.raises(ConfigError) as info:
        make_storage(resolve_storage_url(None, _search("sqlite:///c.db")))
    assert str(info.value).startswith("`$KUBETUNE_STORAGE_URL` must be a database URL")
    assert "search.storage" not in str(info.value)


def test_an_explicit_source_wins_and_a_plain_url_blames_no_flag(tmp_path):
    with pytest.raises(UsageError, match=r"^`--storage` must be a sqlite://"):
        make_storage("bogus://x", source="--storage")
    with pytest.raises(ConfigError, match=r"^the storage URL must be a sqlite://"):
        make_storage("bogus://x")


def test_must_exist_refuses_a_missing_sqlite_file_and_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError) as info:
        make_storage(StorageUrl("sqlite:///optuna_studies.db"), must_exist=True)
    assert str(info.value) == ("no Optuna storage at optuna_studies.db (sqlite:///optuna_studies.db): "
                               "run ml-search first or pass --storage")
    with pytest.raises(UsageError, match=r"\(sqlite:///x\.db from --storage\)"):
        require_existing(StorageUrl("sqlite:///x.db", "--storage"))
    assert list(tmp_path.iterdir()) == []
    # Without must_exist (ml-search starting a study) the file is created as before.
    make_storage("sqlite:///optuna_studies.db", heartbeat=False)
    assert (tmp_path / "optuna_studies.db").is_file()


def test_must_exist_opens_an_existing_study_and_lets_memory_through(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    optuna.create_study(study_name="s", storage=url)
    storage = make_storage(url, heartbeat=False, must_exist=True)
    assert optuna.study.get_all_study_names(storage) == ["s"]
    require_existing("sqlite:///:memory:")


@pytest.mark.postgres
def test_must_exist_refuses_a_database_without_optuna_tables_and_creates_none(postgres_url):
    import sqlalchemy

    with pytest.raises(UsageError, match="the database has no Optuna tables"):
        make_storage(StorageUrl(postgres_url, "--storage"), heartbeat=False, must_exist=True)
    engine = sqlalchemy.create_engine(postgres_url)
    try:
        assert sqlalchemy.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_a_server_that_does_not_answer_stays_exit_1(tmp_path):
    with pytest.raises(KubetuneError) as info:
        make_storage(StorageUrl("postgresql://kt:hunter2@127.0.0.1:1/optuna", "--storage"), must_exist=True)
    assert type(info.value) is KubetuneError and info.value.exit_code == 1
    assert "\n" not in str(info.value) and "hunter2" not in str(info.value)
    assert str(info.value).startswith("cannot open storage postgresql+psycopg://kt:***@127.0.0.1:1/optuna: ")


@pytest.mark.postgres
def test_must_exist_opens_a_postgresql_storage(postgres_url):
    optuna.create_study(study_name="pg", storage=postgres_url)
    storage = make_storage(StorageUrl(postgres_url, "--storage"), heartbeat=False, must_exist=True)
    assert optuna.study.get_all_study_names(storage) == ["pg"]


def test_a_port_that_is_not_a_number_is_a_config_error_without_the_password():
    from kubetune.search.storage import mask_url

    assert mask_url("postgresql://kt:hunter2@db:port/optuna") == "postgresql://kt:***@db:port/optuna"
    with pytest.raises(ConfigError) as info:
        make_storage("postgresql://kt:hunter2@db:port/optuna")
    assert "must be a database URL" in str(info.value) and "hunter2" not in str(info.value)


def test_must_exist_leaves_a_sqlite_file_without_optuna_tables_byte_for_byte(tmp_path):
    from tests.conftest import sqlite_files_without_optuna_tables

    empty, other = sqlite_files_without_optuna_tables(tmp_path)
    before = {path: path.read_bytes() for path in (empty, other)}
    for path in before:
        with pytest.raises(UsageError) as info:
            make_storage(StorageUrl(f"sqlite:///{path}", "--storage"), heartbeat=False, must_exist=True)
        assert str(info.value) == (f"no Optuna storage in {path} (sqlite:///{path} from --storage): "
                                   "the file has no Optuna tables; run ml-search first or pass --storage")
    assert {path: path.read_bytes() for path in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db", "other.db"]  # no journal left
    # Without must_exist (ml-search starting a study) Optuna makes its tables there as before.
    make_storage(f"sqlite:///{empty}", heartbeat=False)
    assert empty.stat().st_size > 0


def _missing_database(server: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(server).set(database="kt_nosuchdb").render_as_string(hide_password=False)


@pytest.mark.postgres
@pytest.mark.parametrize("must_exist", [True, False])  # reading commands, and ml-search starting a study
@pytest.mark.parametrize("source, error", [
    ("--storage", UsageError), ("$KUBETUNE_STORAGE_URL", ConfigError), ("search.storage", ConfigError),
])
def test_a_postgresql_database_that_does_not_exist_is_exit_2_blaming_its_source(
        postgres_server_url, source, error, must_exist):
    import sqlalchemy

    url = _missing_database(postgres_server_url)
    with pytest.raises(error) as info:
        make_storage(StorageUrl(url, source), heartbeat=False, must_exist=must_exist)
    message = str(info.value)
    server = sqlalchemy.engine.make_url(url)
    assert message == (
        f"`{source}` names database 'kt_nosuchdb', which does not exist on the PostgreSQL server at "
        f"{server.host}:{server.port or 5432} ({mask_url(url)}); create it or fix the URL"
    )
    assert info.value.exit_code == 2
    if isinstance(info.value, ConfigError):
        assert info.value.path == source


@pytest.mark.postgres
@pytest.mark.parametrize("must_exist", [True, False])
def test_a_login_the_server_refuses_is_exit_2_with_the_servers_reason(postgres_server_url, must_exist):
    from sqlalchemy.engine import make_url

    url = make_url(postgres_server_url).set(username="kt_nosuchrole", password="hunter2")
    url = url.render_as_string(hide_password=False)
    with pytest.raises(UsageError) as info:
        make_storage(StorageUrl(url, "--storage"), heartbeat=False, must_exist=must_exist)
    message = str(info.value)
    assert message.startswith("`--storage` names a login the PostgreSQL server at ")
    assert "refuses: user 'kt_nosuchrole' to database " in message
    # The server's reason: no such role under trust, a failed password under password auth.
    assert message.endswith('role "kt_nosuchrole" does not exist') or "authentication failed" in message
    assert "hunter2" not in message and "\n" not in message and info.value.exit_code == 2


def _wrapped(orig: Exception):
    from sqlalchemy.exc import OperationalError

    return OperationalError("connect", None, orig)


def test_the_servers_sqlstate_decides_when_the_driver_has_one():
    """psycopg gives a SQLSTATE for errors after connecting (start-up errors carry none: libpq
    keeps only their text); where there is one it decides, whatever the text says."""
    import psycopg
    import psycopg.errors as pg

    from kubetune.search.storage import _refused

    url = "postgresql+psycopg://kt:hunter2@db:5432/optuna"
    missing = _refused(url, _wrapped(pg.InvalidCatalogName("base de données « optuna » n'existe pas")), "--storage")
    assert isinstance(missing, UsageError) and "names database 'optuna', which does not exist" in str(missing)
    login = _refused(url, _wrapped(pg.InvalidPassword("FATAL:  échec de l'authentification")), "search.storage")
    assert isinstance(login, ConfigError) and "names a login the PostgreSQL server at db:5432 refuses" in str(login)
    assert "hunter2" not in str(login)
    socket = _refused("postgresql+psycopg:///optuna?host=/run/postgresql",
                      _wrapped(pg.InvalidCatalogName("gone")), "--storage")
    assert "does not exist on the PostgreSQL server at /run/postgresql (" in str(socket), str(socket)
    # A server that is full or starting up answered, but the URL is not wrong: exit 1 as before.
    busy = pg.TooManyConnections('FATAL:  database "optuna" does not exist')  # text is not consulted
    assert _refused(url, _wrapped(busy), "--storage") is None
    refused = psycopg.OperationalError('connection to server at "db", port 5432 failed: Connection refused')
    assert _refused(url, _wrapped(refused), "--storage") is None
