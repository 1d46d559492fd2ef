"""kmock's KubernetesEmulator plus what kopf and the operator rely on.

kmock (0.8) assigns no ``uid``/``resourceVersion``/``generation``, answers a failed
JSON-patch ``test`` with HTTP 500, keeps every request forever and collects no
garbage. This subclass:

- stamps ``uid``, ``resourceVersion``, ``generation`` and ``creationTimestamp`` on
  create, a new ``resourceVersion`` on every patch and ``generation + 1`` on a spec
  change, and answers 422 when a JSON-patch ``test`` op fails (kopf's finalizer
  patches then retry, as against a real API server);
- deletes the dependents of a deleted object by their ``ownerReferences`` (the
  garbage collector's job);
- keeps only the last ``max_requests`` requests and ``max_versions`` versions of an
  object, so long runs do not slow down;
- records ``(verb, group, resource[/subresource])`` of every request not made by the
  test itself (kmock's own client): the operator's API calls;
- answers a create with ``?dryRun=All`` as the API server does, storing nothing.
"""

from __future__ import annotations

import datetime
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp.web
import attrs
import jsonpointer
import kmock
from kmock._internal import enums, k8s

TEST_AGENT = "kmock/"  # the User-Agent of kmock's own client: the test's requests


def _verb(request: kmock.Request) -> str | None:
    action = request.action
    if action == enums.action.WATCH:
        return "watch"
    if action == enums.action.LIST:
        return "list"
    if action == enums.action.FETCH:
        return "get"
    if action == enums.action.CREATE:
        return "create"
    if action == enums.action.UPDATE:
        return "patch"
    if action == enums.action.DELETE:
        return "delete"
    return str(request.method.value).lower() if request.method else None


@attrs.define(kw_only=True)
class KubetuneEmulator(kmock.KubernetesEmulator):
    max_requests: int = 24
    max_versions: int = 3
    calls: set[tuple[str, str, str]] = attrs.field(factory=set)
    created: list[tuple[str, str]] = attrs.field(factory=list)  # (plural, name) of every create
    created_at: dict[tuple[str, str], float] = attrs.field(factory=dict)  # perf_counter() of each
    created_log: str | None = None  # a file to append "<plural> <name> <perf_counter>" lines to
    _inflight: set[int] = attrs.field(factory=set)
    _version: int = 0

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    def _stamp(self, request: kmock.Request) -> None:
        data = request.data
        resource = request.resource
        if request.action == enums.action.CREATE and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            meta.setdefault("namespace", request.namespace)
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:8]
            meta["uid"] = str(uuid.uuid4())
            meta["resourceVersion"] = self._next_version()
            meta["generation"] = 1
            meta["creationTimestamp"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            self.created.append((resource.plural, meta.get("name")))
            now = self.created_at[(resource.plural, meta.get("name"))] = time.perf_counter()
            if self.created_log:
                with open(self.created_log, "a") as log:
                    log.write(f"{resource.plural} {meta.get('name')} {now!r}\n")
        elif request.action == enums.action.UPDATE and request.name is not None:
            key = (resource, request.namespace, request.name)
            current = self._objects[key] if key in self._objects else None
            if current is None or current.deleted:
                return  # kmock answers 404
            version = self._next_version()
            if isinstance(data, list):
                for op in data:
                    if op.get("op") == "test":
                        found = jsonpointer.resolve_pointer(current.raw, op["path"], None)
                        if found != op.get("value"):
                            raise k8s.KubernetesError(status=422, reason="Invalid",
                                                      message=f"test failed at {op['path']}")
                data.append({"op": "add", "path": "/metadata/resourceVersion", "value": version})
            elif isinstance(data, dict):
                meta = data.get("metadata")
                if not isinstance(meta, dict):
                    meta = data["metadata"] = {}
                meta["resourceVersion"] = version
                if "spec" in data and request.subresource is None:
                    meta["generation"] = int(current.get("metadata", {}).get("generation") or 0) + 1

    async def _handle(self, request: kmock.Request) -> Any:
        if request.action == enums.action.CREATE and request.params.get("dryRun") == "All":
            return self._dry_run_create(request)
        if request.resource is not None and request.resource.plural:
            agent = next((v for k, v in request.headers.items() if k.lower() == "user-agent"), "")
            if not agent.startswith(TEST_AGENT):
                verb = _verb(request)
                plural = request.resource.plural
                if request.subresource:
                    plural = f"{plural}/{request.subresource}"
                if verb:
                    self.calls.add((verb, request.resource.group or "", plural))
            self._stamp(request)
        self._inflight.add(id(request))
        try:
            return await super()._handle(request)
        finally:
            self._inflight.discard(id(request))
            if request.resource is not None and request.name is not None:
                await self._collect_garbage((request.resource, request.namespace, request.name))
            self._trim(request)

    def _dry_run_create(self, request: kmock.Request) -> aiohttp.web.Response:
        """What the API server answers to ``?dryRun=All``: the object, stored nowhere."""
        data = dict(request.data)
        meta = data.setdefault("metadata", {})
        key = (request.resource, request.namespace or meta.get("namespace"), meta.get("name"))
        if key in self._objects and not self._objects[key].deleted:
            raise k8s.KubernetesError(status=409, reason="AlreadyExists", message=f"{meta.get('name')} exists")
        self.calls.add(("create", request.resource.group or "", request.resource.plural))  # RBAC: create
        return aiohttp.web.json_response({**data, "metadata": {**meta, "uid": str(uuid.uuid4())}}, status=201)

    async def _serve_list(self, request: kmock.Request) -> Any:
        """kmock's list, with the collection's real resourceVersion (a watch starts there)."""
        version = str(self._version)
        answer = await super()._serve_list(request)
        answer["metadata"]["resourceVersion"] = version
        return answer

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        """A watch from ``resourceVersion``: subscribed first, then what changed since.

        kmock re-sends every existing object on each watch, ignoring the version the
        list returned, and subscribes only afterwards. kopf then handles stale copies
        (its finalizer patch fails and it waits for a change that never comes) and
        may lose the changes made in between.
        """
        yield b""
        bus = self._buses[request.resource]
        marker = await bus.mark()
        since = request.params.get("resourceVersion", "")
        since_version = int(since) if since.isdigit() else 0
        try:
            async with self._lock:
                existing = [
                    obj.raw for (res, ns, name), obj in self._objects.items()
                    if self._watched(request, res, ns, name) and not obj.deleted
                    and int(obj.get("metadata", {}).get("resourceVersion") or 0) > since_version
                ]
            for raw in existing:
                yield {"type": "ADDED", "object": raw}
            async for event in bus.stream(since=marker):
                meta = (event.get("object") or {}).get("metadata") or {}
                if self._watched(request, request.resource, meta.get("namespace"), meta.get("name")):
                    yield event
        finally:
            await bus.unmark(marker)

    @staticmethod
    def _watched(request: kmock.Request, resource: Any, namespace: str | None, name: str | None) -> bool:
        return (resource == request.resource
                and (request.namespace is None or namespace == request.namespace)
                and (request.name is None or name == request.name))

    async def _collect_garbage(self, key: tuple[Any, str | None, str]) -> None:
        """Delete (or mark for deletion) everything owned by a just-deleted object."""
        if key not in self._objects or not self._objects[key].deleted:
            return
        owner_uid = (self._objects[key].last.raw.get("metadata") or {}).get("uid")
        pending = [owner_uid] if owner_uid else []
        while pending:
            uid = pending.pop()
            async with self._lock:
                for (resource, _ns, _name), obj in list(self._objects.items()):
                    if obj.deleted:
                        continue
                    meta = obj.get("metadata", {})
                    refs = meta.get("ownerReferences") or []
                    if not any(ref.get("uid") == uid for ref in refs):
                        continue
                    if meta.get("finalizers"):
                        if not meta.get("deletionTimestamp"):
                            obj.patch({"metadata": {"deletionTimestamp": datetime.datetime.now(
                                datetime.timezone.utc).isoformat()}})
                            await self._buses[resource].put({"type": "MODIFIED", "object": obj.raw})
                        continue
                    raw = obj.raw
                    obj.delete()
                    await self._buses[resource].put({"type": "DELETED", "object": raw})
                    if meta.get("uid"):
                        pending.append(meta["uid"])

    def _trim(self, request: kmock.Request) -> None:
        """Keep the last ``max_requests`` requests (and those still being served).

        kmock routes each request by scanning every recorded request through every
        fallback filter, so its latency grows with the history: ~5 ms per request at
        20 recorded requests, ~60 ms at 200.
        """
        requests = self._requests
        if len(requests) > self.max_requests:
            keep = requests[-self.max_requests:]
            kept = {id(r) for r in keep}
            older = [r for r in requests[:-self.max_requests] if id(r) in self._inflight and id(r) not in kept]
            requests[:] = older + keep
            for payload in self._payloads:
                if len(payload._requests) > self.max_requests:
                    del payload._requests[: len(payload._requests) - self.max_requests]
        if request.resource is not None and request.name is not None:
            key = (request.resource, request.namespace, request.name)
            if key in self._objects:
                history = self._objects[key].history
                if len(history) > self.max_versions:
                    del history[: len(history) - self.max_versions]

    # Helpers for tests: read the stored state without HTTP ------------------------
    def get_object(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        key = (kmock.resource(resource), namespace, name)
        if key not in self._objects or self._objects[key].deleted:
            return None
        return self._objects[key].raw

    def list_objects(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        wanted = kmock.resource(resource)
        return [
            obj.raw for (res, ns, _), obj in list(self._objects.items())
            if res == wanted and (namespace is None or ns == namespace) and not obj.deleted
        ]
