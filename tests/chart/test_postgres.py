"""The chart's PostgreSQL: a password stable across renders, max_connections sized for the trials."""

from __future__ import annotations

import pytest
import yaml

from kubetune.search.storage import MAX_OVERFLOW, POOL_SIZE
from kubetune_operator.names import WORKERS
from tests.chart.helpers import CHART, find, render_files, render_objects

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is part of the [dev] extra")

VALUES = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))


def postgres_container(objects: list[dict]) -> dict:
    (statefulset,) = find(objects, "StatefulSet", "kubetune-postgres")
    return statefulset["spec"]["template"]["spec"]["containers"][0]


def server_settings(objects: list[dict]) -> dict[str, str]:
    """The ``-c name=value`` settings on the postgres command line."""
    args = postgres_container(objects)["args"]
    assert args[0] == "postgres"
    return dict(value.split("=", 1) for flag, value in zip(args[1::2], args[2::2], strict=True) if flag == "-c")


def test_without_a_password_rendering_fails_with_one_line_naming_the_values():
    with pytest.raises(helm.HelmRenderError) as raised:
        render_files({}, password=None)
    message = str(raised.value)
    assert "postgresql.auth.password or postgresql.auth.existingSecret must be set" in message
    assert len(message.strip().splitlines()) == 1


def test_two_renders_with_the_same_values_give_the_same_secret():
    values = {"postgresql": {"auth": {"password": "s3cret-from-the-vault"}}}
    first, second = (find(render_objects(values, password=None), "Secret", "kubetune-postgres") for _ in range(2))
    assert first == second
    assert first[0]["stringData"]["password"] == "s3cret-from-the-vault"


def test_an_existing_secret_replaces_the_charts_secret_everywhere():
    objects = render_objects({"postgresql": {"auth": {"existingSecret": "team-db"}},
                              "dashboard": {"enabled": True}, "grpcProxy": {"enabled": True}}, password=None)
    assert not find(objects, "Secret", "kubetune-postgres")
    pg_env = {e["name"]: e for e in postgres_container(objects)["env"]}
    assert pg_env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "team-db", "key": "password"}
    refs = {
        (d["metadata"]["name"], e["valueFrom"]["secretKeyRef"]["name"])
        for d in find(objects, "Deployment")
        for c in d["spec"]["template"]["spec"]["containers"]
        for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert refs == {("kubetune-dashboard", "team-db"), ("kubetune-optuna-grpc", "team-db")}
    (operator,) = find(objects, "Deployment", "kubetune-operator")
    operator_env = {e["name"]: e.get("value") for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert operator_env["KUBETUNE_STORAGE_SECRET"] == "team-db"


def test_a_password_and_an_existing_secret_are_exclusive():
    with pytest.raises(helm.HelmRenderError, match="postgresql.auth.password must be empty"):
        render_files({"postgresql": {"auth": {"password": "x", "existingSecret": "team-db"}}}, password=None)


@pytest.mark.parametrize("extra", [{}, {"dashboard": {"enabled": True}}, {"grpcProxy": {"enabled": True}},
                                   {"postgresql": {"connections": {"parallelism": 100}}}],
                         ids=["default", "dashboard", "grpc-proxy", "parallelism-100"])
def test_max_connections_covers_the_documented_parallelism(extra):
    """Every process that opens kubetune's storage holds POOL_SIZE + MAX_OVERFLOW connections
    at most: each trial pod, the two visualise containers, the dashboard; the operator one per
    handler thread; the gRPC proxy one per worker thread. PostgreSQL's own default (100)
    would refuse some."""
    documented = VALUES["postgresql"]["connections"]["parallelism"]
    parallelism = extra.get("postgresql", {}).get("connections", {}).get("parallelism", documented)
    processes = parallelism + 2 + (1 if extra.get("dashboard") else 0)
    needed = processes * (POOL_SIZE + MAX_OVERFLOW) + WORKERS
    if extra.get("grpcProxy"):
        needed += VALUES["grpcProxy"]["replicas"] * VALUES["grpcProxy"]["threads"]
    settings = server_settings(render_objects(extra))
    assert int(settings["max_connections"]) >= needed + 3  # superuser_reserved_connections
    assert int(settings["tcp_keepalives_idle"]) <= 120  # slots of dead pods come back


def test_max_connections_can_be_set_outright():
    settings = server_settings(render_objects({"postgresql": {"connections": {"maxConnections": 500}}}))
    assert settings["max_connections"] == "500"
