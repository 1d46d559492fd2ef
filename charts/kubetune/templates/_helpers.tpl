{{/* Names, labels and shared fragments. */}}

{{- define "kubetune.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "kubetune" for `helm install kubetune`, else "<release>-kubetune". */}}
{{- define "kubetune.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := include "kubetune.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "kubetune.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "kubetune.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubetune
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: include with (dict "ctx" $ "component" "operator"). */}}
{{- define "kubetune.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubetune.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "kubetune.serviceAccountName" -}}
{{- default (printf "%s-operator" (include "kubetune.fullname" .)) .Values.serviceAccount.name }}
{{- end }}

{{/*
  One image reference from {registry, repository, tag}: empty registry and tag fall back
  to image.registry and image.tag, then the tag to the chart's appVersion.
  Include with (dict "ctx" $ "image" .Values.operator.image).
*/}}
{{- define "kubetune.image" -}}
{{- $registry := default .ctx.Values.image.registry .image.registry | trimSuffix "/" }}
{{- $tag := default (default .ctx.Chart.AppVersion .ctx.Values.image.tag) .image.tag }}
{{- if $registry }}
{{- printf "%s/%s:%s" $registry .image.repository $tag }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{- define "kubetune.operatorImage" -}}
{{- include "kubetune.image" (dict "ctx" . "image" .Values.operator.image) }}
{{- end }}

{{- define "kubetune.trainerImage" -}}
{{- include "kubetune.image" (dict "ctx" . "image" .Values.trials.image) }}
{{- end }}

{{- define "kubetune.trainerCpuImage" -}}
{{- include "kubetune.image" (dict "ctx" . "image" .Values.trials.cpuImage) }}
{{- end }}

{{/* An image from {registry, repository, tag}; an empty repository means the CPU trainer image. */}}
{{- define "kubetune.imageOrCpu" -}}
{{- if .image.repository }}
{{- include "kubetune.image" . }}
{{- else }}
{{- include "kubetune.trainerCpuImage" .ctx }}
{{- end }}
{{- end }}

{{/* The Secret that holds the storage URL, and its key. */}}
{{- define "kubetune.storageSecretName" -}}
{{- if .Values.postgresql.enabled }}
{{- default (printf "%s-postgres" (include "kubetune.fullname" .)) .Values.postgresql.auth.existingSecret }}
{{- else if .Values.storage.existingSecret }}
{{- .Values.storage.existingSecret }}
{{- else }}
{{- fail "storage.existingSecret must name a Secret with the storage URL when postgresql.enabled is false, but got an empty string" }}
{{- end }}
{{- end }}

{{/*
  PostgreSQL's max_connections: postgresql.connections.maxConnections, or computed from the
  connections each kubetune process may hold (kubetune.search.storage POOL_SIZE + MAX_OVERFLOW
  = 4): 4 x (parallelism trial pods + the two visualise containers [+ the dashboard])
  + 8 for the operator (one per handler thread, kubetune_operator.names.WORKERS)
  [+ grpcProxy.replicas x grpcProxy.threads] + 10 reserved.
*/}}
{{- define "kubetune.postgresMaxConnections" -}}
{{- $c := .Values.postgresql.connections }}
{{- if $c.maxConnections }}
{{- int $c.maxConnections }}
{{- else }}
{{- $processes := add (int $c.parallelism) 2 (ternary 1 0 .Values.dashboard.enabled) }}
{{- $proxy := ternary (mul (int .Values.grpcProxy.replicas) (int .Values.grpcProxy.threads)) 0 .Values.grpcProxy.enabled }}
{{- add (mul $processes 4) 8 $proxy 10 }}
{{- end }}
{{- end }}

{{- define "kubetune.resultsClaimName" -}}
{{- if .Values.results.create }}
{{- if .Values.results.existingClaim }}
{{- fail (printf "results.existingClaim must be empty when results.create is true, but got %q" .Values.results.existingClaim) }}
{{- end }}
{{- printf "%s-results" (include "kubetune.fullname" .) }}
{{- else if .Values.results.existingClaim }}
{{- .Values.results.existingClaim }}
{{- else }}
{{- fail "results.existingClaim must name a PersistentVolumeClaim when results.create is false, but got an empty string" }}
{{- end }}
{{- end }}

{{/* Namespaces the operator watches; empty list means all namespaces. */}}
{{- define "kubetune.watchNamespaces" -}}
{{- if .Values.operator.watchNamespaces }}
{{- toJson .Values.operator.watchNamespaces }}
{{- else if .Values.rbac.namespaced }}
{{- toJson (list .Release.Namespace) }}
{{- else }}
{{- toJson (list) }}
{{- end }}
{{- end }}

{{/* storageClassName: "" uses the default class (omitted), "-" means none. */}}
{{- define "kubetune.storageClass" -}}
{{- if eq . "-" -}}
storageClassName: ""
{{- else if . -}}
storageClassName: {{ . | quote }}
{{- end -}}
{{- end }}

{{/* Pod securityContext meeting Pod Security "restricted"; include with the UID. */}}
{{- define "kubetune.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
fsGroup: {{ . }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "kubetune.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
{{- end }}
