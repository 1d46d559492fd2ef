"""act: the calls a plan makes, against stand-ins for the API and the study."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from kubetune_operator.act import StudyJobRef, start_job
from kubetune_operator.runtime import Options, Runtime
from tests.operator.snapshots import snapshot, trial


class NameTakenThenGone:
    """An API server where the Job's name is taken at create time and free by the list after."""

    def create(self, obj: dict[str, Any], namespace: str) -> bool:
        return False

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return None


class Study:
    def __init__(self) -> None:
        self.marked: list[str] = []

    def mark_job(self, trial: Any, job_name: str) -> None:
        self.marked.append(job_name)


def test_a_job_name_freed_between_create_and_list_is_not_marked_as_made():
    # The old Job of that name was being deleted: marking the trial now would make the
    # next pass think its Job vanished.
    rt = Runtime(NameTakenThenGone(), Options())  # type: ignore[arg-type]
    ref = StudyJobRef(rt, "kt", "sj", "kt/sj", "uid-1", 1, {"metadata": {"name": "sj", "uid": "uid-1"}})
    study = Study()
    with pytest.raises(kopf.TemporaryError):
        start_job(ref, snapshot([trial(0)]), study, trial(0), 0)  # type: ignore[arg-type]
    assert study.marked == []
