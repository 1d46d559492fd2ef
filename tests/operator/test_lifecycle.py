"""A live StudyJob: the operator restarted mid-study, n_trials and parallelism changed,
suspend and resume, deletion with and without the study.

Jobs are held by the fake kubelet until released, then ``tell`` COMPLETE (standing in
for training: what is under test is the operator's handling of Jobs and trials).
"""

from __future__ import annotations

import asyncio

import optuna
import pytest
from optuna.trial import TrialState

from kubetune.search.attributes import (
    AHEAD_ATTR,
    FAIL_REASON_ATTR,
    JOB_ATTR,
    OWNER_ATTR,
    TARGET_ATTR,
)
from kubetune.search.storage import make_storage
from kubetune_operator import names
from kubetune_operator.observe import LAUNCH_BATCH
from kubetune_operator.spec import parse_spec, resolve_config
from kubetune_operator.studies import StudyHandle
from tests.operator.conftest import digits_spec
from tests.operator.harness import NAMESPACE, STUDYJOBS
from tests.polling import wait_for


def _study(url: str) -> optuna.Study:
    return optuna.load_study(study_name="digits-op", storage=url)


def _asked_ahead(url: str) -> list[int]:
    """The trials asked ahead that wait for a Job."""
    return [t.number for t in _study(url).trials
            if t.state == TrialState.RUNNING and t.user_attrs.get(AHEAD_ATTR) and not t.user_attrs.get(JOB_ATTR)]


def _running_jobs(cluster, name: str) -> list[str]:
    return sorted(n for n, job in cluster.jobs(name).items() if not (job.get("status") or {}).get("conditions"))


@pytest.mark.asyncio
async def test_operator_killed_and_restarted_mid_study(cluster, storage_secret, start_operator,
                                                       make_kubelet):
    first = await start_operator()
    spec = digits_spec(n_trials=5, parallelism=2)
    async with make_kubelet(lambda job: "hold") as kubelet:
        await cluster.create_studyjob("restart", spec)
        await wait_for(lambda: len(cluster.jobs("restart")) == 2, 30, "two trial Jobs")
        await wait_for(lambda: _asked_ahead(storage_secret) == [2], 30, "trial 2 asked ahead")
        await first.stop()

        # While no operator runs: trial 0's pod finishes and tells, and a trial is asked
        # the way the operator asks (marked as this StudyJob's) but gets no Job, as if
        # the operator died between ask() and creating the Job. The restarted operator
        # gives it its Job, and trial 2, asked ahead, the next free slot.
        kubelet.release("restart-trial-0", "tell")
        await wait_for(lambda: _study(storage_secret).trials[0].state == TrialState.COMPLETE, 30,
                       "trial 0 to complete")
        parsed = parse_spec(spec, "restart")
        handle = StudyHandle(make_storage(storage_secret, heartbeat=False),
                             resolve_config(spec["config"], parsed).config, owner=f"{NAMESPACE}/restart")
        orphan = handle.ask(waiting=False)
        assert orphan.number == 3

        await start_operator()
        await wait_for(lambda: "restart-trial-3" in cluster.jobs("restart"), 30, "the orphan's Job")
        assert "restart-trial-2" not in cluster.jobs("restart")  # trials 1 and 3 fill the slots
        kubelet.release()
        status = await cluster.wait_phase("restart", "Succeeded")

    trials = _study(storage_secret).trials
    assert len(trials) == 5 and all(t.state == TrialState.COMPLETE for t in trials)
    assert status["trials"]["finished"] == 5
    # Every trial got exactly one Job, across both operators: no duplicate, no orphan.
    assert sorted(cluster.created_jobs()) == sorted(f"restart-trial-{n}" for n in range(5))
    # Trial 0 ended while no operator ran: the restarted one announces it, once, and every other too.
    ends = [m.split(" complete")[0] for m in cluster.event_messages("TrialComplete")]
    assert sorted(ends) == [f"trial {n}" for n in range(5)]


@pytest.mark.asyncio
async def test_n_trials_and_parallelism_change_on_a_live_studyjob(cluster, storage_secret,
                                                                  start_operator, make_kubelet):
    await start_operator()
    async with make_kubelet(lambda job: "hold") as kubelet:
        await cluster.create_studyjob("live", digits_spec(n_trials=2, parallelism=1))
        await wait_for(lambda: len(cluster.jobs("live")) == 1, 30, "the first Job")

        # Raising both: two more trials start at once.
        await cluster.patch(STUDYJOBS, "live", {"spec": {
            "config": {"search": {"n_trials": 4}}, "trials": {"parallelism": 3}}})
        await wait_for(lambda: len(cluster.jobs("live")) == 3, 30, "three running Jobs")

        # Lowering parallelism kills nothing; a finished trial is not replaced while
        # more than the new parallelism still run.
        await cluster.patch(STUDYJOBS, "live", {"spec": {"trials": {"parallelism": 1}}})
        await wait_for(lambda: cluster.status("live").get("observedGeneration") == 3, 30,
                       "the lower parallelism to be seen")
        kubelet.release("live-trial-0")
        await wait_for(lambda: cluster.status("live").get("trials", {}).get("finished") == 1, 30,
                       "trial 0 to be counted")
        assert _running_jobs(cluster, "live") == ["live-trial-1", "live-trial-2"]
        assert len(cluster.jobs("live")) == 3
        assert ("delete", "batch", "jobs") not in cluster.emu.calls

        kubelet.release()
        status = await cluster.wait_phase("live", "Succeeded")
    assert status["progress"] == "4/4"
    assert len(_study(storage_secret).trials) == 4
    assert _study(storage_secret).user_attrs[TARGET_ATTR] == 4  # what ml-search --resume reads


@pytest.mark.asyncio
async def test_suspend_stops_launching_and_resume_continues(cluster, storage_secret, start_operator,
                                                            make_kubelet):
    await start_operator()
    async with make_kubelet(lambda job: "hold") as kubelet:
        await cluster.create_studyjob("pause", digits_spec(n_trials=4, parallelism=2))
        await wait_for(lambda: len(cluster.jobs("pause")) == 2, 30, "two Jobs")
        await wait_for(lambda: _asked_ahead(storage_secret) == [2], 30, "trial 2 asked ahead")
        await cluster.patch(STUDYJOBS, "pause", {"spec": {"suspend": True}})
        await cluster.wait_phase("pause", "Suspended", timeout=30)
        # Trial 2, asked ahead, is not left RUNNING: it fails unstarted and is queued again.
        await wait_for(lambda: len(_study(storage_secret).trials) == 4, 30, "trial 2 released")
        released, retry = _study(storage_secret).trials[2:]
        assert released.state == TrialState.FAIL and released.user_attrs[FAIL_REASON_ATTR].startswith("NotStarted")
        assert retry.state == TrialState.WAITING and retry.params == released.params

        # Running trials finish; nothing new starts.
        kubelet.release()
        status = await wait_for(
            lambda: cluster.status("pause").get("trials", {}).get("finished") == 2
            and cluster.status("pause"), 30, "both trials to finish")
        assert status["phase"] == "Suspended"
        assert {c["type"]: c["status"] for c in status["conditions"]}["Suspended"] == "True"
        assert len(cluster.jobs("pause")) == 2

        await cluster.patch(STUDYJOBS, "pause", {"spec": {"suspend": False}})
        await cluster.wait_phase("pause", "Succeeded")
    assert len(cluster.jobs("pause")) == 4
    trials = _study(storage_secret).trials
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4 and trials[3].state == TrialState.COMPLETE
    assert cluster.status("pause")["trials"]["failed"] - cluster.status("pause")["trials"]["retried"] == 0
    assert cluster.events("Suspended")


@pytest.mark.asyncio
async def test_grid_study_runs_each_point_once(cluster, storage_secret, start_operator, make_kubelet):
    # A 2x2 grid asked for 10 trials, two at a time, with an operator restart after the
    # first two: four trials, one per point, and the config's own point (lr 0.05) is not
    # queued on top of the grid.
    spec = digits_spec(n_trials=10, parallelism=2)
    spec["config"]["search"]["sampler"] = {"type": "GridSampler", "seed": 3}
    spec["config"]["search"]["search_space"] = {
        "optimizer.lr": {"type": "categorical", "choices": [0.01, 0.1]},
        "model.dropout": {"type": "categorical", "choices": [0.0, 0.2]},
    }
    first = await start_operator()
    async with make_kubelet(lambda job: "hold") as kubelet:
        await cluster.create_studyjob("grid", spec)
        await wait_for(lambda: len(cluster.jobs("grid")) == 2, 30, "two trial Jobs")
        await wait_for(lambda: _asked_ahead(storage_secret) == [2], 30, "trial 2 asked ahead")
        await first.stop()
        kubelet.release()
        await wait_for(lambda: all(t.state == TrialState.COMPLETE for t in _study(storage_secret).trials[:2]),
                       30, "the first two trials to complete")
        await start_operator()
        status = await cluster.wait_phase("grid", "Succeeded")
    points = sorted((t.params["optimizer.lr"], t.params["model.dropout"]) for t in _study(storage_secret).trials)
    assert points == [(0.01, 0.0), (0.01, 0.2), (0.1, 0.0), (0.1, 0.2)]
    assert status["progress"] == "4/4"
    assert sorted(cluster.created_jobs()) == [f"grid-trial-{n}" for n in range(4)]
    assert any("the grid has 4 points" in m for m in cluster.event_messages("GridSize"))


@pytest.mark.asyncio
async def test_deleting_keeps_the_study_and_fails_its_running_trials(cluster, storage_secret,
                                                                     start_operator, make_kubelet):
    await start_operator()
    async with make_kubelet(lambda job: "hold"):
        created = await cluster.create_studyjob("bye", digits_spec(n_trials=4, parallelism=2))
        await wait_for(lambda: len(cluster.jobs("bye")) == 2, 30, "two Jobs")
        await wait_for(lambda: _asked_ahead(storage_secret) == [2], 30, "trial 2 asked ahead")
        for job in cluster.jobs("bye").values():
            assert job["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
        await cluster.delete(STUDYJOBS, "bye")
        await wait_for(lambda: cluster.get(STUDYJOBS, "bye") is None, 30, "the StudyJob to go")
    # The garbage collector (emulated) removed the children by their ownerReferences.
    assert cluster.jobs("bye") == {} and cluster.get("v1/configmaps", "bye-config") is None
    # The two running trials and the one asked ahead.
    trials = _study(storage_secret).trials
    assert [t.state for t in trials] == [TrialState.FAIL] * 3 + [TrialState.WAITING] * 3
    assert all(t.user_attrs[FAIL_REASON_ATTR].startswith("StudyJobDeleted") for t in trials[:3])
    # Queued again, unmarked: a deletion costs no trial to whoever takes the study up.
    assert [t.params for t in trials[3:]] == [t.params for t in trials[:3]]
    assert all(OWNER_ATTR not in t.user_attrs and AHEAD_ATTR not in t.user_attrs for t in trials[3:])


async def _delete_the_study_under(cluster, name: str, url: str, make_kubelet) -> dict:
    """Start StudyJob ``name`` with two held trials, delete its study (e.g. ``optuna
    delete-study``); its status once Failed."""
    async with make_kubelet(lambda job: "hold"):
        await cluster.create_studyjob(name, digits_spec(n_trials=4, parallelism=2))
        await wait_for(lambda: len(cluster.jobs(name)) == 2, 30, "two Jobs")
        optuna.delete_study(study_name="digits-op", storage=url)
        return await cluster.wait_phase(name, "Failed", 30)


@pytest.mark.asyncio
async def test_a_study_deleted_under_a_running_studyjob_fails_it_and_stops_its_jobs(
        cluster, storage_secret, start_operator, make_kubelet):
    first = await start_operator(resync_seconds=0.3)
    status = await _delete_the_study_under(cluster, "lost", storage_secret, make_kubelet)
    await wait_for(lambda: cluster.jobs("lost") == {}, 30, "its Jobs to be stopped")
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Failed"]["reason"] == conditions["StorageReady"]["reason"] == "StudyDeleted"
    assert "study `digits-op` is no longer in the storage" in status["message"]
    assert status["trials"]["running"] == 0
    await wait_for(  # kopf posts events from a queue of its own: it may land after the status
        lambda: any("stopped Jobs: lost-trial-0, lost-trial-1" in m for m in cluster.event_messages("StudyDeleted")),
        30, "the StudyDeleted event naming both Jobs")
    # Neither this operator nor a restarted one makes the study again under the same trial numbers.
    await first.stop()
    await start_operator(resync_seconds=0.3)
    await asyncio.sleep(2)
    with pytest.raises(KeyError):
        _study(storage_secret)
    assert cluster.status("lost")["phase"] == "Failed" and cluster.jobs("lost") == {}


@pytest.mark.asyncio
async def test_a_study_deleted_before_the_status_counted_its_trials_is_not_made_again(
        cluster, storage_secret, start_operator, make_kubelet):
    first = await start_operator()
    async with make_kubelet(lambda job: "hold"):
        await cluster.create_studyjob("window", digits_spec(n_trials=4, parallelism=2))
        await wait_for(lambda: len(cluster.jobs("window")) == 2, 30, "two Jobs")
        await first.stop()
        # As if the operator had died between creating the Jobs and writing the status.
        await cluster.patch(STUDYJOBS, "window", {"status": None}, subresource="status")
        optuna.delete_study(study_name="digits-op", storage=storage_secret)
        await start_operator()
        status = await cluster.wait_phase("window", "Failed", 30)
    assert {c["type"]: c for c in status["conditions"]}["Failed"]["reason"] == "StudyDeleted"
    with pytest.raises(KeyError):
        _study(storage_secret)


@pytest.mark.asyncio
async def test_deleting_after_an_edit_that_does_not_parse_still_closes_the_study(cluster, storage_secret,
                                                                                 start_operator, make_kubelet):
    await start_operator()
    async with make_kubelet(lambda job: "hold"):
        await cluster.create_studyjob("edited", digits_spec(n_trials=4, parallelism=2))
        await wait_for(lambda: len(cluster.jobs("edited")) == 2, 30, "two Jobs")
        await wait_for(lambda: _asked_ahead(storage_secret) == [2], 30, "trial 2 asked ahead")
        await cluster.patch(STUDYJOBS, "edited", {"spec": {"data": {"persistentVolumeClaim": None}}})
        status = await cluster.wait_phase("edited", "Failed", 30)
        assert "`spec.data` must name either a persistentVolumeClaim or a sample" in status["message"]
        await cluster.delete(STUDYJOBS, "edited")
        await wait_for(lambda: cluster.get(STUDYJOBS, "edited") is None, 30, "the StudyJob to go")
    # The two running trials and the one asked ahead.
    trials = _study(storage_secret).trials
    assert [t.state for t in trials] == [TrialState.FAIL] * 3 + [TrialState.WAITING] * 3
    assert all(t.user_attrs[FAIL_REASON_ATTR].startswith("StudyJobDeleted") for t in trials[:3])
    # Queued again, unmarked: a deletion costs no trial to whoever takes the study up.
    assert [t.params for t in trials[3:]] == [t.params for t in trials[:3]]
    assert all(OWNER_ATTR not in t.user_attrs and AHEAD_ATTR not in t.user_attrs for t in trials[3:])
    assert not _study(storage_secret).user_attrs[OWNER_ATTR]  # free for ml-search --resume


@pytest.mark.asyncio
async def test_deleting_with_delete_study_removes_the_study(cluster, storage_secret, start_operator,
                                                            make_kubelet):
    await start_operator()
    spec = digits_spec(n_trials=2, parallelism=1)
    spec["cleanup"] = {"deleteStudy": True}
    async with make_kubelet(lambda job: "tell"):
        await cluster.create_studyjob("purge", spec)
        await cluster.wait_phase("purge", "Succeeded")
    assert len(_study(storage_secret).trials) == 2
    await cluster.delete(STUDYJOBS, "purge")
    await wait_for(lambda: cluster.get(STUDYJOBS, "purge") is None, 30, "the StudyJob to go")
    with pytest.raises(KeyError):
        _study(storage_secret)


@pytest.mark.asyncio
async def test_a_finished_studyjob_stops_its_resync_timer(cluster, storage_secret, start_operator, make_kubelet,
                                                          monkeypatch):
    from kubetune_operator import handlers

    timer_passes: list[str] = []
    reconcile = handlers._reconcile

    def counted(rt, body):
        timer_passes.append(body["metadata"]["name"])
        return reconcile(rt, body)

    monkeypatch.setattr(handlers, "_reconcile", counted)  # what the timer (and spec changes) call
    await start_operator(resync_seconds=0.3)
    async with make_kubelet(lambda job: "tell"):
        await cluster.create_studyjob("done", digits_spec(n_trials=1, parallelism=1))
        await cluster.wait_phase("done", "Succeeded")
        await asyncio.sleep(0.6)  # a timer pass under way when it finished may still end
        before = len(timer_passes)
        await asyncio.sleep(1.5)  # five resync intervals
    assert len(timer_passes) == before


@pytest.mark.asyncio
async def test_a_finished_studyjob_stays_finished_when_its_results_claim_goes(cluster, storage_secret,
                                                                              start_operator, make_kubelet):
    first = await start_operator()
    await cluster.create("v1/persistentvolumeclaims", {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "results"},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}})
    trials_tell = lambda job: "tell" if names.LABEL_TRIAL in job["metadata"]["labels"] else "crash"  # noqa: E731
    async with make_kubelet(trials_tell):
        await cluster.create_studyjob("kept", digits_spec(n_trials=1, parallelism=1, output=True))
        await cluster.wait_phase("kept", "Succeeded")
    await first.stop()
    await cluster.delete("v1/persistentvolumeclaims", "results")  # results copied away, claim removed

    def claim_missing() -> bool:
        conditions = {c["type"]: c for c in cluster.status("kept").get("conditions") or []}
        return conditions.get("ResultsVolume", {}).get("reason") == "ClaimNotFound"

    await start_operator()  # its first pass finds no claim
    await wait_for(claim_missing, 30, "condition ResultsVolume ClaimNotFound")
    assert cluster.status("kept")["phase"] == "Succeeded"


@pytest.mark.asyncio
async def test_a_studyjob_failed_by_a_deleted_study_stays_failed_while_the_storage_is_away(
        cluster, storage_secret, start_operator, make_kubelet):
    first = await start_operator(resync_seconds=0.3)
    await _delete_the_study_under(cluster, "gone", storage_secret, make_kubelet)
    await first.stop()
    await cluster.delete("v1/secrets", "kubetune-postgres")  # the storage cannot be reached

    def conditions() -> dict:
        return {c["type"]: c for c in cluster.status("gone").get("conditions") or []}

    await start_operator(resync_seconds=0.3)
    await wait_for(lambda: conditions()["StorageReady"]["reason"] == "SecretNotFound", 30,
                   "StorageReady SecretNotFound")
    status = cluster.status("gone")
    assert status["phase"] == "Failed" and conditions()["Failed"]["reason"] == "StudyDeleted"
    assert "is no longer in the storage" in status["message"]
    await cluster.create_secret("kubetune-postgres", {"url": storage_secret})
    await wait_for(lambda: conditions()["StorageReady"]["reason"] == "StudyDeleted", 30, "StudyDeleted again")
    assert cluster.status("gone")["phase"] == "Failed"


@pytest.mark.asyncio
async def test_a_huge_parallelism_stops_at_the_cap_and_suspend_and_delete_stop_it_within_a_batch(
        cluster, storage_secret, start_operator, make_kubelet):
    await start_operator(max_jobs=40)
    async with make_kubelet(lambda job: "hold"):
        await cluster.create_studyjob("flood", digits_spec(n_trials=1_000_000, parallelism=10_000))
        await wait_for(lambda: len(cluster.jobs("flood")) >= 5, 30, "the first Jobs")
        await cluster.patch(STUDYJOBS, "flood", {"spec": {"suspend": True}})
        at_suspend = len(cluster.created_jobs())
        await cluster.wait_phase("flood", "Suspended", timeout=30)
        suspended = len(cluster.created_jobs())
        assert suspended - at_suspend <= LAUNCH_BATCH
        await asyncio.sleep(2)
        assert len(cluster.created_jobs()) == suspended

        await cluster.patch(STUDYJOBS, "flood", {"spec": {"suspend": False}})
        await wait_for(lambda: len(cluster.jobs("flood")) >= suspended + 5, 30, "more Jobs")
        await cluster.delete(STUDYJOBS, "flood")
        at_delete = len(cluster.created_jobs())
        await wait_for(lambda: cluster.get(STUDYJOBS, "flood") is None, 30, "the StudyJob to go")
        assert len(cluster.created_jobs()) - at_delete <= LAUNCH_BATCH
    assert len(set(cluster.created_jobs())) <= 40  # the cap, whatever parallelism says
    assert cluster.event_messages("ParallelismCapped")


async def _apply_again(cluster, name: str, spec: dict, timeout: float = 30) -> None:
    """`kubectl apply` in a loop, as GitOps does: taken once the old StudyJob is gone."""
    async def taken() -> bool:
        try:
            await cluster.create_studyjob(name, spec)
        except AssertionError:  # HTTP 409: the old one is still being finalised
            return False
        return True
    deadline = asyncio.get_running_loop().time() + timeout
    while not await taken():
        assert asyncio.get_running_loop().time() < deadline, f"StudyJob {name} never taken again"
        await asyncio.sleep(0.01)


@pytest.mark.asyncio
@pytest.mark.parametrize("wait", [True, False])
async def test_a_studyjob_deleted_and_applied_again_runs_its_trials_to_the_budget(
        cluster, storage_secret, start_operator, make_kubelet, wait):
    await start_operator()
    spec = digits_spec(n_trials=4, parallelism=4, maxFailed=1)
    async with make_kubelet(lambda job: "hold") as kubelet:
        await cluster.create_studyjob("again", spec)
        await wait_for(lambda: len(cluster.jobs("again")) == 4, 30, "four Jobs")
        await cluster.delete(STUDYJOBS, "again")
        if wait:
            await wait_for(lambda: cluster.get(STUDYJOBS, "again") is None, 30, "the StudyJob to go")
        await _apply_again(cluster, "again", spec)
        kubelet.release()
        status = await cluster.wait_phase("again", "Succeeded", timeout=60)
    trials = _study(storage_secret).trials
    deleted = [t for t in trials if (t.user_attrs.get(FAIL_REASON_ATTR) or "").startswith("StudyJobDeleted")]
    assert len(deleted) == 4
    assert status["trials"]["complete"] == 4 and status["trials"]["inherited"] == 0
    assert status["trials"]["retried"] == 4  # the predecessor's trials ran again
