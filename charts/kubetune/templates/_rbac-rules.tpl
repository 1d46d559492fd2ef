{{/*
The operator's permissions: exactly the API calls it makes, no more.
tests/chart/test_rbac.py compares these rules with the calls recorded from a real
operator run (tests/fixtures/operator_api_calls.json); change both together.
*/}}

{{/* Cluster-scoped reads kopf needs in every mode. */}}
{{- define "kubetune.rules.cluster" -}}
# Framework: kopf discovers and watches the StudyJob CRD.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- end }}

{{/* Namespaced rules: a Role per watched namespace, or part of the ClusterRole. */}}
{{- define "kubetune.rules.namespaced" -}}
# Framework: kopf posts Kubernetes events about handler progress and errors.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# Framework: kopf watches StudyJobs and records its progress in annotations.
- apiGroups: ["kubetune.dev"]
  resources: ["studyjobs"]
  verbs: ["list", "watch", "patch"]
# Application: phase, trial counts and the best trial in the status.
- apiGroups: ["kubetune.dev"]
  resources: ["studyjobs/status"]
  verbs: ["patch"]
# Application: one Job per trial and one visualise Job.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "delete", "get", "list", "watch"]
# Application: why a trial's pod failed (OOMKilled, evicted, ...).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list"]
# Application: the trial config and <name>-best-config ConfigMaps.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["create", "get", "list", "patch"]
# Application: the storage URL a StudyJob's spec.storage.secretRef names.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
