"""The pure builders: Jobs and ConfigMaps as plain dicts, checked against Kubernetes' schemas."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from kubetune.config import validate_config
from kubetune_operator import names
from kubetune_operator.builders import best_config_map, config_map, trial_job, visualise_job
from kubetune_operator.spec import SpecError, parse_spec, resolve_config
from tests.operator.schema_tools import EXAMPLES, example_documents

OWNER = {
    "apiVersion": "kubetune.dev/v1alpha1", "kind": "StudyJob",
    "metadata": {"name": "digits-lr", "namespace": "ml", "uid": "1234-abcd"},
}


def _example(name: str) -> dict:
    path = next(p for p in EXAMPLES if p.name == name)
    return next(d for d in example_documents(path) if d["kind"] == "StudyJob")["spec"]


def _spec(name: str = "digits-studyjob.yaml", **change):
    raw = _example(name)
    raw.update(change)
    spec = parse_spec(raw, "digits-lr")
    return spec, resolve_config(raw["config"], spec).config


def _pods(job: dict) -> dict:
    return job["spec"]["template"]["spec"]


def _validate(obj: dict) -> None:
    kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)


def assert_restricted(pod: dict) -> None:
    """Pod Security Standards, "restricted" profile (the fields it checks)."""
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    for volume in pod["volumes"]:
        assert set(volume) - {"name"} <= {"configMap", "emptyDir", "persistentVolumeClaim", "secret"}
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert context.get("privileged") is not True
        assert context.get("runAsUser") != 0 and pod["securityContext"].get("runAsUser") != 0


def test_trial_job_runs_one_trial_as_an_argv_list():
    raw = _example("digits-studyjob.yaml")
    raw["trials"]["image"] = "kubetune-trainer-cpu:pinned"
    spec, config = parse_spec(raw, "digits-lr"), resolve_config(raw["config"], parse_spec(raw, "digits-lr")).config
    job = trial_job(OWNER, spec, config.search.study_name, 7, "default-image")
    _validate(job)
    assert job["metadata"]["name"] == "digits-lr-trial-7"
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 1800
    pod = _pods(job)
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["command"] == [
        "ml-train", "--config", "/etc/kubetune/config.yaml", "--trial", "digits-lr:7", "--no-progress",
        "--set", "data.path=/data/digits", "--set", "logging.output_dir=/results",
    ]
    assert container["image"] == "kubetune-trainer-cpu:pinned"  # spec's, not the default
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "1Gi"},
                                      "limits": {"cpu": "2", "memory": "2Gi"}}
    assert_restricted(pod)


def test_spec_trials_command_is_the_search_command_the_trial_pods_read():
    raw = _example("digits-studyjob.yaml")
    raw["trials"].update(image="registry.example.com/team/train:1.0", command=["python", "train.py", "--amp"])
    spec = parse_spec(raw, "digits-lr")
    config = resolve_config(raw["config"], spec).config
    read_by_pods = yaml.safe_load(config_map(OWNER, config)["data"][names.CONFIG_KEY])
    assert read_by_pods["search"]["command"] == ["python", "train.py", "--amp"]
    with pytest.raises(Exception, match="command"):
        parse_spec({**raw, "trials": {**raw["trials"], "command": []}}, "digits-lr")
    raw["config"]["search"]["cross_validation"] = {"enabled": True}
    with pytest.raises(SpecError, match="cross_validation does not apply to a command"):
        resolve_config(raw["config"], spec)


def test_the_custom_script_studyjob_example_is_a_valid_spec():
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "custom_script" / "studyjob.yaml"
    raw = yaml.safe_load(path.read_text())["spec"]
    spec = parse_spec(raw, "digits-script")
    config = resolve_config(raw["config"], spec).config
    assert config.search.command == ["python", "train.py"]
    _validate(trial_job(OWNER, spec, "digits-script", 0, "default-image"))


def test_trial_job_takes_the_storage_url_only_from_the_secret():
    spec, config = _spec()
    env = _pods(trial_job(OWNER, spec, "s", 0, "img"))["containers"][0]["env"]
    storage = [e for e in env if e["name"] == "KUBETUNE_STORAGE_URL"]
    assert storage == [{"name": "KUBETUNE_STORAGE_URL",
                        "valueFrom": {"secretKeyRef": {"name": "kubetune-postgres", "key": "url"}}}]


def test_trial_job_is_owned_labelled_and_mounts_config_data_results():
    spec, config = _spec("gpu-studyjob.yaml")
    job = trial_job(OWNER, spec, "cifar", 3, "img")
    _validate(job)
    assert job["metadata"]["ownerReferences"] == [{
        "controller": True, "blockOwnerDeletion": True, "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "StudyJob", "name": "digits-lr", "uid": "1234-abcd"}]
    assert job["metadata"]["namespace"] == "ml"
    labels = job["metadata"]["labels"]
    assert labels[names.LABEL_STUDYJOB] == "digits-lr" and labels[names.LABEL_TRIAL] == "3"
    assert labels[names.LABEL_MANAGED_BY] == names.MANAGED_BY
    assert job["spec"]["template"]["metadata"]["labels"] == labels
    pod = _pods(job)
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["/etc/kubetune"]["readOnly"] is True
    assert mounts["/data"] == {"name": "data", "mountPath": "/data", "readOnly": True, "subPath": "cifar10"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"] == {"name": "config", "configMap": {"name": "digits-lr-config"}}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "datasets", "readOnly": True}
    assert volumes["results"]["persistentVolumeClaim"] == {"claimName": "kubetune-results"}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory"}
    assert_restricted(pod)


def test_gpu_trial_job_carries_gpu_limits_node_selector_and_tolerations():
    spec, _ = _spec("gpu-studyjob.yaml")
    pod = _pods(trial_job(OWNER, spec, "cifar", 0, "img"))
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_sample_data_is_written_by_an_init_container():
    spec, _ = _spec()
    pod = _pods(trial_job(OWNER, spec, "s", 0, "img"))
    (init,) = pod["initContainers"]
    assert init["command"][:2] == ["python", "-c"] and init["command"][-1] == "/data/digits"
    assert set(init["resources"]) == {"requests", "limits"}  # runs under a ResourceQuota
    assert {"name": "data", "emptyDir": {}} in pod["volumes"]
    assert_restricted(pod)


def test_default_image_when_the_spec_names_none():
    raw = _example("digits-studyjob.yaml")
    assert "image" not in raw["trials"]  # the examples take the chart's images
    spec = parse_spec(raw, "digits-lr")
    job = trial_job(OWNER, spec, "s", 0, "registry/trainer:1")
    assert _pods(job)["containers"][0]["image"] == "registry/trainer:1"


def test_visualise_job_exports_then_plots_anywhere():
    spec, config = _spec("gpu-studyjob.yaml")
    job = visualise_job(OWNER, spec, "cifar", 40, "img")
    _validate(job)
    assert job["metadata"]["name"] == "digits-lr-visualise"
    assert job["metadata"]["annotations"][names.ANNOTATION_FINISHED] == "40"
    pod = _pods(job)
    (export,) = pod["initContainers"]
    (plots,) = pod["containers"]
    assert export["command"] == ["ml-search", "--config", "/etc/kubetune/config.yaml", "--export-only",
                                 "--output-dir", "/results/digits-lr"]
    assert plots["command"] == ["ml-visualise", "--mode", "search", "--config",
                                "/etc/kubetune/config.yaml", "--output", "/results/digits-lr/plots",
                                "--format", "both"]
    # The CPU image given, not the spec's CUDA image; requests and limits, but no GPU.
    assert {c["image"] for c in (export, plots)} == {"img"} and spec.trials.image != "img"
    for helper in (export, plots):
        assert set(helper["resources"]) == {"requests", "limits"}
        assert "nvidia.com/gpu" not in helper["resources"]["limits"]
    assert "nodeSelector" not in pod and pod["tolerations"]
    assert_restricted(pod)


CO_LOCATION = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
    "labelSelector": {"matchLabels": {names.LABEL_RESULTS_CLAIM: "kubetune-results"}},
    "topologyKey": "kubernetes.io/hostname",
}]}}


@pytest.mark.parametrize("build", [
    lambda spec, **kw: trial_job(OWNER, spec, "cifar", 0, "img", **kw),
    lambda spec, **kw: visualise_job(OWNER, spec, "cifar", 4, "img", **kw),
], ids=["trial", "visualise"])
def test_pods_of_a_single_node_claim_require_each_others_node(build):
    spec, _ = _spec("gpu-studyjob.yaml")
    job = build(spec, single_node=True)
    _validate(job)
    assert job["spec"]["template"]["metadata"]["labels"][names.LABEL_RESULTS_CLAIM] == "kubetune-results"
    assert _pods(job)["affinity"] == CO_LOCATION
    # A ReadWriteMany claim: the label stays (TensorBoard may look for it), no affinity.
    shared = build(spec)
    assert shared["spec"]["template"]["metadata"]["labels"][names.LABEL_RESULTS_CLAIM] == "kubetune-results"
    assert "affinity" not in _pods(shared)


def test_pods_without_a_results_claim_carry_no_claim_label_or_affinity():
    raw = _example("gpu-studyjob.yaml")
    del raw["output"]
    job = trial_job(OWNER, parse_spec(raw, "digits-lr"), "cifar", 0, "img", single_node=True)
    assert names.LABEL_RESULTS_CLAIM not in job["spec"]["template"]["metadata"]["labels"]
    assert "affinity" not in _pods(job)


def test_config_map_holds_the_validated_config_for_the_pod():
    spec, config = _spec()
    body = config_map(OWNER, config)
    _validate(body)
    assert body["metadata"]["name"] == "digits-lr-config"
    assert body["metadata"]["ownerReferences"][0]["uid"] == "1234-abcd"
    mounted = validate_config(yaml.safe_load(body["data"]["config.yaml"]))
    assert mounted.data.path == "/data/digits" and mounted.logging.output_dir == "/results"
    assert mounted.search.study_name == "digits-lr"


def test_best_config_map_is_a_complete_config():
    spec, config = _spec()
    from kubetune.search.results import best_config_dict

    best = best_config_dict(config, {"optimizer.lr": 0.0123, "training.batch_size": 32})
    body = best_config_map(OWNER, best, trial=5, value=0.97)
    _validate(body)
    loaded = validate_config(yaml.safe_load(body["data"]["best_config.yaml"]))
    assert loaded.optimizer.lr == pytest.approx(0.0123) and loaded.training.batch_size == 32
    assert loaded.search is None
    assert body["metadata"]["annotations"][names.ANNOTATION_BEST_TRIAL] == "5"


def test_best_config_map_holds_the_front_s_configs_within_a_size_cap():
    from kubetune_operator.builders.configmaps import FRONT_CONFIGS_BYTES

    front = [(7, "model: {dropout: 0.1}\n"), (3, "model: {dropout: 0.2}\n")]
    body = best_config_map(OWNER, "# picked\nmodel: {dropout: 0.1}\n", trial=7, value=0.97, front=front)
    _validate(body)
    assert sorted(body["data"]) == ["best_config.yaml", "pareto-trial-3.yaml", "pareto-trial-7.yaml"]
    assert body["data"]["best_config.yaml"].startswith("# picked")
    assert body["metadata"]["annotations"][names.ANNOTATION_FRONT_CONFIGS] == "2/2"
    # Configs past the cap stay out, best first kept; the whole stays under a ConfigMap's 1 MiB.
    big = [(n, "x" * (FRONT_CONFIGS_BYTES // 3)) for n in range(5)]
    capped = best_config_map(OWNER, "a: 1\n", trial=0, value=0.5, front=big)
    assert sorted(capped["data"]) == ["best_config.yaml", *(f"pareto-trial-{n}.yaml" for n in range(3))]
    assert capped["metadata"]["annotations"][names.ANNOTATION_FRONT_CONFIGS] == "3/5"
    assert sum(len(v) for v in capped["data"].values()) < 1024 * 1024


def test_jobs_for_kueue_name_the_queue_and_priority_and_are_created_suspended():
    raw = _example("digits-studyjob.yaml")
    raw["trials"] = {**raw.get("trials", {}), "queueName": "team-a", "priorityClassName": "research",
                     "workloadPriorityClassName": "high"}
    spec = parse_spec(raw, "digits-lr")
    for job in (trial_job(OWNER, spec, "digits", 3, "trainer:1"), visualise_job(OWNER, spec, "digits", 4, "cpu:1")):
        _validate(job)
        labels = job["metadata"]["labels"]
        assert labels[names.LABEL_KUEUE_QUEUE] == "team-a" and labels[names.LABEL_KUEUE_PRIORITY] == "high"
        assert job["spec"]["suspend"] is True and _pods(job)["priorityClassName"] == "research"
        assert names.LABEL_KUEUE_QUEUE not in job["spec"]["template"]["metadata"]["labels"]
    # A pod Kueue stops by suspending the Job (SIGTERM, exit 143) does not fail the trial Job.
    rules = trial_job(OWNER, spec, "digits", 3, "trainer:1")["spec"]["podFailurePolicy"]["rules"]
    assert rules[-1] == {"action": "Ignore", "onExitCodes": {"containerName": "trial", "operator": "In",
                                                             "values": [143]}}
    plain = trial_job(OWNER, _spec()[0], "digits", 3, "trainer:1")
    assert "suspend" not in plain["spec"] and "priorityClassName" not in _pods(plain)
    assert not any(key.startswith("kueue.x-k8s.io/") for key in plain["metadata"]["labels"])
