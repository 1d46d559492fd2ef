"""The data claim must exist; the results claim's access modes decide whether its pods share one node."""

from __future__ import annotations

import pytest

from kubetune_operator.kube import ApiError
from kubetune_operator.spec import parse_spec
from kubetune_operator.volumes import ClaimNotFound, results_volume
from tests.operator.conftest import digits_spec


class FakeKube:
    def __init__(self, claim: dict | None = None, error: ApiError | None = None) -> None:
        self.claim, self.error, self.asked = claim, error, []

    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        self.asked.append((kind, namespace, name))
        if self.error:
            raise self.error
        return self.claim


def _spec(output: bool = True):
    return parse_spec(digits_spec(output=output), "digits")


def _claim(spec_modes: list[str], bound_modes: list[str] | None = None) -> dict:
    status = {"phase": "Bound", "accessModes": bound_modes} if bound_modes else {"phase": "Pending"}
    return {"spec": {"accessModes": spec_modes}, "status": status}


@pytest.mark.parametrize(("claim", "single", "reason"), [
    (_claim(["ReadWriteMany"], ["ReadWriteMany"]), False, "ReadWriteMany"),
    (_claim(["ReadWriteOnce"], ["ReadWriteOnce"]), True, "SingleNode"),
    (_claim(["ReadWriteOncePod"]), True, "SingleNode"),
    # Bound: the volume's modes decide whether it may attach to several nodes.
    (_claim(["ReadWriteOnce"], ["ReadWriteOnce", "ReadWriteMany"]), False, "ReadWriteMany"),
    (_claim(["ReadWriteOnce", "ReadOnlyMany"], ["ReadWriteOnce", "ReadOnlyMany"]), True, "SingleNode"),
])
def test_access_modes_decide_the_condition(claim, single, reason):
    kube = FakeKube(claim)
    volume = results_volume(kube, "ml", _spec())
    assert kube.asked == [("PersistentVolumeClaim", "ml", "results")]
    assert volume.single_node is single
    condition = volume.condition()
    assert condition.type == "ResultsVolume" and condition.status is True and condition.reason == reason


def test_single_node_message_says_what_lets_trials_spread():
    message = results_volume(FakeKube(_claim(["ReadWriteOncePod"])), "ml", _spec()).condition().message
    assert "claim `results` is ReadWriteOncePod" in message and "one pod at a time" in message
    assert "ReadWriteMany claim (NFS, CephFS" in message


def test_a_missing_claim_is_a_temporary_spec_error_with_its_own_condition():
    with pytest.raises(ClaimNotFound, match="PersistentVolumeClaim `results` not found in namespace `ml`") as info:
        results_volume(FakeKube(None), "ml", _spec())
    assert info.value.temporary and info.value.field == "spec.output.persistentVolumeClaim"
    assert (info.value.condition, info.value.reason) == ("ResultsVolume", "ClaimNotFound")


def test_no_claim_no_call_no_condition():
    kube = FakeKube()
    volume = results_volume(kube, "ml", _spec(output=False))
    assert kube.asked == [] and not volume.single_node and volume.condition() is None


def test_a_forbidden_read_keeps_trials_together():
    volume = results_volume(FakeKube(error=ApiError(403, "forbidden")), "ml", _spec())
    assert volume.single_node
    condition = volume.condition()
    assert (condition.status, condition.reason) == (False, "AccessModesUnknown")
    assert "get on persistentvolumeclaims" in condition.message
    with pytest.raises(ApiError):
        results_volume(FakeKube(error=ApiError(500, "boom")), "ml", _spec())


def test_the_data_claim_must_exist_unless_it_cannot_be_read():
    from kubetune_operator.volumes import check_data_claim

    with pytest.raises(ClaimNotFound, match="PersistentVolumeClaim `datasets` not found in namespace `ml`") as info:
        check_data_claim(FakeKube(None), "ml", _spec())
    assert info.value.temporary and info.value.field == "spec.data.persistentVolumeClaim"
    assert (info.value.condition, info.value.reason) == ("DataVolume", "ClaimNotFound")
    kube = FakeKube(_claim(["ReadOnlyMany"]))
    check_data_claim(kube, "ml", _spec())
    assert kube.asked == [("PersistentVolumeClaim", "ml", "datasets")]
    check_data_claim(FakeKube(error=ApiError(403, "forbidden")), "ml", _spec())  # RBAC: trials find out
    sample = parse_spec({**digits_spec(), "data": {"sample": "digits"}}, "digits")
    kube = FakeKube()
    check_data_claim(kube, "ml", sample)
    assert kube.asked == []
