{{/*
The operator's permissions: exactly the API calls it makes, no more.
tests/chart/test_rbac.py compares these rules with the calls recorded from an operator
run (tests/fixtures/operator_api_calls.json); change both together.
*/}}

{{/*
Cluster-scoped calls (a ClusterRole even when rbac.namespaced is true). None today:
the operator disables kopf's CRD and namespace scanning. Put rules here, not in
"kubetune.rules.namespaced", if that changes.
*/}}
{{- define "kubetune.rules.cluster" -}}
{{- end }}

{{/* Namespaced rules: a Role per watched namespace, or part of the ClusterRole. */}}
{{- define "kubetune.rules.namespaced" -}}
# Framework: kopf posts Kubernetes events about handler progress and errors.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# Framework and application: kopf watches StudyJobs and keeps its progress, the
# finalizer and the last handled spec in their metadata; a pass reads its StudyJob
# again before each batch of Jobs (suspended or deleted meanwhile?).
- apiGroups: ["kubetune.dev"]
  resources: ["studyjobs"]
  verbs: ["get", "list", "watch", "patch"]
# Admission: children carry ownerReferences with blockOwnerDeletion (kopf.adopt);
# where OwnerReferencesPermissionEnforcement is on (OpenShift, hardened clusters),
# creating them needs update on the owner's finalizers. Not an API call of its own.
- apiGroups: ["kubetune.dev"]
  resources: ["studyjobs/finalizers"]
  verbs: ["update"]
# Application: phase, trial counts and the best trial in the status.
- apiGroups: ["kubetune.dev"]
  resources: ["studyjobs/status"]
  verbs: ["patch"]
# Application: one Job per trial and one visualise Job; deleted on retry and cleanup.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "delete", "list", "watch"]
# Application, with Kueue: why a trial Job waits (its Workload's QuotaReserved message)
# and why Kueue evicted it. Without Kueue the list answers 404 and the operator goes on.
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["workloads"]
  verbs: ["list"]
# Application: why a trial's pod failed (OOMKilled, evicted, ...).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
# Application: the trial config and <name>-best-config ConfigMaps.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["create", "get", "patch"]
# Application: the access modes of a StudyJob's spec.output claim (may trials spread
# over nodes, or must they share the one its volume is attached to?).
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get"]
# Application: the storage URL a StudyJob's spec.storage.secretRef names.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
