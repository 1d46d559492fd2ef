"""The Dockerfiles, read without Docker: pinned bases, non-root users, the operator without torch."""

from __future__ import annotations

import fnmatch
import importlib.metadata as metadata
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.chart.helpers import ROOT

tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml with tomllib")

TRAINER = ROOT / "trainer_image" / "Dockerfile"
OPERATOR = ROOT / "operator" / "Dockerfile"
IMAGE_UID = "10001"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages(dockerfile: Path) -> list[dict]:
    """Each FROM stage: its base image (ARG defaults substituted), name and instructions."""
    args = {}
    found: list[dict] = []
    for word, rest in instructions(dockerfile):
        if word == "ARG" and not found and "=" in rest:
            key, value = rest.split("=", 1)
            args[key] = value
        elif word == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            found.append({"base": base, "name": name, "body": []})
        elif found:
            found[-1]["body"].append((word, rest))
    return found


@pytest.mark.parametrize("dockerfile", [TRAINER, OPERATOR], ids=["trainer", "operator"])
def test_bases_are_pinned_by_tag(dockerfile):
    for stage in stages(dockerfile):
        repository, _, tag = stage["base"].rpartition(":")
        assert repository and tag and tag != "latest", stage["base"]
        assert re.search(r"\d", tag), f"{stage['base']}: pin a versioned tag"


@pytest.mark.parametrize("dockerfile", [TRAINER, OPERATOR], ids=["trainer", "operator"])
def test_images_run_as_the_numeric_non_root_user(dockerfile):
    for stage in stages(dockerfile):
        users = [rest for word, rest in stage["body"] if word == "USER"]
        assert users and users[-1] == f"{IMAGE_UID}:{IMAGE_UID}", (stage["name"], users)
        created = " ".join(rest for word, rest in stage["body"] if word == "RUN")
        assert f"--uid {IMAGE_UID}" in created


def test_trainer_has_a_cpu_target_and_builds_cuda_by_default():
    found = stages(TRAINER)
    names = [s["name"] for s in found]
    assert "cpu" in names
    assert found[-1]["name"] == "cuda", "the last stage is what `docker build` builds by default"
    assert found[-1]["base"].startswith(("nvidia/cuda:", "pytorch/pytorch:"))
    (cpu,) = [s for s in found if s["name"] == "cpu"]
    cpu_runs = " ".join(rest for word, rest in cpu["body"] if word == "RUN")
    assert "download.pytorch.org/whl/cpu" in cpu_runs
    assert "chromium" in cpu_runs, "kaleido's PNG export needs Chromium in the CPU image"


def test_trainer_installs_the_search_and_timm_extras_and_checks_the_commands():
    for stage in stages(TRAINER):
        runs = " ".join(rest for word, rest in stage["body"] if word == "RUN")
        assert '"/src[optuna,timm]"' in runs  # model.architecture: timm/<name> works in a trial pod
        for command in ("ml-train", "ml-search", "ml-visualise"):
            assert f"{command} --help" in runs


def test_the_commands_are_console_scripts():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert {"ml-train", "ml-search", "ml-visualise", "ml-init-config", "kubetune-operator"} <= set(scripts)


def _closure(requirements: list[str], extras_of: dict[str, set[str]] | None = None) -> set[str]:
    """Every distribution the requirements pull in, by the installed metadata."""
    seen: set[str] = set()
    todo = [(Requirement(r), set()) for r in requirements]
    while todo:
        requirement, _ = todo.pop()
        name = canonicalize_name(requirement.name)
        key = name + "[" + ",".join(sorted(requirement.extras)) + "]"
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # not installed here: an optional platform dependency
        for raw in dist.requires or []:
            child = Requirement(raw)
            environments = [{"extra": e} for e in requirement.extras] or [{"extra": ""}]
            if child.marker is None or any(child.marker.evaluate(env) for env in environments):
                todo.append((child, set()))
    return {k.split("[")[0] for k in seen}


def test_operator_extra_does_not_pull_torch():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["operator"]
    assert not any("kubetune" in r for r in requirements), "the operator extra must not include other extras"
    pulled = _closure(requirements)
    assert {"kopf", "optuna", "kubernetes"} <= pulled
    assert not pulled & {"torch", "torchvision", "tensorboard", "nvidia-cudnn-cu12"}, pulled


def test_closure_sees_torch_through_the_training_extra():
    # The check above would notice: the training extra does pull torch.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert "torch" in _closure(project["optional-dependencies"]["train"])


def ignore_patterns(path: Path) -> list[str]:
    return [
        line.strip() for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]


def sent(relative: str, patterns: list[str]) -> bool:
    """Whether the build context keeps ``relative`` (last matching pattern wins)."""
    keep = True
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.removeprefix("**/")
        if any(fnmatch.fnmatch(p, body) or fnmatch.fnmatch(parts[-1], body) for p in prefixes):
            keep = negate
    return keep


@pytest.mark.parametrize("dockerfile", [TRAINER, OPERATOR], ids=["trainer", "operator"])
def test_copied_sources_exist_and_reach_the_build_context(dockerfile):
    patterns = ignore_patterns(dockerfile.with_name("Dockerfile.dockerignore"))
    root_patterns = ignore_patterns(ROOT / ".dockerignore")
    for stage in stages(dockerfile):
        for word, rest in stage["body"]:
            if word != "COPY" or rest.startswith("--from"):
                continue
            for source in rest.split()[:-1]:
                assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source} (context: repo root)"
                assert sent(source, patterns), f"{source} is excluded by {dockerfile.name}.dockerignore"
                assert sent(source, root_patterns), f"{source} is excluded by .dockerignore"
    assert not sent("tests/conftest.py", patterns) and not sent(".venv/bin/python", patterns)


OCI_KEYS = {"title", "description", "version", "revision", "created", "source", "licenses"}


def _oci_keys(text: str) -> set[str]:
    return set(re.findall(r"org\.opencontainers\.image\.([a-z]+)=", text))


def _make(*args: str) -> list[str]:
    """The commands ``make -n`` would run (nothing is built or pushed)."""
    out = subprocess.run(["make", "-s", "-n", "--no-print-directory", *args], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.startswith("docker ")]


def _chart_images() -> set[str]:
    values = yaml.safe_load((ROOT / "charts" / "kubetune" / "values.yaml").read_text(encoding="utf-8"))
    gpu = yaml.safe_load((ROOT / "charts" / "kubetune" / "values-gpu.yaml").read_text(encoding="utf-8"))
    return {values["operator"]["image"]["repository"], values["trials"]["image"]["repository"],
            values["trials"]["cpuImage"]["repository"], gpu["trials"]["image"]["repository"]}


def test_make_images_builds_what_the_chart_pulls_with_its_app_version_and_labels():
    chart = yaml.safe_load((ROOT / "charts" / "kubetune" / "Chart.yaml").read_text(encoding="utf-8"))
    builds = _make("images", "REGISTRY=registry.example.com:5000/team/")
    tags = {line.split(" -t ")[1].split()[0] for line in builds}
    assert tags == {f"registry.example.com:5000/team/{name}:{chart['appVersion']}" for name in _chart_images()}
    labelled = {"operator/Dockerfile": {s["name"]: s for s in stages(OPERATOR)},
                "trainer_image/Dockerfile": {s["name"]: s for s in stages(TRAINER)}}
    for line in builds:
        assert f"--label org.opencontainers.image.version={chart['appVersion']}" in line
        path, target = re.search(r"-f (\S+)(?: --target (\w+))?", line).groups()
        (stage,) = [s for name, s in labelled[path].items() if name == target or target is None]
        own = " ".join(rest for word, rest in stage["body"] if word == "LABEL")
        assert OCI_KEYS <= _oci_keys(line) | _oci_keys(own), (path, target, OCI_KEYS - _oci_keys(line) - _oci_keys(own))
    targets = {re.search(r"-f (\S+)(?: --target (\w+))?", line).groups() for line in builds}
    assert targets == {("operator/Dockerfile", None), ("trainer_image/Dockerfile", "cpu"),
                       ("trainer_image/Dockerfile", "cuda")}


def test_make_push_pushes_each_image_and_refuses_without_a_registry():
    pushes = [line for line in _make("push", "REGISTRY=ghcr.io/acme") if line.startswith("docker push")]
    pushed = set(re.findall(r"docker push (\S+)", " ".join(pushes)))
    assert {p.rsplit(":", 1)[0] for p in pushed} == {f"ghcr.io/acme/{name}" for name in _chart_images()}
    refused = subprocess.run(["make", "-s", "push"], cwd=ROOT, capture_output=True, text=True)
    assert refused.returncode != 0 and "REGISTRY must name" in refused.stderr
