"""Pod pieces shared by trial and visualisation Jobs: security, volumes, env.

Every pod meets the Pod Security "restricted" profile: non-root, no privilege
escalation, all capabilities dropped, the runtime's default seccomp profile.
"""

from __future__ import annotations

from typing import Any

from kubetune_operator import names
from kubetune_operator.spec import StudyJobSpec

# The trainer image's user (trainer_image/Dockerfile: USER 10001:10001).
RUN_AS_USER = 10001


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def storage_env(spec: StudyJobSpec) -> list[dict[str, Any]]:
    """The storage URL, only ever by reference to its Secret."""
    ref = spec.storage.secret_ref
    return [
        {
            "name": names.STORAGE_ENV,
            "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
        },
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        # The image's HOME may be read-only for a random user; caches go to /tmp.
        {"name": "HOME", "value": "/tmp"},
        *({"name": var.name, "value": var.value} for var in spec.trials.env),
    ]


def volumes(spec: StudyJobSpec, studyjob: str) -> list[dict[str, Any]]:
    """Config, data, results, /tmp and a bigger /dev/shm for DataLoader workers."""
    result: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": names.config_map_name(studyjob)}},
    ]
    if spec.data is not None and spec.data.persistent_volume_claim:
        result.append({
            "name": "data",
            "persistentVolumeClaim": {"claimName": spec.data.persistent_volume_claim, "readOnly": True},
        })
    elif spec.data is not None:
        result.append({"name": "data", "emptyDir": {}})
    claim = results_claim(spec)
    if claim:
        result.append({"name": "results", "persistentVolumeClaim": {"claimName": claim}})
    else:
        result.append({"name": "results", "emptyDir": {}})
    result.append({"name": "tmp", "emptyDir": {}})
    result.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
    return result


def volume_mounts(spec: StudyJobSpec) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": names.CONFIG_DIR, "readOnly": True},
    ]
    if spec.data is not None:
        data_mount: dict[str, Any] = {"name": "data", "mountPath": names.DATA_DIR}
        if spec.data.persistent_volume_claim:
            data_mount["readOnly"] = True
            if spec.data.sub_path:
                data_mount["subPath"] = spec.data.sub_path
        mounts.append(data_mount)
    results: dict[str, Any] = {"name": "results", "mountPath": names.RESULTS_DIR}
    if spec.output is not None and spec.output.sub_path:
        results["subPath"] = spec.output.sub_path
    mounts.append(results)
    mounts.append({"name": "tmp", "mountPath": "/tmp"})
    mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    return mounts


def sample_init_container(spec: StudyJobSpec, image: str) -> list[dict[str, Any]]:
    """Writes a bundled sample dataset into the pod's /data when the spec asks for one."""
    if spec.data is None or not spec.data.sample:
        return []
    target = spec.data_path
    return [{
        "name": "sample-data",
        "image": image,
        "command": [
            "python", "-c",
            "import sys; from kubetune.data.sample import write_digits; write_digits(sys.argv[1])",
            str(target),
        ],
        "env": [{"name": "HOME", "value": "/tmp"}],
        "resources": SAMPLE_RESOURCES,
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": "data", "mountPath": names.DATA_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }]


def results_claim(spec: StudyJobSpec) -> str | None:
    return spec.output.persistent_volume_claim if spec.output is not None else None


def results_labels(spec: StudyJobSpec) -> dict[str, str]:
    """The label of every pod that mounts the results claim (none without one)."""
    claim = results_claim(spec)
    return {names.LABEL_RESULTS_CLAIM: claim} if claim else {}


def co_location(claim: str) -> dict[str, Any]:
    """Required podAffinity: the node of another pod that mounts ``claim``.

    A ReadWriteOnce volume is attached to one node; a pod elsewhere would wait for it
    (Multi-Attach). The scheduler lets the first such pod, which matches its own
    selector, go anywhere; the volume then attaches there and the rest follow.
    """
    term = {
        "labelSelector": {"matchLabels": {names.LABEL_RESULTS_CLAIM: claim}},
        "topologyKey": "kubernetes.io/hostname",
    }
    return {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}


def pod_spec(
    spec: StudyJobSpec,
    studyjob: str,
    image: str,
    containers: list[dict[str, Any]],
    init_containers: list[dict[str, Any]] | None = None,
    *,
    node_selector: bool = True,
    single_node: bool = False,
) -> dict[str, Any]:
    """A restricted, never-restarting pod spec with the StudyJob's scheduling knobs.

    ``node_selector=False`` keeps tolerations (they only permit) but lets the pod
    run anywhere: the visualisation needs no GPU node. ``single_node``: the results
    claim attaches to one node at a time, so the pod joins the others that mount it.
    """
    trials = spec.trials
    body: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(),
        "containers": containers,
        "volumes": volumes(spec, studyjob),
    }
    inits = [*sample_init_container(spec, image), *(init_containers or [])]
    if inits:
        body["initContainers"] = inits
    if trials.service_account_name:
        body["serviceAccountName"] = trials.service_account_name
    if trials.priority_class_name:
        body["priorityClassName"] = trials.priority_class_name
    if node_selector and trials.node_selector:
        body["nodeSelector"] = dict(trials.node_selector)
    if trials.tolerations:
        body["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in trials.tolerations]
    if trials.image_pull_secrets:
        body["imagePullSecrets"] = [{"name": name} for name in trials.image_pull_secrets]
    claim = results_claim(spec)
    if single_node and claim:
        body["affinity"] = co_location(claim)
    return body


def fixed_resources(*, cpu: str, memory: str, memory_limit: str) -> dict[str, dict[str, str]]:
    """Requests and limits for kubetune's own helper containers."""
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory_limit}}


SAMPLE_RESOURCES = fixed_resources(cpu="250m", memory="256Mi", memory_limit="512Mi")


def container(
    spec: StudyJobSpec, name: str, image: str, command: list[str], *, resources: dict[str, Any]
) -> dict[str, Any]:
    """One container running ``command`` (an argv list, no shell) as the restricted user."""
    body: dict[str, Any] = {
        "name": name,
        "image": image,
        "command": command,
        "env": storage_env(spec),
        "securityContext": container_security_context(),
        "volumeMounts": volume_mounts(spec),
    }
    if spec.trials.image_pull_policy:
        body["imagePullPolicy"] = spec.trials.image_pull_policy
    if resources:
        body["resources"] = resources
    return body
