"""Runtime: one state per StudyJob, dropped whole, with passes serialised across a forget."""

from __future__ import annotations

import threading
import time

from kubetune_operator.runtime import Options, Runtime, StudyJobState


def test_forgetting_a_studyjob_drops_all_it_held():
    rt = Runtime(None, Options())  # type: ignore[arg-type]
    with rt.lock("kt/sj") as state:
        state.announced.add(0)
        state.config_written = "a: 1\n"
        assert state.warn_once("grid:4") and not state.warn_once("grid:4")
        rt.forget("kt/sj")
    with rt.lock("kt/sj") as fresh:
        assert fresh is not state
        assert not fresh.announced and fresh.config_written is None and fresh.warn_once("grid:4")
    with rt.lock("kt/other") as other:
        assert other is not fresh


def test_a_pass_that_waited_through_a_forget_holds_the_new_state():
    rt = Runtime(None, Options())  # type: ignore[arg-type]
    held: list[object] = []
    with rt.lock("kt/sj") as old:
        waiter = threading.Thread(target=lambda: held.extend(_hold(rt)))
        waiter.start()
        time.sleep(0.2)  # let it block on the old state's lock
        rt.forget("kt/sj")
    waiter.join(timeout=10)
    assert held and held[0] is not old
    with rt.lock("kt/sj") as current:
        assert held[0] is current  # the state later passes lock too


def _hold(rt: Runtime) -> list[object]:
    with rt.lock("kt/sj") as state:
        return [state]


def test_a_job_whose_pod_stops_being_ready_is_news_and_a_new_pending_one_is_not():
    def job(name: str, **status: int) -> dict:
        return {"metadata": {"name": name}, "status": status}

    state = StudyJobState()
    assert not state.note_readiness(job("a", active=1))  # pending since it was made
    assert not state.note_readiness(job("a", active=1, ready=1))
    assert state.note_readiness(job("a", active=1))  # its node stopped answering
    assert state.note_readiness(job("b", active=1, ready=1, terminating=1))  # evicted
    assert state.note_readiness(job("c", terminating=1, ready=0))  # its only pod being deleted: not active
    assert not state.note_readiness(job("a", failed=1))  # ended: the Job's end is news anyway
