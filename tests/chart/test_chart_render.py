"""The chart renders with Helm's own engine for every supported value set, and lints clean."""

from __future__ import annotations

import json

import pytest
import yaml

from kubetune import __version__
from tests.chart.helpers import (
    CHART,
    KUBERNETES_VERSIONS,
    NAMESPACE,
    SCENARIOS,
    TEST_PASSWORD,
    find,
    render,
    render_files,
    render_objects,
    with_password,
)

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is part of the [dev] extra")


def operator_pod(objects: list[dict]) -> dict:
    (deployment,) = find(objects, "Deployment", "kubetune-operator")
    return deployment["spec"]["template"]["spec"]


def container(pod: dict, name: str) -> dict:
    (found,) = [c for c in pod["containers"] if c["name"] == name]
    return found


def env(container_spec: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container_spec.get("env", [])}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_scenario_renders(scenario):
    kinds = {o["kind"] for o in render(scenario)}
    assert {"Deployment", "ServiceAccount"} <= kinds
    rbac = {"Role", "RoleBinding"} if SCENARIOS[scenario].get("rbac", {}).get("namespaced") else {
        "ClusterRole", "ClusterRoleBinding"}
    assert rbac <= kinds


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_lint_strict_is_clean(scenario, version):
    report = helm.lint(
        str(CHART), SCENARIOS[scenario], strict=True, namespace=NAMESPACE,
        kube_version=f"v{version}.0",
    )
    # Severity 1 is informational ("icon is recommended"); 2+ are warnings and errors.
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], problems or report["errors"]


def test_chart_kube_version_floor_is_the_oldest_validated_version():
    with helm.Chart.load(CHART) as chart:
        assert chart.metadata["kubeVersion"] == f">={KUBERNETES_VERSIONS[0]}.0-0"


@pytest.mark.parametrize(
    ("values", "path"),
    [
        ({"rbac": {"namespaced": "yes"}}, "/rbac/namespaced"),
        ({"operator": {"healthPort": "8080"}}, "/operator/healthPort"),
        ({"operator": {"maxJobsPerStudyJob": 0}}, "/operator/maxJobsPerStudyJob"),
        ({"results": {"accessModes": "ReadWriteMany"}}, "/results/accessModes"),
        ({"postgresql": {"enabled": 1}}, "/postgresql/enabled"),
        ({"tensorboard": {"enabled": True, "prot": 6006}}, "/tensorboard"),
        ({"grpcProxy": {"replicas": 0}}, "/grpcProxy/replicas"),
        ({"trials": {"resources": {"limits": {"nvidia.com/gpu": "one"}}}}, "/trials/resources"),
    ],
)
def test_schema_rejects_wrong_values(values, path):
    with helm.Chart.load(CHART) as chart:
        with pytest.raises(helm.HelmValuesError) as caught:
            chart.validate_schema(chart.merge_values(values))
        # Rendering (helm install/template) applies the same schema.
        with pytest.raises(helm.HelmValuesError):
            chart.render(values, name="kubetune", namespace=NAMESPACE)
    assert path in str(caught.value)


def test_defaults_and_gpu_values_pass_the_schema():
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(chart.values)
        chart.validate_schema(chart.merge_values(SCENARIOS["gpu"]))


def comment_above(lines: list[str], index: int) -> list[str]:
    block = []
    while index > 0 and lines[index - 1].strip().startswith("#"):
        index -= 1
        block.insert(0, lines[index].strip())
    return block


def test_every_value_is_documented():
    """Each key has a comment above it; a "# --" comment (helm-docs style) covers its block."""
    lines = (CHART / "values.yaml").read_text(encoding="utf-8").splitlines()
    covers: dict[int, bool] = {}  # indentation -> does that enclosing key document its block
    undocumented = []
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("- "):
            continue
        indent = len(line) - len(line.lstrip())
        covers = {i: c for i, c in covers.items() if i < indent}
        comment = comment_above(lines, index)
        if not comment and not any(covers.values()):
            undocumented.append(stripped.split(":", 1)[0])
        covers[indent] = any(c.startswith("# --") for c in comment)
    assert not undocumented, f"values without a comment above them: {undocumented}"


def test_default_install_has_everything_the_issue_lists():
    objects = render("default")
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert {
        ("Deployment", "kubetune-operator"),
        ("ServiceAccount", "kubetune-operator"),
        ("StatefulSet", "kubetune-postgres"),
        ("Service", "kubetune-postgres"),
        ("Secret", "kubetune-postgres"),
        ("PersistentVolumeClaim", "kubetune-results"),
        ("Service", "kubetune-tensorboard"),
        ("Deployment", "kubetune-tensorboard"),
    } <= names
    (deployment,) = find(objects, "Deployment", "kubetune-operator")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not find(objects, "Deployment", "kubetune-optuna-grpc")


def test_operator_container_contract():
    pod = operator_pod(render("default"))
    operator = container(pod, "operator")
    assert operator["command"] == ["kubetune-operator"]
    assert "--all-namespaces" in operator["args"]
    assert "--liveness=http://0.0.0.0:8080/healthz" in operator["args"]
    assert "--max-jobs-per-studyjob=100" in operator["args"]  # the cap one spec cannot raise
    for probe in ("livenessProbe", "readinessProbe"):
        assert operator[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {"name": "health", "containerPort": 8080, "protocol": "TCP"} in operator["ports"]
    variables = env(operator)
    # The operator reads StudyJobs' Secrets through the API, never from its own env.
    assert not any("valueFrom" in v for v in variables.values())
    assert variables["KUBETUNE_TRIAL_IMAGE"]["value"] == f"kubetune-trainer-cpu:{__version__}"
    assert variables["KUBETUNE_TRAINER_IMAGE_CPU"]["value"] == f"kubetune-trainer-cpu:{__version__}"
    assert variables["KUBETUNE_RESULTS_PVC"]["value"] == "kubetune-results"
    assert variables["KUBETUNE_STORAGE_SECRET"]["value"] == "kubetune-postgres"
    assert variables["KUBETUNE_STORAGE_SECRET_KEY"]["value"] == "url"
    assert "KUBETUNE_TRIAL_DEFAULTS" not in variables
    assert operator["resources"]["limits"] and operator["resources"]["requests"]
    assert operator["image"] == f"kubetune-operator:{__version__}"


def test_postgres_secret_url_points_at_the_service_and_readiness_uses_pg_isready():
    objects = render("default")
    (secret,) = find(objects, "Secret", "kubetune-postgres")
    password = secret["stringData"]["password"]
    assert password == TEST_PASSWORD
    assert secret["stringData"]["url"] == (
        f"postgresql+psycopg://kubetune:{password}@kubetune-postgres.{NAMESPACE}.svc:5432/optuna"
    )
    (statefulset,) = find(objects, "StatefulSet", "kubetune-postgres")
    pg = statefulset["spec"]["template"]["spec"]["containers"][0]
    assert pg["readinessProbe"]["exec"]["command"][0] == "pg_isready"
    assert env(pg)["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "kubetune-postgres", "key": "password"}
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "8Gi"


@pytest.mark.parametrize("password", ["p@ss:w/rd%20+x", "two words", " p@ss w:rd/%2B+% "])
def test_postgres_password_with_url_characters_is_encoded_in_the_url(password):
    # urlquery writes a space as "+", which SQLAlchemy's unquote leaves a "+": the chart
    # must write "%20" (a "+" in the password is already "%2B").
    from sqlalchemy.engine import make_url

    files = render_files({"postgresql": {"auth": {"password": password}}})
    (secret,) = [d for d in yaml.safe_load_all(files["kubetune/templates/postgresql.yaml"])
                 if d and d["kind"] == "Secret"]
    assert secret["stringData"]["password"] == password
    assert make_url(secret["stringData"]["url"]).password == password


def test_gpu_values_switch_trials_to_cuda_on_gpu_nodes():
    variables = env(container(operator_pod(render("gpu")), "operator"))
    assert variables["KUBETUNE_TRIAL_IMAGE"]["value"] == f"kubetune-trainer-cuda:{__version__}"
    # Plots and TensorBoard stay on the CPU image, which has Chromium.
    assert variables["KUBETUNE_TRAINER_IMAGE_CPU"]["value"] == f"kubetune-trainer-cpu:{__version__}"
    defaults = json.loads(variables["KUBETUNE_TRIAL_DEFAULTS"]["value"])
    assert defaults["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in defaults["tolerations"]
    assert defaults["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    (claim,) = find(render("gpu"), "PersistentVolumeClaim", "kubetune-results")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_kueue_values_send_every_studyjob_to_the_local_queue():
    from kubetune_operator.builders import trial_job
    from kubetune_operator.spec import Defaults, parse_spec
    from tests.operator.conftest import digits_spec

    variables = env(container(operator_pod(render("kueue")), "operator"))
    defaults = Defaults.from_environment({"KUBETUNE_TRIAL_DEFAULTS": variables["KUBETUNE_TRIAL_DEFAULTS"]["value"]})
    assert defaults.trials["queueName"] == "team-queue" and "priorityClassName" not in defaults.trials
    job = trial_job({"apiVersion": "kubetune.dev/v1alpha1", "kind": "StudyJob", "metadata": {"name": "sj", "uid": "u"}},
                    parse_spec(digits_spec(), "sj", defaults), "digits", 0, "img")
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-queue"
    assert job["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "research" and job["spec"]["suspend"]
    # The chart lets the operator read Kueue's Workloads.
    rules = [r for role in find(render("kueue"), "ClusterRole") for r in role.get("rules") or []]
    assert {"apiGroups": ["kueue.x-k8s.io"], "resources": ["workloads"], "verbs": ["list"]} in rules


def test_external_postgres_uses_the_existing_secret_and_runs_no_database():
    objects = render("external-postgres")
    assert not find(objects, "StatefulSet") and not find(objects, "Secret")
    variables = env(container(operator_pod(objects), "operator"))
    assert variables["KUBETUNE_STORAGE_SECRET"]["value"] == "my-pg"


def test_external_postgres_without_a_secret_fails_with_a_clear_message():
    with pytest.raises(helm.HelmRenderError, match="storage.existingSecret must name a Secret"):
        render_files({"postgresql": {"enabled": False}})


def test_results_claim_must_be_named_when_not_created():
    with pytest.raises(helm.HelmRenderError, match="results.existingClaim must name"):
        render_files({"results": {"create": False}})
    objects_files = render_files({"results": {"create": False, "existingClaim": "shared-results"}})
    assert "shared-results" in objects_files["kubetune/templates/operator.yaml"]
    assert "PersistentVolumeClaim" not in objects_files["kubetune/templates/results-pvc.yaml"]


def test_namespaced_rbac_watches_only_its_namespaces():
    objects = render("namespaced")
    operator = container(operator_pod(objects), "operator")
    assert f"--namespace={NAMESPACE}" in operator["args"] and "--all-namespaces" not in operator["args"]
    assert [r["metadata"]["namespace"] for r in find(objects, "Role")] == [NAMESPACE]
    two = render("namespaced-two")
    args = container(operator_pod(two), "operator")["args"]
    assert "--namespace=ml-a" in args and "--namespace=ml-b" in args
    assert sorted(r["metadata"]["namespace"] for r in find(two, "Role")) == ["ml-a", "ml-b"]
    assert sorted(b["metadata"]["namespace"] for b in find(two, "RoleBinding")) == ["ml-a", "ml-b"]
    for binding in find(two, "RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kubetune-operator", "namespace": NAMESPACE}]


CLAIM_LABEL = "kubetune.dev/results-claim"
CO_LOCATION = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
    "labelSelector": {"matchLabels": {CLAIM_LABEL: "kubetune-results"}},
    "topologyKey": "kubernetes.io/hostname",
}]}}


def tensorboard_deployment(objects: list[dict]) -> dict:
    (deployment,) = find(objects, "Deployment", "kubetune-tensorboard")
    return deployment


def test_the_operator_pod_mounts_no_results_volume():
    # A ReadWriteOnce claim in the operator's pod would pin the volume to the operator's node.
    for scenario in ("default", "gpu", "no-tensorboard"):
        pod = operator_pod(render(scenario))
        assert [c["name"] for c in pod["containers"]] == ["operator"], scenario
        assert not any("persistentVolumeClaim" in v for v in pod["volumes"]), scenario


def test_tensorboard_runs_in_its_own_deployment_reading_the_results_volume():
    objects = render("default")
    deployment = tensorboard_deployment(objects)
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    template = deployment["spec"]["template"]
    pod = template["spec"]
    board = container(pod, "tensorboard")
    assert "--logdir=/results" in board["args"]
    mount = next(m for m in board["volumeMounts"] if m["name"] == "results")
    assert mount == {"name": "results", "mountPath": "/results", "readOnly": True}
    volume = next(v for v in pod["volumes"] if v["name"] == "results")
    assert volume["persistentVolumeClaim"] == {"claimName": "kubetune-results", "readOnly": True}
    assert template["metadata"]["labels"][CLAIM_LABEL] == "kubetune-results"
    (service,) = find(objects, "Service", "kubetune-tensorboard")
    assert service["spec"]["ports"][0]["port"] == 6006
    assert service["spec"]["ports"][0]["targetPort"] == "tensorboard"
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    operator_labels = find(objects, "Deployment", "kubetune-operator")[0]["spec"]["template"]["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= operator_labels.items()


def test_tensorboard_joins_the_trials_node_on_a_single_node_claim():
    # Default: ReadWriteOnce. The trials' pods carry the same label and term (the operator's
    # builders), so whichever comes first, the rest follow to the node the volume is on.
    pod = tensorboard_deployment(render("default"))["spec"]["template"]["spec"]
    assert pod["affinity"] == CO_LOCATION
    gpu_trials = {"trials": {"nodeSelector": {"nvidia.com/gpu.present": "true"},
                             "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}}
    pod = tensorboard_deployment(render_objects(gpu_trials))["spec"]["template"]["spec"]
    # Started first, it picks a node the trials can use: theirs.
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    assert pod["affinity"] == CO_LOCATION


def test_tensorboard_goes_anywhere_on_a_read_write_many_claim():
    pod = tensorboard_deployment(render("gpu"))["spec"]["template"]["spec"]  # values-gpu: ReadWriteMany
    assert "affinity" not in pod and "nodeSelector" not in pod and "tolerations" not in pod


def test_tensorboard_reads_the_access_modes_of_an_existing_claim_from_results_access_modes():
    # results.accessModes describes the claim in use, created or not: an existing
    # ReadWriteMany claim must not pin TensorBoard (and, through it, the trials) to one node.
    existing = {"create": False, "existingClaim": "shared-results"}
    trials = {"nodeSelector": {"nvidia.com/gpu.present": "true"}}
    many = render_objects({"results": {**existing, "accessModes": ["ReadWriteMany"]}, "trials": trials})
    pod = tensorboard_deployment(many)["spec"]["template"]["spec"]
    assert "affinity" not in pod and "nodeSelector" not in pod
    once = render_objects({"results": existing, "trials": trials})  # default: ReadWriteOnce
    pod = tensorboard_deployment(once)["spec"]["template"]["spec"]
    assert pod["affinity"]["podAffinity"] and pod["nodeSelector"] == trials["nodeSelector"]


def test_a_read_write_once_pod_claim_requires_tensorboard_off():
    # ReadWriteOncePod admits one pod: an always-on TensorBoard holding it would leave
    # every trial Pending. The operator runs trials one after another on such a claim.
    rwop = {"results": {"accessModes": ["ReadWriteOncePod"]}}
    with pytest.raises(helm.HelmRenderError, match=r"tensorboard\.enabled must be false when results\.accessModes"):
        render_files(rwop)
    objects = render_objects({**rwop, "tensorboard": {"enabled": False}})
    assert not find(objects, "Deployment", "kubetune-tensorboard")
    (claim,) = find(objects, "PersistentVolumeClaim", "kubetune-results")
    assert claim["spec"]["accessModes"] == ["ReadWriteOncePod"]


def test_no_tensorboard_values_drop_its_deployment_and_service():
    objects = render("no-tensorboard")
    assert not find(objects, "Deployment", "kubetune-tensorboard")
    assert not find(objects, "Service", "kubetune-tensorboard")


def test_grpc_proxy_fronts_the_storage():
    objects = render("grpc-proxy")
    (deployment,) = find(objects, "Deployment", "kubetune-optuna-grpc")
    proxy = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "run_grpc_proxy_server" in proxy["args"][0]
    assert env(proxy)["KUBETUNE_STORAGE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "kubetune-postgres"
    (service,) = find(objects, "Service", "kubetune-optuna-grpc")
    assert service["spec"]["ports"][0]["port"] == 13000
    (secret,) = find(objects, "Secret", "kubetune-optuna-grpc")
    assert secret["stringData"]["url"] == f"grpc://kubetune-optuna-grpc.{NAMESPACE}.svc:13000"


def test_grpc_proxy_script_compiles():
    objects = render("grpc-proxy")
    (deployment,) = find(objects, "Deployment", "kubetune-optuna-grpc")
    compile(deployment["spec"]["template"]["spec"]["containers"][0]["args"][0], "<proxy>", "exec")


def test_notes_tell_the_next_commands():
    notes = render_files({})["kubetune/templates/NOTES.txt"]
    assert "kubectl -n kubetune port-forward svc/kubetune-tensorboard 6006" in notes
    assert "rollout status deployment/kubetune-operator" in notes
    assert "get studyjobs" in notes
    external = render_files(SCENARIOS["external-postgres"])["kubetune/templates/NOTES.txt"]
    assert "my-pg" in external and "statefulset" not in external


def test_other_release_names_prefix_every_object():
    with helm.Chart.load(CHART) as chart:
        files = chart.render(with_password({}), name="team-a", namespace="ml")
    names = [
        doc["metadata"]["name"]
        for path, text in files.items() if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text) if doc
    ]
    assert names and all(n.startswith("team-a-kubetune") for n in names), names


def test_the_operator_wide_job_cap_is_a_chart_value():
    objects = render_objects({"operator": {"maxJobsPerStudyJob": 12}})
    assert "--max-jobs-per-studyjob=12" in container(operator_pod(objects), "operator")["args"]
