{{/* Chart name, truncated to the 63 characters a DNS label allows. */}}
{{- define "eventcast.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name, plus the chart name unless the release already contains it.
Truncated to 63 characters (some Kubernetes name fields are limited to that by the DNS spec).
*/}}
{{- define "eventcast.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* A name derived from the fullname with a suffix, still at most 63 characters. */}}
{{- define "eventcast.suffixed" -}}
{{- $full := include "eventcast.fullname" .root }}
{{- printf "%s-%s" ($full | trunc (int (sub 62 (len .suffix))) | trimSuffix "-") .suffix }}
{{- end }}

{{- define "eventcast.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "eventcast.labels" -}}
helm.sh/chart: {{ include "eventcast.chart" . }}
{{ include "eventcast.selectorLabels" . }}
app.kubernetes.io/version: {{ include "eventcast.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: eventcast
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of the gateway pods: immutable in a Deployment, so kept apart and minimal. */}}
{{- define "eventcast.selectorLabels" -}}
app.kubernetes.io/name: {{ include "eventcast.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end }}

{{/* Selector labels of the operator pod. */}}
{{- define "eventcast.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "eventcast.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The common labels with another component: (dict "root" $ "component" "operator"). */}}
{{- define "eventcast.componentLabels" -}}
{{- $labels := include "eventcast.labels" .root | fromYaml }}
{{- $_ := set $labels "app.kubernetes.io/component" .component }}
{{- toYaml $labels }}
{{- end }}

{{- define "eventcast.operatorLabels" -}}
{{- include "eventcast.componentLabels" (dict "root" . "component" "operator") }}
{{- end }}

{{- define "eventcast.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{- define "eventcast.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "eventcast.imageTag" .) }}
{{- end }}
{{- end }}

{{- define "eventcast.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "eventcast.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "eventcast.operatorName" -}}
{{- include "eventcast.suffixed" (dict "root" . "suffix" "operator") }}
{{- end }}

{{- define "eventcast.internalServiceName" -}}
{{- include "eventcast.suffixed" (dict "root" . "suffix" "internal") }}
{{- end }}

{{- define "eventcast.authSecretName" -}}
{{- include "eventcast.suffixed" (dict "root" . "suffix" "auth") }}
{{- end }}

{{/* true when a Redis broker is configured (as a URL or through an existing Secret). */}}
{{- define "eventcast.hasRedis" -}}
{{- if or .Values.redis.url .Values.redis.existingSecret }}true{{ end }}
{{- end }}

{{/* The pod port that serves /metrics and /admin/*: the internal port when on, else the public one. */}}
{{- define "eventcast.metricsPort" -}}
{{- if .Values.internalPort.enabled }}{{ .Values.internalPort.port }}{{ else }}{{ .Values.containerPort }}{{ end }}
{{- end }}

{{- define "eventcast.metricsPortName" -}}
{{- if .Values.internalPort.enabled }}internal{{ else }}http{{ end }}
{{- end }}

{{/*
Where a secret value comes from: {name, key} of the existing Secret when one is named, else of the chart's
auth Secret (when the value is given inline), else empty. Call with (dict "root" $ "item" .Values.auth.x "key" "k").
*/}}
{{- define "eventcast.secretRef" -}}
{{- if .item.existingSecret }}
{{- toYaml (dict "name" .item.existingSecret "key" .item.existingSecretKey) }}
{{- else if .item.value }}
{{- toYaml (dict "name" (include "eventcast.authSecretName" .root) "key" .key) }}
{{- end }}
{{- end }}

{{/* Refuse values that would give a gateway that silently loses events. */}}
{{- define "eventcast.validate" -}}
{{- $scaled := or (gt (int .Values.workers) 1) (gt (int .Values.replicas) 1) (ne .Values.autoscaling.mode "none") }}
{{- if and $scaled (not (include "eventcast.hasRedis" .)) }}
{{- fail "eventcast: workers > 1, replicas > 1 and autoscaling all need Redis: with the in-process memory:// broker each worker and pod only sees the events published to it. Set redis.url (or redis.existingSecret), or run workers=1 and replicas=1 with autoscaling.mode=none." }}
{{- end }}
{{- if and .Values.redis.url .Values.redis.existingSecret }}
{{- fail "eventcast: set redis.url or redis.existingSecret, not both." }}
{{- end }}
{{- if and (eq .Values.autoscaling.mode "keda") (not .Values.autoscaling.keda.serverAddress) }}
{{- fail "eventcast: autoscaling.mode=keda needs autoscaling.keda.serverAddress (the Prometheus URL KEDA queries)." }}
{{- end }}
{{- if lt (int .Values.autoscaling.maxReplicas) (int .Values.autoscaling.minReplicas) }}
{{- fail "eventcast: autoscaling.maxReplicas must be >= autoscaling.minReplicas." }}
{{- end }}
{{- end }}

{{/* terminationGracePeriodSeconds: the preStop pause, the whole drain, then time to exit. */}}
{{- define "eventcast.gracePeriodSeconds" -}}
{{- add (int .Values.lifecycle.preStopSleepSeconds) (int (ceil .Values.drainSeconds)) (int .Values.lifecycle.exitMarginSeconds) }}
{{- end }}

{{/* Restricted pod security, shared by the gateway and the operator. */}}
{{- define "eventcast.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "eventcast.containerSecurityContext" -}}
{{- toYaml .Values.securityContext }}
{{- end }}
