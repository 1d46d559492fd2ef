"""The test ground: an emulated API server, the real operator in a thread, a fake kubelet.

- :class:`Cluster`: :class:`~tests.operator.emulator.KubetuneEmulator` on a local
  port, with the bundled built-in resources and the StudyJob CRD; the test talks to
  it over HTTP through kmock's own client (so its calls are not counted as the
  operator's).
- :class:`OperatorThread`: ``kopf.operator`` with kubetune's handlers and settings,
  in its own thread and event loop, logged in to the emulator; stop it to "kill" it.
- :class:`FakeKubelet`: the Job controller and the kubelet. For every new Job it
  makes a Pod, runs the containers' argv (init containers first) as local
  processes with the Job's env (Secret references resolved) and its volumes mapped
  to local folders, then writes Pod and Job status back. A per-Job *fate* can
  replace the run: ``hold`` (wait for release), ``tell`` (tell COMPLETE at once
  through Optuna, standing in for training where training is not under test),
  ``oom``, ``evict`` (no goodbye), ``trainer-error`` (told FAIL, exit 1), ``crash``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kmock
import kopf
import yaml

from kubetune_operator import names
from kubetune_operator.kube import Kube
from tests.kopf_thread import KopfThread
from tests.operator.emulator import KubetuneEmulator
from tests.polling import wait_for

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "manifests" / "crd" / "studyjobs.kubetune.dev.yaml"
BIN = Path(sys.executable).parent
NAMESPACE = "kt"
STUDYJOBS = f"{names.API_VERSION}/{names.PLURAL}"


def crd_resource_info() -> kmock.ResourceInfo:
    """The StudyJob resource as discovery shows it, read from the CRD file."""
    crd = yaml.safe_load(CRD_PATH.read_text())
    version = crd["spec"]["versions"][0]
    crd_names = crd["spec"]["names"]
    return kmock.ResourceInfo(
        kind=crd_names["kind"], singular=crd_names["singular"], namespaced=True,
        shortnames=set(crd_names["shortNames"]), categories=set(crd_names.get("categories", [])),
        verbs={"create", "delete", "get", "list", "patch", "update", "watch"},
        subresources=set(version.get("subresources", {})),
    )


class Cluster:
    def __init__(self, emulator: KubetuneEmulator, url: str, namespace: str = NAMESPACE) -> None:
        self.emu, self.url, self.namespace = emulator, url, namespace

    async def api(self, method: str, path: str, body: Any = None,
                  content_type: str = "application/json") -> dict[str, Any] | None:
        kwargs: dict[str, Any] = {"headers": {"Content-Type": content_type}}
        if body is not None:
            kwargs["data"] = json.dumps(body)
        response = await self.emu.request(method, path, **kwargs)
        async with response:
            text = await response.text()
            if response.status == 404:
                return None
            assert response.status < 300, f"{method} {path}: HTTP {response.status}: {text[:500]}"
            return json.loads(text) if text else {}

    def path(self, resource: str, name: str = "", subresource: str = "") -> str:
        res = kmock.resource(resource)
        base = f"/apis/{res.group}/{res.version}" if res.group else f"/api/{res.version}"
        path = f"{base}/namespaces/{self.namespace}/{res.plural}"
        if name:
            path += f"/{name}"
        if subresource:
            path += f"/{subresource}"
        return path

    async def create(self, resource: str, body: dict[str, Any]) -> dict[str, Any]:
        body.setdefault("metadata", {}).setdefault("namespace", self.namespace)
        created = await self.api("POST", self.path(resource), body)
        assert created is not None
        return created

    async def patch(self, resource: str, name: str, patch: dict[str, Any], subresource: str = "") -> None:
        await self.api("PATCH", self.path(resource, name, subresource), patch,
                       "application/merge-patch+json")

    async def delete(self, resource: str, name: str) -> None:
        await self.api("DELETE", self.path(resource, name))

    def get(self, resource: str, name: str) -> dict[str, Any] | None:
        return self.emu.get_object(resource, self.namespace, name)

    def list(self, resource: str) -> list[dict[str, Any]]:
        return self.emu.list_objects(resource, self.namespace)

    # Shortcuts -------------------------------------------------------------------
    async def create_secret(self, name: str, data: dict[str, str]) -> None:
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        await self.create("v1/secrets", {"apiVersion": "v1", "kind": "Secret",
                                         "metadata": {"name": name}, "data": encoded})

    async def create_studyjob(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return await self.create(STUDYJOBS, {
            "apiVersion": names.API_VERSION, "kind": names.KIND,
            "metadata": {"name": name}, "spec": spec,
        })

    def studyjob(self, name: str) -> dict[str, Any]:
        found = self.get(STUDYJOBS, name)
        assert found is not None, f"StudyJob {name} is gone"
        return found

    def status(self, name: str) -> dict[str, Any]:
        return self.studyjob(name).get("status") or {}

    async def wait_phase(self, name: str, phase: str, timeout: float = 120) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            status = (self.get(STUDYJOBS, name) or {}).get("status") or {}
            return status if status.get("phase") == phase else None
        status = await wait_for(reached, timeout, lambda: f"StudyJob {name} to reach {phase} "
                                                          f"(status: {self.status(name)})")
        # kopf posts events from a queue, after the status patch that changed the phase: the
        # phase's own event comes last of its pass, so once it is here the pass's others are too.
        await wait_for(lambda: self.events(phase), 30, f"the {phase} event")
        return status

    def jobs(self, studyjob: str | None = None) -> dict[str, dict[str, Any]]:
        return {
            job["metadata"]["name"]: job for job in self.list("batch/v1/jobs")
            if studyjob is None or job["metadata"]["labels"].get(names.LABEL_STUDYJOB) == studyjob
        }

    def created_jobs(self) -> list[str]:
        return [name for plural, name in self.emu.created if plural == "jobs"]

    def events(self, reason: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.list("v1/events") if reason is None or e.get("reason") == reason]

    def event_messages(self, reason: str) -> list[str]:
        return [e.get("message", "") for e in self.events(reason)]


class OperatorThread(KopfThread):
    """The real operator, in-process, logged in to the emulator."""

    def __init__(self, url: str, namespace: str = NAMESPACE, **options: Any) -> None:
        options.setdefault("trial_image", "kubetune-trainer:test")
        super().__init__(Kube.from_host(url), kopf.ConnectionInfo(server=url, insecure=True), [namespace],
                         **options)

    async def start(self) -> OperatorThread:
        await asyncio.to_thread(self.start_sync)
        return self

    async def stop(self) -> None:
        """Stop the operator (its in-memory state dies with it)."""
        await asyncio.to_thread(self.stop_sync)


class FakeKubelet:
    """Runs the Jobs that appear in the emulator (see the module docstring)."""

    def __init__(self, cluster: Cluster, workdir: Path, claims: dict[str, Path],
                 fate: Callable[[dict[str, Any]], str] | None = None) -> None:
        self.cluster, self.workdir, self.claims = cluster, workdir, claims
        self.fate = fate or (lambda job: "run")
        self.seen: set[str] = set()
        self.released: dict[str, str] = {}
        self.release_all: str | None = None
        self.exit_codes: dict[str, int] = {}
        self.tasks: list[asyncio.Task] = []
        self._loop_task: asyncio.Task | None = None

    async def __aenter__(self) -> FakeKubelet:
        self._loop_task = asyncio.create_task(self._watch())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        for task in [self._loop_task, *self.tasks]:
            if task is not None:
                task.cancel()
        await asyncio.gather(*[t for t in [self._loop_task, *self.tasks] if t], return_exceptions=True)

    def release(self, job: str | None = None, fate: str = "tell") -> None:
        """Let held Jobs go on (one, or all present and future ones) with ``fate``."""
        if job is None:
            self.release_all = fate
        else:
            self.released[job] = fate

    def log(self, job: str) -> str:
        path = self.workdir / "logs" / f"{job}.log"
        return path.read_text() if path.exists() else ""

    async def _watch(self) -> None:
        while True:
            for job in self.cluster.list("batch/v1/jobs"):
                uid = job["metadata"]["uid"]
                if uid not in self.seen and not (job.get("status") or {}).get("conditions"):
                    self.seen.add(uid)
                    self.tasks.append(asyncio.create_task(self._run_job(job)))
            await asyncio.sleep(0.01)

    async def _run_job(self, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        fate = self.fate(job)
        while fate == "hold":
            fate = self.released.get(name) or self.release_all or "hold"
            if fate == "hold":
                await asyncio.sleep(0.02)
        if self.cluster.get("batch/v1/jobs", name) is None:
            return  # deleted while held: its pod goes with it, as the garbage collector does
        pod = await self._create_pod(job)
        if fate == "run":
            code = await self._exec(job, pod)
            reason = "Completed" if code == 0 else "Error"
        elif fate == "tell":
            code = await asyncio.to_thread(self._tell, job)
            reason = "Completed"
        elif fate == "oom":
            code, reason = 137, "OOMKilled"
        elif fate == "crash":
            code, reason = 1, "Error"
        elif fate == "evict":
            code, reason = -1, "Evicted"
        elif fate == "trainer-error":
            # The trainer failed on its own (a NaN loss, a bad config value) and said why.
            code = await asyncio.to_thread(self._tell, job, "TrainingDiverged: the loss became NaN")
            reason = "Error"
        else:
            raise AssertionError(f"unknown fate {fate!r}")
        self.exit_codes[name] = code
        await self._finish(job, pod, code, reason)

    async def _create_pod(self, job: dict[str, Any]) -> str:
        meta = job["metadata"]
        pod_name = f"{meta['name']}-{uuid.uuid4().hex[:5]}"
        await self.cluster.create("v1/pods", {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": pod_name,
                "labels": {**job["spec"]["template"]["metadata"].get("labels", {}),
                           "job-name": meta["name"], "controller-uid": meta["uid"]},
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                                     "uid": meta["uid"], "controller": True}],
            },
            "spec": job["spec"]["template"]["spec"],
            "status": {"phase": "Running"},
        })
        return pod_name

    async def _finish(self, job: dict[str, Any], pod: str, code: int, reason: str) -> None:
        name = job["metadata"]["name"]
        if reason == "Evicted":
            pod_status = {"phase": "Failed", "reason": "Evicted",
                          "message": "The node was low on resource: memory."}
        else:
            terminated = {"exitCode": code, "reason": reason}
            pod_status = {"phase": "Succeeded" if code == 0 else "Failed",
                          "containerStatuses": [{"name": "trial", "state": {"terminated": terminated}}]}
        if self.cluster.get("v1/pods", pod) is not None:
            await self.cluster.patch("v1/pods", pod, {"status": pod_status}, "status")
        if code == 0:
            job_status = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
        else:
            job_status = {"failed": 1, "conditions": [{"type": "Failed", "status": "True",
                                                        "reason": "BackoffLimitExceeded"}]}
        if self.cluster.get("batch/v1/jobs", name) is not None:
            await self.cluster.patch("batch/v1/jobs", name, {"status": job_status}, "status")

    # Running the containers ------------------------------------------------------
    def _env(self, container: dict[str, Any]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}
        env["OMP_NUM_THREADS"] = "1"  # the node's CPU limit: two trials share two cores
        for var in container.get("env") or []:
            if "value" in var:
                env[var["name"]] = var["value"]
            else:
                ref = var["valueFrom"]["secretKeyRef"]
                secret = self.cluster.get("v1/secrets", ref["name"])
                assert secret is not None, f"Secret {ref['name']} missing"
                env[var["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
        return env

    def _mounts(self, job: dict[str, Any], pod_dir: Path, container: dict[str, Any]) -> dict[str, Path]:
        """mountPath -> local folder, per the pod's volumes."""
        volumes = {v["name"]: v for v in job["spec"]["template"]["spec"].get("volumes", [])}
        result = {}
        for mount in container.get("volumeMounts") or []:
            volume = volumes[mount["name"]]
            if "configMap" in volume:
                local = pod_dir / "volumes" / mount["name"]
                local.mkdir(parents=True, exist_ok=True)
                config_map = self.cluster.get("v1/configmaps", volume["configMap"]["name"])
                assert config_map is not None, f"ConfigMap {volume['configMap']['name']} missing"
                for key, text in (config_map.get("data") or {}).items():
                    (local / key).write_text(text)
            elif "persistentVolumeClaim" in volume:
                local = self.claims[volume["persistentVolumeClaim"]["claimName"]]
                if mount.get("subPath"):
                    local = local / mount["subPath"]
                local.mkdir(parents=True, exist_ok=True)
            else:
                local = pod_dir / "volumes" / mount["name"]
                local.mkdir(parents=True, exist_ok=True)
            result[mount["mountPath"]] = local
        return result

    @staticmethod
    def _remap(value: str, mounts: dict[str, Path]) -> str:
        head, sep, tail = value.rpartition("=") if "=" in value else ("", "", value)
        for mount_path in sorted(mounts, key=len, reverse=True):
            if tail == mount_path or tail.startswith(mount_path + "/"):
                return f"{head}{sep}{mounts[mount_path]}{tail[len(mount_path):]}"
        return value

    async def _exec(self, job: dict[str, Any], pod: str) -> int:
        name = job["metadata"]["name"]
        pod_dir = self.workdir / "pods" / pod
        spec = job["spec"]["template"]["spec"]
        log_path = self.workdir / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            mounts = self._mounts(job, pod_dir, container)
            argv = [self._remap(arg, mounts) for arg in container["command"] + container.get("args", [])]
            program = BIN / argv[0]
            argv[0] = sys.executable if argv[0] == "python" else str(program)
            env = {k: self._remap(v, mounts) for k, v in self._env(container).items()}
            with log_path.open("a") as log:
                log.write(f"$ {' '.join(argv)}\n")
                log.flush()
                process = await asyncio.create_subprocess_exec(
                    *argv, env=env, stdout=log, stderr=log, cwd=str(pod_dir))
                try:
                    code = await process.wait()
                except asyncio.CancelledError:
                    process.kill()
                    raise
            if code != 0:
                return code
        return 0

    def _tell(self, job: dict[str, Any], fail_reason: str | None = None) -> int:
        """Stand-in for a trial pod that trains: tell COMPLETE with a value (each objective's) from the params
        (or FAIL with ``fail_reason``, as the trainer does on SIGTERM)."""
        import optuna

        from kubetune.search.ledger import fail_trial
        from kubetune.search.storage import make_storage

        container = job["spec"]["template"]["spec"]["containers"][0]
        url = self._env(container)[names.STORAGE_ENV]
        study_name = job["metadata"]["annotations"][names.ANNOTATION_STUDY]
        number = int(job["metadata"]["labels"][names.LABEL_TRIAL])
        study = optuna.load_study(study_name=study_name, storage=make_storage(url, heartbeat=False))
        trial = study.get_trials(deepcopy=False)[number]
        if fail_reason is not None:
            fail_trial(study, trial, fail_reason)
            return 1
        digest = hashlib.sha256(json.dumps(trial.params, sort_keys=True).encode()).hexdigest()
        value = 0.5 + int(digest[:8], 16) % 400 / 1000
        # Several objectives (val_acc, then a cost): a second value from the params too.
        values = [value, *(1000.0 + int(digest[8 * k:8 * k + 8], 16) % 9000 for k in range(1, len(study.directions)))]
        try:
            study.tell(number, values if len(values) > 1 else value, skip_if_finished=True)
        except optuna.exceptions.UpdateFinishedTrialError:
            return 1  # another pod of the trial told first, as the trainer reports it
        return 0


class EmulatorThread:
    """The emulator in a thread of its own, for synchronous callers (the benches)."""

    def __init__(self, max_requests: int = 24) -> None:
        self.loop = asyncio.new_event_loop()
        self.max_requests = max_requests
        self.cluster: Cluster | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),),
                                       name="emulator", daemon=True)

    async def _main(self) -> None:
        import warnings

        self._stop = asyncio.Event()
        async with KubetuneEmulator(max_requests=self.max_requests) as emulator, \
                kmock.Server(emulator) as server:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                emulator.resources.load_bundled()
            emulator.resources[STUDYJOBS] = crd_resource_info()
            self.cluster = Cluster(emulator, str(server.url).rstrip("/"))
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> Cluster:
        self.thread.start()
        self._ready.wait(30)
        assert self.cluster is not None
        return self.cluster

    def __exit__(self, *exc: Any) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(30)

    def run(self, coro: Any, timeout: float = 60) -> Any:
        """Run a coroutine on the emulator's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


class temporary_database:
    """A fresh PostgreSQL database on the test server (``KUBETUNE_TEST_POSTGRES_URL``)."""

    def __init__(self, server_url: str | None = None) -> None:
        self.server_url = server_url or os.environ.get(
            "KUBETUNE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
        self.name = f"kt_bench_{uuid.uuid4().hex[:10]}"

    def __enter__(self) -> str:
        import sqlalchemy

        self.admin = sqlalchemy.create_engine(self.server_url, isolation_level="AUTOCOMMIT")
        with self.admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{self.name}"'))
        url = sqlalchemy.engine.make_url(self.server_url).set(database=self.name)
        return url.render_as_string(hide_password=False)

    def __exit__(self, *exc: Any) -> None:
        import sqlalchemy

        with self.admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self.admin.dispose()


def _serve(conn: Any, created_log: str | None) -> None:
    """Body of :class:`EmulatorProcess`: serve until the parent says stop."""
    import warnings

    async def main() -> None:
        async with KubetuneEmulator(created_log=created_log) as emulator, kmock.Server(emulator) as server:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                emulator.resources.load_bundled()
            emulator.resources[STUDYJOBS] = crd_resource_info()
            conn.send(str(server.url).rstrip("/"))
            await asyncio.to_thread(conn.recv)

    asyncio.run(main())


class EmulatorProcess:
    """The emulator in a process of its own: an API server that shares no GIL with the
    operator under measurement (the benches). Creations are logged to ``created_log``."""

    def __init__(self, created_log: Path | None = None) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, str(created_log) if created_log else None),
                                       daemon=True)

    def __enter__(self) -> str:
        self.process.start()
        if not self.conn.poll(60):
            raise RuntimeError("the emulator did not start")
        return self.conn.recv()

    def __exit__(self, *exc: Any) -> None:
        self.conn.send("stop")
        self.process.join(30)
