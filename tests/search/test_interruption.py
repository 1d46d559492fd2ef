"""Signals are noted by their handlers and raised only where training checks."""

from __future__ import annotations

import gc
import os
import signal
import weakref

import pytest

from kubetune.search import interruption
from kubetune.search.interruption import (
    Interrupted,
    SigtermGuard,
    Terminated,
    check_stop,
    interrupt_requested,
    watch_interrupts,
)


@pytest.fixture
def watched():
    previous = signal.getsignal(signal.SIGINT)
    assert watch_interrupts()
    yield
    signal.signal(signal.SIGINT, previous)
    interruption._interrupts.requested = interruption._interrupts.installed = False


def test_ctrl_c_inside_a_garbage_collector_callback_is_not_lost(watched):
    """The handler runs wherever Python is; a raise there (a weakref callback) is dropped."""
    class Thing:
        pass

    thing = Thing()
    weakref.finalize(thing, os.kill, os.getpid(), signal.SIGINT)
    del thing
    gc.collect()
    assert interrupt_requested()
    with pytest.raises(Interrupted):
        check_stop()


def test_a_second_ctrl_c_raises_at_once(watched):
    os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)


def test_sigterm_raises_at_the_next_check_only_while_armed():
    with SigtermGuard() as guard:
        os.kill(os.getpid(), signal.SIGTERM)
        assert guard.received
        with pytest.raises(Terminated):
            check_stop()
        guard.disarm()
        check_stop()  # training is over: the outcome still gets told
    check_stop()
