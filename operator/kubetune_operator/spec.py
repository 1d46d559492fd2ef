"""A StudyJob's spec, read and checked the way the CLIs check a config file.

The API server validates against the CRD schema, but kmock does not and a
CRD schema cannot say everything (a config's cross-field rules), so the operator
checks the whole spec itself. Every mistake is a :class:`SpecError` naming the
field (``spec.trials.parallelism``, ``spec.config.optimizer.lr``).
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from kubetune.config import Config, validate_config
from kubetune.config.loader import format_validation_error
from kubetune.config.search_schema import MAX_TRIALS
from kubetune.config.yaml_io import parse_yaml
from kubetune.errors import ConfigError
from kubetune_operator import names

if TYPE_CHECKING:
    from kubetune_operator.kube import Kube


class SpecError(Exception):
    """A StudyJob spec the operator cannot run; ``field`` is the dotted path at fault.

    ``condition`` names the condition that reports it (None: ``SpecValid``) and ``reason``
    its reason, for what the spec names but the cluster lacks (see ``volumes.py``).
    """

    condition: str | None = None
    reason: str | None = None

    def __init__(self, message: str, field: str | None = None, *, temporary: bool = False) -> None:
        super().__init__(message)
        self.field = field
        self.temporary = temporary  # may fix itself (a ConfigMap not created yet)


# What the API server and the container runtime would refuse only once a trial's Job or
# pod exists (failing that trial): checked here, and by the CRD at `kubectl apply`.
# An image reference as distribution/reference reads it: [registry[:port]/]path[:tag][@digest].
IMAGE_PATTERN = (
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*"
    r":[0-9A-Fa-f]{32,})?$"
)
# A resource quantity ("2", "500m", "4Gi", "1e3"), as Kubernetes' own CRDs state it.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)"
    r"|(\.[0-9]+))))?$"
)
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
LABEL_VALUE_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# Sane maxima, so that a typo cannot ask for 10^9 pods; the operator's own cap
# (--max-jobs-per-studyjob) bounds the Jobs that run at once below these.
MAX_PARALLELISM = 10_000
MAX_RETRIES = 100
DAY, YEAR = 86_400, 31_536_000  # seconds


def _form(pattern: str, what: str) -> AfterValidator:
    def check(value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        if not isinstance(value, str) or not re.match(pattern, value):
            raise ValueError(f"must be {what}, but got {value!r}")
        return value
    return AfterValidator(check)


Quantity = Annotated[int | str, _form(QUANTITY_PATTERN, "a quantity such as 1, 500m or 4Gi")]
ImageRef = Annotated[str, _form(IMAGE_PATTERN, "an image reference such as registry.example.com/team/trainer:1.0 "
                                               "(the path in lowercase)")]
EnvName = Annotated[str, _form(ENV_NAME_PATTERN, "a variable name (letters, digits, '-', '.', '_'; "
                                                 "no digit first)")]
LabelValue = Annotated[str, _form(LABEL_VALUE_PATTERN, "a label value (at most 63 letters, digits, '-', '_', '.', "
                                                       "alphanumeric at both ends)")]
ObjectName = Annotated[str, _form(DNS_SUBDOMAIN_PATTERN, "an object name (lowercase letters, digits, '-', '.')")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Toleration(_Model):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(default=None, ge=0, le=YEAR, alias="tolerationSeconds")


class EnvVar(_Model):
    name: EnvName
    value: str = ""


class Resources(_Model):
    limits: dict[str, Quantity] = Field(default_factory=dict)
    requests: dict[str, Quantity] = Field(default_factory=dict)


class TrialsSpec(_Model):
    parallelism: int = Field(default=1, ge=1, le=MAX_PARALLELISM)
    max_failed: int = Field(default=3, ge=0, le=MAX_TRIALS, alias="maxFailed")
    retries: int = Field(default=1, ge=0, le=MAX_RETRIES)
    image: ImageRef | None = None
    # The user's own training script as each trial, run in the trial image by ml-train:
    # it becomes the config's search.command (resolve_config).
    command: list[Annotated[str, Field(min_length=1)]] | None = Field(default=None, min_length=1)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None, alias="imagePullPolicy"
    )
    image_pull_secrets: list[str] = Field(default_factory=list, alias="imagePullSecrets")
    resources: Resources = Field(default_factory=Resources)
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    tolerations: list[Toleration] = Field(default_factory=list)
    active_deadline_seconds: int | None = Field(default=None, ge=1, le=YEAR, alias="activeDeadlineSeconds")
    # A trial whose pod has not started by then (image pull, scheduling, mounts, quota) fails.
    # While every slot is busy, the next trial is asked ahead so its Job starts as soon as a slot
    # frees; the sampler then picks it without the result of the trial that frees the slot.
    ask_ahead: bool = Field(default=True, alias="askAhead")
    startup_timeout_seconds: int = Field(default=300, ge=1, le=DAY, alias="startupTimeoutSeconds")
    # Finished trial Jobs (and their pods' logs) are kept this long; the storage keeps the trial.
    ttl_seconds_after_finished: int | None = Field(default=86400, ge=60, le=YEAR, alias="ttlSecondsAfterFinished")
    service_account_name: str | None = Field(default=None, alias="serviceAccountName")
    env: list[EnvVar] = Field(default_factory=list)
    # Kueue: the LocalQueue every Job of the StudyJob goes to (created suspended; Kueue admits it).
    queue_name: LabelValue | None = Field(default=None, alias="queueName")
    # The pods' PriorityClass (the scheduler's, and Kueue's when no WorkloadPriorityClass is named).
    priority_class_name: ObjectName | None = Field(default=None, alias="priorityClassName", max_length=253)
    # Kueue's WorkloadPriorityClass for the trial Jobs (label kueue.x-k8s.io/priority-class).
    workload_priority_class_name: LabelValue | None = Field(default=None, alias="workloadPriorityClassName")


class SecretRef(_Model):
    name: str = Field(default="kubetune-postgres", min_length=1)
    key: str = Field(default="url", min_length=1)


class StorageSpec(_Model):
    secret_ref: SecretRef = Field(default_factory=SecretRef, alias="secretRef")


class ConfigMapRef(_Model):
    name: str = Field(..., min_length=1)
    key: str = Field(default=names.CONFIG_KEY, min_length=1)


class DataSpec(_Model):
    persistent_volume_claim: str | None = Field(default=None, min_length=1, alias="persistentVolumeClaim")
    sub_path: str | None = Field(default=None, alias="subPath")
    sample: Literal["digits"] | None = None


class OutputSpec(_Model):
    persistent_volume_claim: str | None = Field(default=None, min_length=1, alias="persistentVolumeClaim")
    sub_path: str | None = Field(default=None, alias="subPath")


class CleanupSpec(_Model):
    delete_study: bool = Field(default=False, alias="deleteStudy")


class StudyJobSpec(_Model):
    """``spec`` of a StudyJob, minus the config itself (see :func:`resolve_config`)."""

    config: dict[str, Any] | None = None
    config_map_ref: ConfigMapRef | None = Field(default=None, alias="configMapRef")
    trials: TrialsSpec = Field(default_factory=TrialsSpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    data: DataSpec | None = None
    output: OutputSpec | None = None
    suspend: bool = False
    cleanup: CleanupSpec = Field(default_factory=CleanupSpec)

    @property
    def data_path(self) -> str | None:
        """Where the dataset lies inside a trial pod, when the spec mounts one."""
        if self.data is None:
            return None
        if self.data.sample:
            return f"{names.DATA_DIR}/{self.data.sample}"
        return names.DATA_DIR


def _format(exc: ValidationError, prefix: str) -> SpecError:
    first = exc.errors()[0]
    loc = ".".join(str(part) for part in first["loc"])
    path = f"{prefix}{loc}"
    if first["type"] == "extra_forbidden":
        return SpecError(f"unknown field `{path}`", field=path)
    error = format_validation_error(exc, prefix=prefix)
    return SpecError(str(error), field=error.path or path)


# What the chart may default in spec.trials (KUBETUNE_TRIAL_DEFAULTS).
TRIAL_DEFAULT_KEYS = frozenset({"resources", "nodeSelector", "tolerations", "queueName", "priorityClassName",
                                "workloadPriorityClassName"})


@dataclass(frozen=True)
class Defaults:
    """What the operator fills in where a spec says nothing (the Helm chart sets these).

    From the environment: ``KUBETUNE_STORAGE_SECRET`` and ``KUBETUNE_STORAGE_SECRET_KEY``
    (``spec.storage.secretRef``), ``KUBETUNE_RESULTS_PVC`` (``spec.output``) and
    ``KUBETUNE_TRIAL_DEFAULTS``, JSON with ``resources``, ``nodeSelector``, ``tolerations``,
    ``queueName``, ``priorityClassName`` and ``workloadPriorityClassName`` shaped as in
    ``spec.trials``.
    """

    storage_secret: str = "kubetune-postgres"
    storage_key: str = "url"
    results_pvc: str | None = None
    trials: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_environment(cls, env: Mapping[str, str] = os.environ) -> Defaults:
        """The defaults the environment sets; ValueError names a malformed variable."""
        trials: dict[str, Any] = {}
        text = env.get("KUBETUNE_TRIAL_DEFAULTS", "").strip()
        if text:
            try:
                trials = json.loads(text)
            except ValueError as exc:
                raise ValueError(f"KUBETUNE_TRIAL_DEFAULTS must be JSON, but got {text[:60]!r}: {exc}") from None
            if not isinstance(trials, dict) or set(trials) - TRIAL_DEFAULT_KEYS:
                raise ValueError("KUBETUNE_TRIAL_DEFAULTS must be a JSON object with "
                                 f"{', '.join(sorted(TRIAL_DEFAULT_KEYS))}, but got {text[:60]!r}")
            trials = {k: v for k, v in trials.items() if v}  # the chart sends its empty defaults too
            try:
                TrialsSpec.model_validate(trials)
            except ValidationError as exc:
                raise ValueError(str(_format(exc, "KUBETUNE_TRIAL_DEFAULTS."))) from None
        return cls(
            storage_secret=env.get("KUBETUNE_STORAGE_SECRET") or cls.storage_secret,
            storage_key=env.get("KUBETUNE_STORAGE_SECRET_KEY") or cls.storage_key,
            results_pvc=env.get("KUBETUNE_RESULTS_PVC") or None,
            trials=trials,
        )

    def apply(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """``spec`` with the defaults filled in where it has nothing."""
        filled = dict(spec)
        if "storage" not in filled:
            filled["storage"] = {"secretRef": {"name": self.storage_secret, "key": self.storage_key}}
        if "output" not in filled and self.results_pvc:
            filled["output"] = {"persistentVolumeClaim": self.results_pvc}
        if self.trials:
            trials = dict(filled.get("trials") or {})
            for key, value in self.trials.items():
                trials.setdefault(key, copy.deepcopy(value))
            filled["trials"] = trials
        return filled


def parse_spec(spec: Mapping[str, Any], name: str, defaults: Defaults | None = None) -> StudyJobSpec:
    """Check the spec's own fields (not the config yet), after filling in ``defaults``."""
    spec = (defaults or Defaults()).apply(spec or {})
    if len(name) > names.MAX_NAME_LENGTH:
        raise SpecError(
            f"`metadata.name` must be at most {names.MAX_NAME_LENGTH} characters "
            f"(trial Jobs are named <name>-trial-<number>), but got {len(name)}",
            field="metadata.name",
        )
    try:
        parsed = StudyJobSpec.model_validate(spec)
    except ValidationError as exc:
        raise _format(exc, "spec.") from None
    if (parsed.config is None) == (parsed.config_map_ref is None):
        raise SpecError(
            "exactly one of `spec.config` and `spec.configMapRef` must be set", field="spec.config"
        )
    if parsed.data is not None and (parsed.data.persistent_volume_claim is None) == (
        parsed.data.sample is None
    ):
        raise SpecError(
            "`spec.data` must name either a persistentVolumeClaim or a sample", field="spec.data"
        )
    if parsed.data is not None and parsed.data.sample and parsed.data.sub_path:
        raise SpecError("`spec.data.subPath` only applies to a persistentVolumeClaim", field="spec.data.subPath")
    return parsed


def parse_cleanup_fields(spec: Mapping[str, Any], defaults: Defaults | None = None) -> StudyJobSpec:
    """Only ``storage`` and ``cleanup`` checked, the rest left empty: what deleting a
    StudyJob needs, even one whose edited spec no longer parses."""
    filled = (defaults or Defaults()).apply(spec or {})
    try:
        return StudyJobSpec.model_validate({k: filled[k] for k in ("storage", "cleanup") if k in filled})
    except ValidationError as exc:
        raise _format(exc, "spec.") from None


def read_config(kube: Kube, namespace: str, spec: StudyJobSpec) -> dict[str, Any]:
    """The raw config: ``spec.config``, or what the ConfigMap of ``spec.configMapRef`` holds."""
    if spec.config is not None:
        return spec.config
    ref = spec.config_map_ref
    assert ref is not None  # parse_spec requires one of the two
    found = kube.get("ConfigMap", namespace, ref.name)
    if found is None:
        raise SpecError(
            f"`spec.configMapRef`: ConfigMap `{ref.name}` not found in namespace `{namespace}`",
            field="spec.configMapRef.name", temporary=True,
        )
    return config_from_configmap(found.get("data"), ref)


def config_from_configmap(data: Mapping[str, str] | None, ref: ConfigMapRef) -> dict[str, Any]:
    """The raw config a ``spec.configMapRef`` points at."""
    text = (data or {}).get(ref.key)
    if text is None:
        raise SpecError(
            f"`spec.configMapRef`: ConfigMap `{ref.name}` has no key `{ref.key}`",
            field="spec.configMapRef.key",
        )
    try:
        raw = parse_yaml(text, f"ConfigMap {ref.name}/{ref.key}")
    except ConfigError as exc:
        raise SpecError(f"`spec.configMapRef`: {exc}", field="spec.configMapRef") from None
    if not isinstance(raw, dict):
        raise SpecError(
            f"`spec.configMapRef`: ConfigMap `{ref.name}` key `{ref.key}` must hold a YAML mapping",
            field="spec.configMapRef",
        )
    return raw


@dataclass(frozen=True)
class ResolvedConfig:
    """The validated config and what the operator changed on the way."""

    config: Config
    dropped_storage: bool  # search.storage was set and is ignored (spec.storage rules)


def resolve_config(raw: Mapping[str, Any], spec: StudyJobSpec) -> ResolvedConfig:
    """Validate the config as the CLIs do, after pointing it at the pod's mounts."""
    data = copy.deepcopy(dict(raw))
    source = "spec.config" if spec.config is not None else "spec.configMapRef"
    for section in ("data", "logging", "search"):
        if data.get(section) is not None and not isinstance(data[section], dict):
            raise SpecError(f"`{source}.{section}` must be a mapping", field=f"{source}.{section}")
    if spec.data_path is not None:
        data.setdefault("data", {})["path"] = spec.data_path
    data.setdefault("logging", {})["output_dir"] = names.RESULTS_DIR
    search = data.get("search")
    dropped = bool(search and search.get("storage"))
    if spec.trials.command is not None and isinstance(search, dict):
        search["command"] = list(spec.trials.command)  # what the trial pods' ml-train runs
    if search and "storage" in search:
        # The storage comes from spec.storage's Secret: a URL here could carry a password.
        search.pop("storage")
    try:
        config = validate_config(data)
    except ConfigError as exc:
        field = f"{source}.{exc.path}" if exc.path else source
        raise SpecError(f"{source}: {exc}", field=field) from None
    if config.search is None:
        raise SpecError(
            f"`{source}.search` is required: a StudyJob runs a search", field=f"{source}.search"
        )
    _check_search(config, source)
    return ResolvedConfig(config=config, dropped_storage=dropped)


def _check_search(config: Config, source: str) -> None:
    """ml-search's own checks of the search section against the config (the ones every
    trial pod would otherwise fail on), and its Optuna objects."""
    from kubetune.search.checks import check_search
    from kubetune.search.pruners import build_pruner
    from kubetune.search.samplers import build_sampler
    from kubetune.search.space import distributions

    try:
        check_search(config)
        distributions(config.search.search_space)  # type: ignore[union-attr]
        build_sampler(config.search)  # type: ignore[arg-type]
        build_pruner(config.search)  # type: ignore[arg-type]
    except ConfigError as exc:
        field = f"{source}.{exc.path}" if exc.path else source
        raise SpecError(f"{source}: {exc}", field=field) from None
