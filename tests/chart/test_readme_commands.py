"""The README's Kubernetes commands and the examples' header commands, against the chart.

Each command is parsed as printed and followed in order, the way a new user runs them on a
fresh cluster: the release's namespace, the images' registry, the files applied, the
Secret and volume a StudyJob needs in its namespace, the objects read back.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.chart.helpers import ROOT, render_objects

README = ROOT / "README.md"
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))


def bash_blocks(markdown: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", markdown, flags=re.S)


def commands(text: str) -> list[list[str]]:
    """Shell words of each command: continuations joined, comments dropped, `&&` split."""
    joined = re.sub(r"\\\n\s*", " ", text)
    found = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        while words:
            if "&&" in words:
                cut = words.index("&&")
                found.append(words[:cut])
                words = words[cut + 1:]
            else:
                found.append(words)
                words = []
    return found


def flag(words: list[str], *names: str) -> str | None:
    for i, word in enumerate(words):
        for name in names:
            if word == name and i + 1 < len(words):
                return words[i + 1]
            if word.startswith(name + "="):
                return word.split("=", 1)[1]
    return None


def set_values(words: list[str]) -> dict:
    values: dict = {}
    for i, word in enumerate(words):
        if word == "--set":
            key, _, value = words[i + 1].partition("=")
            node = values
            *parents, last = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = value
    return values


@dataclass
class Cluster:
    """What the commands so far have put in the cluster, by namespace."""

    namespaces: set[str] = field(default_factory=set)
    objects: dict[tuple[str, str, str], dict] = field(default_factory=dict)  # (namespace, kind, name)
    registry: str | None = None
    ran: list[str] = field(default_factory=list)

    def has(self, namespace: str, kind: str, name: str) -> bool:
        return (namespace, kind, name) in self.objects

    def run(self, words: list[str]) -> None:
        self.ran.append(shlex.join(words))
        tool = words[0]
        if tool == "make" and words[1] == "push":
            self.registry = flag(words, "REGISTRY")
        elif tool == "helm":
            self.helm(words)
        elif tool == "kubectl":
            self.kubectl(words)

    def helm(self, words: list[str]) -> None:
        assert words[1] == "install", words
        release, chart = words[2], words[3]
        assert (ROOT / chart / "Chart.yaml").exists(), chart
        namespace = flag(words, "-n", "--namespace")
        assert namespace, f"`{shlex.join(words)}` must name its namespace"
        assert "--create-namespace" in words or namespace in self.namespaces, "the namespace must exist"
        values = set_values(words)
        if self.registry is not None:
            assert values.get("image", {}).get("registry") == self.registry, "install from the pushed registry"
        assert release == "kubetune", "tests/chart renders release kubetune"
        self.namespaces.add(namespace)
        for obj in render_objects(values, namespace=namespace, password=None):
            self.objects[(obj["metadata"].get("namespace", namespace), obj["kind"], obj["metadata"]["name"])] = obj

    def kubectl(self, words: list[str]) -> None:
        verb = words[1]
        namespace = flag(words, "-n", "--namespace")
        assert namespace, f"`{shlex.join(words)}` must name its namespace"
        assert namespace in self.namespaces, f"{namespace} does not exist when `{shlex.join(words)}` runs"
        if verb == "apply":
            for doc in yaml.safe_load_all((ROOT / flag(words, "-f")).read_text(encoding="utf-8")):
                self.apply(namespace, doc)
        elif verb == "create" and words[2] == "secret":
            self.objects[(namespace, "Secret", words[4])] = {"data": {"url": "…"}}
        elif verb in ("get", "describe"):
            kind = {"sj": "StudyJob", "cm": "ConfigMap"}[words[2]]
            values = {flag(words, "-n", "--namespace"), flag(words, "-o", "--output")}
            names = [w for w in words[3:] if not w.startswith("-") and w not in values]
            for name in names:
                if kind == "ConfigMap":
                    studyjob = name.removesuffix("-best-config")
                    assert self.has(namespace, "StudyJob", studyjob), f"{name}: no StudyJob {studyjob} in {namespace}"
                else:
                    assert self.has(namespace, kind, name), f"no {kind} {name} in {namespace}"

    def apply(self, namespace: str, doc: dict | None) -> None:
        if not doc:
            return
        meta = doc["metadata"]
        assert meta.get("namespace", namespace) == namespace, (
            f"{meta['name']} carries namespace {meta['namespace']}; kubectl apply -n {namespace} refuses it")
        if doc["kind"] == "StudyJob":
            self.check_studyjob(namespace, doc)
        self.objects[(namespace, doc["kind"], meta["name"])] = doc

    def check_studyjob(self, namespace: str, doc: dict) -> None:
        env: dict = {}
        for (_, kind, name), obj in self.objects.items():
            if kind == "Deployment" and name.endswith("-operator"):
                env = {e["name"]: e.get("value") for e in obj["spec"]["template"]["spec"]["containers"][0]["env"]}
        spec = doc["spec"]
        secret = spec.get("storage", {}).get("secretRef", {}).get("name") or env.get("KUBETUNE_STORAGE_SECRET")
        assert self.has(namespace, "Secret", secret), f"{doc['metadata']['name']}: no Secret {secret} in {namespace}"
        claim = spec.get("output", {}).get("persistentVolumeClaim") or env.get("KUBETUNE_RESULTS_PVC")
        assert self.has(namespace, "PersistentVolumeClaim", claim), f"no PVC {claim} in {namespace}"
        config_map = spec.get("configMapRef", {}).get("name")
        assert config_map is None or self.has(namespace, "ConfigMap", config_map), config_map
        assert "image" not in spec.get("trials", {}), "examples run the chart's images (its registry and tag)"


def readme_kubernetes_commands() -> list[list[str]]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Kubernetes in five commands"):]
    section = section[:section.index("\n## ", 1)]
    (block,) = bash_blocks(section)
    return commands(block)


def test_the_readme_kubernetes_path_works_in_order_on_a_fresh_cluster():
    cluster = Cluster()
    found = readme_kubernetes_commands()
    assert [w[0] for w in found] == ["make", "helm", "kubectl", "kubectl", "kubectl"]
    for words in found:
        cluster.run(words)
    assert cluster.registry and cluster.namespaces == {"kubetune"}
    assert cluster.has("kubetune", "StudyJob", "digits-lr")


def header_commands(example: Path) -> list[list[str]]:
    lines = [line[1:].strip() for line in example.read_text(encoding="utf-8").splitlines()
             if line.startswith("#   ")]
    text = "\n".join(lines)
    return [w for w in commands(text) if w and w[0] == "kubectl"]


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_each_example_header_works_after_the_readme_install(example):
    cluster = Cluster()
    for words in readme_kubernetes_commands():
        if words[0] == "kubectl":
            break
        cluster.run(words)
    found = header_commands(example)
    applied = [w for w in found if w[1] == "apply"]
    assert applied and all(flag(w, "-f") == str(example.relative_to(ROOT)) for w in applied), found
    for words in found:
        cluster.run(words)


def test_the_parser_catches_a_command_without_its_namespace():
    cluster = Cluster(namespaces={"kubetune"})
    with pytest.raises(AssertionError, match="must name its namespace"):
        cluster.run(["kubectl", "apply", "-f", "manifests/examples/digits-studyjob.yaml"])
    with pytest.raises(AssertionError, match="no Secret kubetune-postgres"):
        Cluster(namespaces={"kubetune"}).run(
            ["kubectl", "apply", "-n", "kubetune", "-f", "manifests/examples/digits-studyjob.yaml"])
