"""The claims a StudyJob's pods mount: the data claim must exist; the results claim's
access modes decide where trials can write.

A ReadWriteMany claim mounts on any number of nodes, so trials go wherever the
scheduler puts them. A ReadWriteOnce claim attaches to one node at a time: a pod on a
second node waits in ContainerCreating (Multi-Attach) while the first node holds it.
The operator therefore reads the claim once per pass and, for a single-node claim, has
every pod that mounts it (trials, visualisation, the chart's TensorBoard) require the
node of the others (``builders/pods.py``: a required podAffinity on
:data:`~kubetune_operator.names.LABEL_RESULTS_CLAIM`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubetune_operator import status as st
from kubetune_operator.kube import ApiError, Kube
from kubetune_operator.spec import SpecError, StudyJobSpec

MANY = "ReadWriteMany"
ONE_POD = "ReadWriteOncePod"


class ClaimNotFound(SpecError):
    """The results claim does not exist (yet): trials wait for it."""

    condition = st.RESULTS_VOLUME
    reason = "ClaimNotFound"


class DataClaimNotFound(ClaimNotFound):
    """The data claim does not exist (yet): trials wait for it."""

    condition = st.DATA_VOLUME


def check_data_claim(kube: Kube, namespace: str, spec: StudyJobSpec) -> None:
    """DataClaimNotFound if ``spec.data.persistentVolumeClaim`` is missing (one GET), so the
    StudyJob waits in Pending, naming it, instead of trial pods waiting to be scheduled
    until ``startupTimeoutSeconds`` fails them. Not readable (RBAC): not checked."""
    name = spec.data.persistent_volume_claim if spec.data is not None else None
    if name:
        _read_claim(kube, namespace, name, "spec.data.persistentVolumeClaim", DataClaimNotFound)


def _read_claim(kube: Kube, namespace: str, name: str, field: str,
                missing: type[ClaimNotFound]) -> dict[str, Any] | None:
    """The claim ``field`` names (one GET); None if the operator may not read it (RBAC);
    ``missing`` if it does not exist."""
    try:
        claim = kube.get("PersistentVolumeClaim", namespace, name)
    except ApiError as exc:
        if exc.status != 403:
            raise
        return None
    if claim is None:
        raise missing(f"`{field}`: PersistentVolumeClaim `{name}` not found in namespace `{namespace}`; "
                      "trials start once it exists", field=field, temporary=True)
    return claim


@dataclass(frozen=True)
class ResultsVolume:
    claim: str | None  # None: no spec.output claim, each pod writes to its own emptyDir
    modes: frozenset[str] = frozenset()
    readable: bool = True  # False: the operator may not read the claim (RBAC)

    @property
    def one_pod(self) -> bool:
        """ReadWriteOncePod: one pod at a time, so trials run one after another."""
        return ONE_POD in self.modes

    @property
    def single_node(self) -> bool:
        """Every pod that mounts the claim must share one node."""
        return self.claim is not None and MANY not in self.modes

    def condition(self) -> st.Condition | None:
        """``ResultsVolume``; None without a claim (``Visualised`` says no plots are kept)."""
        if self.claim is None:
            return None
        claim = f"claim `{self.claim}`"
        if not self.readable:
            return st.Condition(st.RESULTS_VOLUME, False, "AccessModesUnknown",
                                f"cannot read PersistentVolumeClaim `{self.claim}` (grant the operator get on "
                                "persistentvolumeclaims): trials share one node as for ReadWriteOnce")
        if not self.single_node:
            return st.Condition(st.RESULTS_VOLUME, True, MANY, f"trials write to {claim} from any node")
        modes = ", ".join(sorted(self.modes)) or "no access modes"
        only = ("; ReadWriteOncePod admits one pod at a time, so trials run one after another"
                if ONE_POD in self.modes else "")
        return st.Condition(
            st.RESULTS_VOLUME, True, "SingleNode",
            f"{claim} is {modes}: trials, the visualisation and TensorBoard share the node it is "
            "attached to, so spec.trials.parallelism is bounded by that node" + only +
            "; a ReadWriteMany claim (NFS, CephFS, EFS, Filestore, ...) lets trials spread over nodes")


def results_volume(kube: Kube, namespace: str, spec: StudyJobSpec) -> ResultsVolume:
    """The StudyJob's results claim and its access modes (one GET); ClaimNotFound if missing.

    A bound claim's ``status.accessModes`` are its PersistentVolume's, which decide
    whether the volume may attach to several nodes; before binding, the requested ones.
    """
    name = spec.output.persistent_volume_claim if spec.output is not None else None
    if not name:
        return ResultsVolume(None)
    claim = _read_claim(kube, namespace, name, "spec.output.persistentVolumeClaim", ClaimNotFound)
    if claim is None:
        return ResultsVolume(name, readable=False)
    modes = (claim.get("status") or {}).get("accessModes") or (claim.get("spec") or {}).get("accessModes") or []
    return ResultsVolume(name, frozenset(modes))
