"""optuna-dashboard in the chart: off by default; on, it reads the same storage Secret."""

from __future__ import annotations

import sys
import types

import pytest
import yaml

from kubetune import __version__
from tests.chart.helpers import CHART, NAMESPACE, SCENARIOS, find, render, render_files

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is part of the [dev] extra")

NAME = "kubetune-dashboard"


def dashboard_container(objects: list[dict]) -> dict:
    (deployment,) = find(objects, "Deployment", NAME)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_off_by_default_and_in_every_other_scenario():
    for scenario in SCENARIOS:
        if scenario != "dashboard":
            objects = render(scenario)
            assert not [o for o in objects if o["metadata"]["name"] == NAME], scenario
    assert "optuna-dashboard" not in render_files({})["kubetune/templates/NOTES.txt"]


def test_on_it_serves_the_storage_secret_of_the_operator():
    objects = render("dashboard")
    container = dashboard_container(objects)
    env = {e["name"]: e for e in container["env"]}
    ref = env["KUBETUNE_STORAGE_URL"]["valueFrom"]["secretKeyRef"]
    (operator,) = find(objects, "Deployment", "kubetune-operator")
    operator_env = {e["name"]: e for c in operator["spec"]["template"]["spec"]["containers"]
                    for e in c.get("env", [])}
    assert ref == {"name": operator_env["KUBETUNE_STORAGE_SECRET"]["value"], "key": "url"}
    assert ref["name"] == "kubetune-postgres"
    assert env["DASHBOARD_PORT"]["value"] == "8080"
    assert container["image"] == _cpu_image()  # the CPU trainer image ships optuna-dashboard
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    (service,) = find(objects, "Service", NAME)
    assert service["spec"]["ports"][0]["port"] == 8080
    assert service["spec"]["selector"] == (
        find(objects, "Deployment", NAME)[0]["spec"]["selector"]["matchLabels"]
    )
    notes = render_files(SCENARIOS["dashboard"])["kubetune/templates/NOTES.txt"]
    assert f"kubectl -n {NAMESPACE} port-forward svc/{NAME} 8080" in notes


def test_an_external_secret_is_what_the_dashboard_reads():
    files = render_files({"dashboard": {"enabled": True, "port": 9000},
                          "postgresql": {"enabled": False}, "storage": {"existingSecret": "my-pg"}})
    objects = [d for path, text in files.items() if not path.endswith(".txt")
               for d in yaml.safe_load_all(text) if d]
    env = {e["name"]: e for e in dashboard_container(objects)["env"]}
    assert env["KUBETUNE_STORAGE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "my-pg", "key": "url"}
    assert env["DASHBOARD_PORT"]["value"] == "9000"


def test_the_container_script_starts_optuna_dashboard_on_kubetune_storage(tmp_path, monkeypatch):
    """Run the rendered script with run_server stubbed: it must build a working storage."""
    import optuna
    import optuna_dashboard

    script = dashboard_container(render("dashboard"))["args"][0]
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    optuna.create_study(study_name="seen", storage=url)
    calls = {}
    fake = types.ModuleType("optuna_dashboard")
    fake.run_server = lambda storage, host, port: calls.update(storage=storage, host=host, port=port)
    monkeypatch.setitem(sys.modules, "optuna_dashboard", fake)
    monkeypatch.setenv("KUBETUNE_STORAGE_URL", url)
    monkeypatch.setenv("DASHBOARD_PORT", "8080")
    exec(compile(script, "<dashboard>", "exec"), {})
    assert calls["host"] == "0.0.0.0" and calls["port"] == 8080
    assert [s.study_name for s in optuna.get_all_study_summaries(calls["storage"])] == ["seen"]
    assert optuna_dashboard.wsgi(calls["storage"])  # the real app accepts that storage


@pytest.mark.parametrize(("values", "path"), [
    ({"dashboard": {"enabled": "yes"}}, "/dashboard/enabled"),
    ({"dashboard": {"port": 0}}, "/dashboard/port"),
    ({"dashboard": {"enabeld": True}}, "/dashboard"),
])
def test_schema_checks_the_dashboard_values(values, path):
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError) as caught:
        chart.validate_schema(chart.merge_values(values))
    assert path in str(caught.value)


def _cpu_image() -> str:
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    image = values["trials"]["cpuImage"]
    return f"{image['repository']}:{image['tag'] or values['image']['tag'] or __version__}"
