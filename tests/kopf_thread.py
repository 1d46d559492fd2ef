"""The real operator in-process: kopf with kubetune's handlers and settings, in its own
thread and event loop. Stop it to "kill" it: its in-memory state dies with it."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import kopf

from kubetune_operator import handlers
from kubetune_operator.kube import Kube
from kubetune_operator.runtime import Options, Runtime
from kubetune_operator.settings import configure
from tests.polling import wait_until


class KopfThread:
    def __init__(self, kube: Kube, connection: kopf.ConnectionInfo, namespaces: list[str],
                 **options: Any) -> None:
        options.setdefault("retry_seconds", 1.0)
        self.runtime = Runtime(kube, Options(**options))
        self.registry = kopf.OperatorRegistry()
        handlers.register(self.registry, self.runtime)

        @kopf.on.login(registry=self.registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return connection

        self.settings = configure(kopf.OperatorSettings(), posting_level=logging.WARNING, workers=4)
        self.settings.posting.idle_timeout = 0.2
        self.namespaces = namespaces
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="kopf-operator", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(kopf.operator(
                registry=self.registry, settings=self.settings, standalone=True,
                namespaces=self.namespaces, stop_flag=self.stop_flag, ready_flag=self.ready_flag,
            ))
        except BaseException as exc:  # noqa: BLE001 - reported by start_sync()
            self.error = exc

    def start_sync(self) -> None:
        self.thread.start()
        wait_until(lambda: self.ready_flag.is_set() or self.error, 30, "the operator to start")
        if self.error:
            raise self.error

    def stop_sync(self) -> None:
        self.stop_flag.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the operator did not stop"
        self.runtime.pool.shutdown(wait=False)
