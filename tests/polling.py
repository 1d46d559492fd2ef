"""Waiting on something outside the test (a cluster, a process) without sleeping blindly."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

What = str | Callable[[], str]


def _check(predicate: Callable[[], Any], deadline: float, timeout: float, what: What) -> Any:
    """``predicate()``'s value; AssertionError naming ``what`` once ``deadline`` passed without one."""
    value = predicate()
    if not value and time.monotonic() > deadline:
        described = what() if callable(what) else what
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {described}")
    return value


def wait_until(predicate: Callable[[], Any], timeout: float = 60, what: What = "a condition",
               interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` (a text, or a
    function that tells the state at that moment) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (value := _check(predicate, deadline, timeout, what)):
        time.sleep(interval)
    return value


async def wait_for(predicate: Callable[[], Any], timeout: float = 60, what: What = "a condition",
                   interval: float = 0.05) -> Any:
    """:func:`wait_until` for a test's event loop: the operator and kubelet run meanwhile."""
    deadline = time.monotonic() + timeout
    while not (value := _check(predicate, deadline, timeout, what)):
        await asyncio.sleep(interval)
    return value


# A slower machine (a loaded CI runner) may scale every fixed wait: KUBETUNE_TEST_SLOWDOWN=3.
SLOWDOWN = float(os.environ.get("KUBETUNE_TEST_SLOWDOWN") or 1)


def scaled(seconds: float) -> float:
    """``seconds`` times ``KUBETUNE_TEST_SLOWDOWN``."""
    return seconds * SLOWDOWN


async def wait_progressing(predicate: Callable[[], Any], progress: Callable[[], Any], stall: float,
                           what: What = "a condition", interval: float = 0.2) -> Any:
    """:func:`wait_for` with a deadline that moves on whenever ``progress()`` changes (epochs
    reported, trials ended): a slow machine that keeps going never times out; one where
    nothing moves for ``stall`` seconds fails, naming ``what`` and the last progress seen."""
    last, deadline = progress(), time.monotonic() + stall
    while not (value := predicate()):
        now = progress()
        if now != last:
            last, deadline = now, time.monotonic() + stall
        elif time.monotonic() > deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"nothing moved for {stall:.0f} s (last progress: {last!r}) "
                                 f"while waiting for {described}")
        await asyncio.sleep(interval)
    return value
