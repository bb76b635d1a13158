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

{{/* registry/repository:tag (or @digest); global.imageRegistry wins over image.registry. */}}
{{- define "eventcast.image" -}}
{{- $registry := (.Values.global).imageRegistry | default .Values.image.registry }}
{{- $repository := ternary (printf "%s/%s" (trimSuffix "/" $registry) .Values.image.repository) .Values.image.repository (ne $registry "") }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (include "eventcast.imageTag" .) }}
{{- end }}
{{- end }}

{{/* imagePullSecrets of every pod: the chart's own, then the parent chart's global ones. */}}
{{- define "eventcast.imagePullSecrets" -}}
{{- $secrets := concat (.Values.imagePullSecrets | default list) ((.Values.global).imagePullSecrets | default list) | uniq }}
{{- with $secrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
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

{{- define "eventcast.cdcSecretName" -}}
{{- include "eventcast.suffixed" (dict "root" . "suffix" "cdc") }}
{{- end }}

{{/* The name of kopf's peering object of this release's operator. */}}
{{- define "eventcast.peeringName" -}}
{{- include "eventcast.operatorName" . }}
{{- end }}

{{/* true when this release runs the operator itself. */}}
{{- define "eventcast.runsOperator" -}}
{{- if and (eq .Values.autoscaling.mode "operator") .Values.operator.enabled }}true{{ end }}
{{- end }}

{{/* The job label Prometheus gives this release's gateway series (the ServiceMonitor's Service name). */}}
{{- define "eventcast.job" -}}
{{- if .Values.internalPort.enabled }}{{ include "eventcast.internalServiceName" . }}{{ else }}{{ include "eventcast.fullname" . }}{{ end }}
{{- end }}

{{/*
Where a CDC URL comes from: {name, key} of the existing Secret, else of the chart's cdc Secret when the URL
is given inline, else empty. Call with (dict "root" $ "item" .Values.cdc.outbox "key" "outbox-url").
*/}}
{{- define "eventcast.cdcRef" -}}
{{- if .item.existingSecret }}
{{- toYaml (dict "name" .item.existingSecret "key" .item.secretKey) }}
{{- else if .item.url }}
{{- toYaml (dict "name" (include "eventcast.cdcSecretName" .root) "key" .key) }}
{{- end }}
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
{{- if and (eq .Values.autoscaling.scaleDown.type "Percent") (gt (int .Values.autoscaling.scaleDown.value) 100) }}
{{- fail "eventcast: autoscaling.scaleDown.value is a percentage with type Percent: at most 100." }}
{{- end }}
{{- if and .Values.ingress.enabled .Values.httpRoute.enabled }}
{{- fail "eventcast: ingress.enabled and httpRoute.enabled both route the same Service: pick one." }}
{{- end }}
{{- if and .Values.httpRoute.enabled (not .Values.httpRoute.parentRefs) }}
{{- fail "eventcast: httpRoute.enabled needs httpRoute.parentRefs (the Gateway to attach to)." }}
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

{{/*
A probe: the chart's httpGet on `path`, or the user's whole `override`. Call with
(dict "probe" .Values.probes.liveness "path" "/healthz").
*/}}
{{- define "eventcast.probe" -}}
{{- if .probe.override }}
{{- toYaml .probe.override }}
{{- else }}
httpGet:
  path: {{ .path }}
  port: http
{{- range $field := list "initialDelaySeconds" "periodSeconds" "timeoutSeconds" "successThreshold" "failureThreshold" }}
{{- if hasKey $.probe $field }}
{{ $field }}: {{ get $.probe $field }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Checksum of the existing Secrets the gateway reads only at start (env), looked up at install/upgrade so a
changed Secret rolls the pods. Empty data when the Secret is absent or when rendering offline (helm template).
*/}}
{{- define "eventcast.existingSecretsChecksum" -}}
{{- $names := list }}
{{- range $item := list .Values.auth.adminToken .Values.auth.jwt.secret .Values.auth.jwt.publicKey .Values.auth.jwt.jwks }}
{{- with $item.existingSecret }}{{ $names = append $names . }}{{ end }}
{{- end }}
{{- with .Values.redis.existingSecret }}{{ $names = append $names . }}{{ end }}
{{- with .Values.cdc.outbox.existingSecret }}{{ $names = append $names . }}{{ end }}
{{- with .Values.cdc.nats.existingSecret }}{{ $names = append $names . }}{{ end }}
{{- $data := dict }}
{{- range $name := $names | uniq | sortAlpha }}
{{- $secret := lookup "v1" "Secret" $.Release.Namespace $name }}
{{- $_ := set $data $name (($secret).data | default dict) }}
{{- end }}
{{- toJson $data | sha256sum }}
{{- end }}

{{/*
HPA behavior from autoscaling.scaleDown (the one scale-down policy) and autoscaling.scaleUp, for the hpa and
keda modes. A Percent policy also gets "1 pod per period" with selectPolicy Max: at least one pod may go,
as the operator does, where the HPA alone would round a small percentage down to nothing.
*/}}
{{- define "eventcast.hpaBehavior" -}}
{{- $down := .Values.autoscaling.scaleDown }}
{{- $policies := list (dict "type" $down.type "value" (int $down.value) "periodSeconds" (int $down.periodSeconds)) }}
{{- if eq $down.type "Percent" }}
{{- $policies = append $policies (dict "type" "Pods" "value" 1 "periodSeconds" (int $down.periodSeconds)) }}
{{- end }}
{{- $behavior := dict "scaleUp" .Values.autoscaling.scaleUp "scaleDown" (dict "stabilizationWindowSeconds" (int $down.stabilizationWindowSeconds) "selectPolicy" "Max" "policies" $policies) }}
{{- toYaml $behavior }}
{{- end }}
