"""A thin, synchronous Kubernetes API client over the official client's transport.

It speaks plain dicts (no model classes to deserialise) and knows only the few
calls the operator makes; ``tests/fixtures/operator_api_calls.json`` lists them.
Label selectors are sent, and results are filtered by label here as well.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import kubernetes

from kubetune_operator import names

TIMEOUT = (5.0, 30.0)  # connect, read


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status

    @property
    def transient(self) -> bool:
        """An answer that changes by itself: throttling, a server error, or admission that
        does not know a just-installed CRD yet (OwnerReferencesPermissionEnforcement's
        "cannot find RESTMapping", seen on a real 1.37 API server)."""
        return self.status in (429, 500, 502, 503, 504) or (
            self.status == 403 and "cannot find RESTMapping" in str(self))


def _studyjob_path(namespace: str, name: str = "") -> str:
    path = f"/apis/{names.GROUP}/{names.VERSION}/namespaces/{namespace}/{names.PLURAL}"
    return f"{path}/{name}" if name else path


def _path(api_version: str, plural: str, namespace: str, name: str = "") -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = f"{base}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


_PLURALS = {"Job": "jobs", "ConfigMap": "configmaps", "Pod": "pods", "Secret": "secrets",
            "PersistentVolumeClaim": "persistentvolumeclaims"}


def _kind_path(kind: str, namespace: str, name: str = "") -> str:
    """The path of a ``kind`` in :data:`_PLURALS` (Jobs are batch/v1, the rest core v1)."""
    return _path("batch/v1" if kind == "Job" else "v1", _PLURALS[kind], namespace, name)


def _matches(obj: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    have = (obj.get("metadata") or {}).get("labels") or {}
    return all(have.get(key) == value for key, value in labels.items())


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in (obj.get("metadata") or {}).get("ownerReferences") or [])


class Kube:
    """The API calls the operator makes, each one HTTP request."""

    def __init__(self, api_client: kubernetes.client.ApiClient) -> None:
        self.api_client = api_client

    @classmethod
    def from_host(cls, host: str) -> Kube:
        """A client for an unauthenticated server (tests, benches: kmock)."""
        configuration = kubernetes.client.Configuration(host=host)
        return cls(kubernetes.client.ApiClient(configuration))

    @classmethod
    def from_environment(cls) -> Kube:
        """In-cluster service account, else the local kubeconfig."""
        configuration = kubernetes.client.Configuration()
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config(client_configuration=configuration)
        return cls(kubernetes.client.ApiClient(configuration))

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any] | None:
        """One call; the parsed JSON answer, or None for 404. Other errors raise ApiError."""
        client = self.api_client
        headers = {"Accept": "application/json", "Content-Type": content_type}
        method, url, headers, body, post = client.param_serialize(
            method, path, query_params=query or [], header_params=headers, body=body,
            auth_settings=["BearerToken"],
        )
        response = client.call_api(method, url, headers, body, post, _request_timeout=TIMEOUT)
        response.read()
        if response.status == 404:
            return None
        text = response.data.decode("utf-8") if response.data else ""
        if not 200 <= response.status < 300:
            try:
                message = json.loads(text).get("message") or text
            except ValueError:
                message = text
            raise ApiError(response.status, str(message)[:500])
        return json.loads(text) if text else {}

    # StudyJobs ---------------------------------------------------------------
    def get_studyjob(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.request("GET", _studyjob_path(namespace, name))

    def patch_studyjob_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.request(
            "PATCH", _studyjob_path(namespace, name) + "/status", body={"status": dict(status)},
            content_type="application/merge-patch+json",
        )

    # Children ----------------------------------------------------------------
    def list_children(self, kind: str, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        selector = ",".join(f"{key}={value}" for key, value in labels.items())
        answer = self.request("GET", _kind_path(kind, namespace), query=[("labelSelector", selector)]) or {}
        return [obj for obj in answer.get("items") or [] if _matches(obj, labels)]

    def list_jobs(self, namespace: str, studyjob: str, owner_uid: str | None = None) -> list[dict[str, Any]]:
        """The StudyJob's Jobs; with ``owner_uid``, only those this very StudyJob owns (not
        the leftovers of a deleted one of the same name that the garbage collector has yet
        to remove)."""
        labels = {names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_STUDYJOB: studyjob}
        jobs = self.list_children("Job", namespace, labels)
        if owner_uid is None:
            return jobs
        return [job for job in jobs if owned_by(job, owner_uid)]

    def list_job_pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        return self.list_children("Pod", namespace, {"job-name": job})

    def list_studyjob_pods(self, namespace: str, studyjob: str) -> list[dict[str, Any]]:
        """The pods of all the StudyJob's Jobs (their templates carry its labels)."""
        return self.list_children("Pod", namespace, {names.LABEL_MANAGED_BY: names.MANAGED_BY,
                                                     names.LABEL_STUDYJOB: studyjob})

    def list_workloads(self, namespace: str) -> list[dict[str, Any]]:
        """Kueue's Workloads in ``namespace``; none where Kueue is not installed (404) or the
        operator may not read them (403)."""
        try:
            answer = self.request("GET", _path(names.KUEUE_API_VERSION, "workloads", namespace))
        except ApiError as exc:
            if exc.status == 403:
                return []
            raise
        return list((answer or {}).get("items") or [])

    def create(self, obj: Mapping[str, Any], namespace: str, *, dry_run: bool = False) -> bool:
        """Create ``obj``; False if one of that name exists already. ``dry_run``: the API
        server validates and admits it (webhooks, quotas, policies) but stores nothing."""
        plural = _PLURALS[obj["kind"]]
        query = [("dryRun", "All")] if dry_run else None
        try:
            self.request("POST", _path(obj["apiVersion"], plural, namespace), body=dict(obj), query=query)
        except ApiError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.request("GET", _kind_path(kind, namespace, name))

    def patch(self, kind: str, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        self.request("PATCH", _kind_path(kind, namespace, name), body=dict(patch),
                     content_type="application/merge-patch+json")

    def delete_job(self, namespace: str, name: str) -> None:
        # Background propagation: the Job's pods go too (the default would orphan them).
        self.request(
            "DELETE", _kind_path("Job", namespace, name),
            body={"propagationPolicy": "Background"},
        )

    def read_secret(self, namespace: str, name: str, key: str) -> str | None:
        """One key of a Secret, decoded; None if the Secret or the key is missing."""
        secret = self.get("Secret", namespace, name)
        if secret is None:
            return None
        value = (secret.get("data") or {}).get(key)
        if value is not None:
            return base64.b64decode(value).decode("utf-8").strip()
        string_value = (secret.get("stringData") or {}).get(key)
        return string_value.strip() if string_value else None
