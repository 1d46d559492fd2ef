"""kubetune's only door into Optuna's private API: one small function per use.

Optuna's public API works on the trial an ``optimize`` loop or ``ask`` hands out. The
operator and trial pods also act on trials they hold only by number or as a
:class:`~optuna.trial.FrozenTrial` (a pod loads the trial the operator asked; the
operator marks, fails and resumes trials whose ``Trial`` object is long gone), which
takes the study's storage and the ids it keys trials by. Nothing else in kubetune
touches an underscore attribute of an Optuna object.

``tests/search/test_optuna_internals.py`` runs each function against the installed
Optuna, so an upgrade that moves one of these fails there, naming the attribute.
Torch-free: the operator imports it.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial

__all__ = [
    "HeartbeatStorage",
    "cached_storage",
    "contains",
    "set_trial_system_attr",
    "set_trial_user_attr",
    "stale_trial_ids",
    "storage_of",
    "stored_trial",
    "study_id_of",
    "trial_id_by_number",
    "trial_id_of",
]

AnyTrial = optuna.Trial | FrozenTrial


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage the study reads and writes through (``Study._storage``)."""
    return study._storage


def study_id_of(study: optuna.Study) -> int:
    """The storage's id of the study (``Study._study_id``)."""
    return study._study_id


def trial_id_of(trial: AnyTrial) -> int:
    """The storage's id of the trial (``Trial._trial_id``, ``FrozenTrial._trial_id``)."""
    return trial._trial_id


def trial_id_by_number(study: optuna.Study, number: int) -> int:
    """The storage's id of trial ``number`` of the study; KeyError if it has none."""
    return storage_of(study).get_trial_id_from_study_id_trial_number(study_id_of(study), number)


def stored_trial(study: optuna.Study, trial: AnyTrial) -> FrozenTrial:
    """The trial as the storage holds it now (what other processes wrote included)."""
    return storage_of(study).get_trial(trial_id_of(trial))


def set_trial_user_attr(study: optuna.Study, trial: AnyTrial, key: str, value: Any) -> None:
    """Write a user attribute on any of the study's trials, a FrozenTrial included.

    Raises :class:`optuna.exceptions.UpdateFinishedTrialError` once the trial has finished.
    """
    if isinstance(trial, optuna.Trial):
        trial.set_user_attr(key, value)  # keeps the Trial's own copy of its attributes current
    else:
        storage_of(study).set_trial_user_attr(trial_id_of(trial), key, value)


def set_trial_system_attr(study: optuna.Study, trial: AnyTrial, key: str, value: Any) -> None:
    """Write a system attribute on one of the study's trials (what a pruner keeps per trial)."""
    storage_of(study).set_trial_system_attr(trial_id_of(trial), key, value)


def contains(dist: BaseDistribution, internal: float) -> bool:
    """Whether ``internal`` (a value in the distribution's internal representation) lies
    in ``dist`` (``BaseDistribution._contains``)."""
    return dist._contains(internal)


def cached_storage(rdb: RDBStorage) -> BaseStorage:
    """``rdb`` behind Optuna's cache of finished trials, as ``create_study`` would put it
    (``optuna.storages.get_storage``, documented for internal use)."""
    return optuna.storages.get_storage(rdb)


def stale_trial_ids(rdb: RDBStorage, study_id: int) -> list[int]:
    """RUNNING trials of the study whose heartbeat is older than the grace period
    (``RDBStorage._get_stale_trial_ids``)."""
    return rdb._get_stale_trial_ids(study_id)


class HeartbeatStorage(BaseStorage, BaseHeartbeat):
    """A storage with heartbeats that Optuna's ``optimize`` and ``fail_stale_trials`` use
    (``BaseHeartbeat`` lives in a private module, and its stale-trial query has a private
    name): subclasses implement :meth:`stale_trials`."""

    def stale_trials(self, study_id: int) -> list[int]:
        raise NotImplementedError

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return self.stale_trials(study_id)
