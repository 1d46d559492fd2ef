"""Drive a kind cluster with the real tools: docker, kind, kubectl, helm.

Everything is a subprocess call of the command a person would type, so a failure
reads like a terminal session. Nothing here runs unless the e2e tests do.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.polling import wait_until

ROOT = Path(__file__).resolve().parents[3]
CLUSTER = os.environ.get("KUBETUNE_E2E_CLUSTER", "kubetune-e2e")
NAMESPACE = os.environ.get("KUBETUNE_E2E_NAMESPACE", "kubetune")
# kindest/node image: pick the Kubernetes version (e.g. kindest/node:v1.29.x for the oldest claimed).
NODE_IMAGE = os.environ.get("KUBETUNE_E2E_NODE_IMAGE", "")
TRAINER_IMAGE = "kubetune-trainer:cpu"
OPERATOR_IMAGE = "kubetune-operator:e2e"
TOOLS = ("docker", "kind", "kubectl", "helm")


def missing_tools() -> str | None:
    """Why the e2e tests cannot run here, or None when they can."""
    absent = [tool for tool in TOOLS if shutil.which(tool) is None]
    if absent:
        return f"{', '.join(absent)} not installed; the kind e2e tests need docker, kind, kubectl and helm"
    try:
        info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                              capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "`docker info` timed out: no Docker engine reachable"
    if info.returncode != 0:
        reason = (info.stderr.strip().splitlines() or ["no output"])[-1]
        return f"no Docker engine reachable (`docker info` failed: {reason})"
    return None


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run(*args: str, check: bool = True, timeout: float = 1800, input: str | None = None) -> Result:
    """Run a command in the repository root; on failure raise with its output."""
    done = subprocess.run(list(args), cwd=ROOT, capture_output=True, text=True, timeout=timeout, input=input)
    result = Result(done.returncode, done.stdout, done.stderr)
    if check and done.returncode != 0:
        raise AssertionError(
            f"`{' '.join(args)}` exited {done.returncode}\n--- stdout\n{done.stdout[-4000:]}"
            f"\n--- stderr\n{done.stderr[-4000:]}"
        )
    return result


def kubectl(*args: str, check: bool = True, timeout: float = 600, input: str | None = None) -> Result:
    return run("kubectl", "--context", f"kind-{CLUSTER}", *args, check=check, timeout=timeout, input=input)


def kubectl_json(*args: str) -> dict:
    return json.loads(kubectl(*args, "-o", "json").stdout)


def cluster_exists() -> bool:
    return CLUSTER in run("kind", "get", "clusters", check=False).stdout.split()


def create_cluster() -> bool:
    """Create the cluster unless it exists; True when this call created it."""
    if cluster_exists():
        return False
    args = ["kind", "create", "cluster", "--name", CLUSTER, "--wait", "5m"]
    if NODE_IMAGE:
        args += ["--image", NODE_IMAGE]
    run(*args)
    return True


def delete_cluster() -> None:
    run("kind", "delete", "cluster", "--name", CLUSTER, check=False)


def build_and_load_images(trainer_aliases: tuple[str, ...] = ()) -> None:
    """The CPU trainer image and the operator image, built from the repo root, loaded into kind.

    ``trainer_aliases`` are extra names for the trainer image (e.g. the image an example
    StudyJob names), so the example runs unchanged on the locally built image.
    """
    run("docker", "build", "-f", "trainer_image/Dockerfile", "--target", "cpu", "-t", TRAINER_IMAGE, ".",
        timeout=3600)
    run("docker", "build", "-f", "operator/Dockerfile", "-t", OPERATOR_IMAGE, ".", timeout=1800)
    for alias in trainer_aliases:
        run("docker", "tag", TRAINER_IMAGE, alias)
    run("kind", "load", "docker-image", TRAINER_IMAGE, *trainer_aliases, OPERATOR_IMAGE,
        "--name", CLUSTER, timeout=1800)


def wait_for(predicate, *, timeout: float, interval: float = 10.0, what: str):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    return wait_until(predicate, timeout, what, interval)


def diagnostics(namespace: str) -> str:
    """What a person would look at when a study does not finish."""
    parts = []
    for args in (
        ("get", "studyjobs,jobs,pods,pvc", "-o", "wide"),
        ("describe", "studyjobs"),
        ("get", "events", "--sort-by=.lastTimestamp"),
        ("logs", "deployment/kubetune-operator", "-c", "operator", "--tail=200"),
    ):
        result = kubectl("-n", namespace, *args, check=False)
        parts.append(f"$ kubectl -n {namespace} {' '.join(args)}\n{result.stdout}{result.stderr}")
    return "\n".join(parts)[-20000:]
