{{/*
Chart name, truncated to the 63 characters a DNS label allows.
*/}}
{{- define "nexus-edge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects. The workloads append "-gateway" / "-ingestion" / "-core"; kept to
42 characters (what the former ingestion StatefulSet needed), so object names stay the same across
upgrades.
*/}}
{{- define "nexus-edge.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 42 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 42 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 42 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "nexus-edge.gateway.fullname" -}}
{{- printf "%s-gateway" (include "nexus-edge.fullname" .) }}
{{- end }}

{{- define "nexus-edge.core.fullname" -}}
{{- printf "%s-core" (include "nexus-edge.fullname" .) }}
{{- end }}

{{- define "nexus-edge.ingestion.fullname" -}}
{{- printf "%s-ingestion" (include "nexus-edge.fullname" .) }}
{{- end }}

{{- define "nexus-edge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "nexus-edge.labels" -}}
helm.sh/chart: {{ include "nexus-edge.chart" . }}
{{ include "nexus-edge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: nexus-edge
{{- end }}

{{/*
Selector labels (add app.kubernetes.io/component per workload).
*/}}
{{- define "nexus-edge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nexus-edge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "nexus-edge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "nexus-edge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "nexus-edge.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "nexus-edge.plantConfigMap" -}}
{{- default (printf "%s-plant" (include "nexus-edge.gateway.fullname" .)) .Values.gateway.existingPlantConfigMap }}
{{- end }}

{{/*
Gateway mode: true when gateway.configSource is "file", false for "core"; fails on anything else.
*/}}
{{- define "nexus-edge.gateway.fileMode" -}}
{{- $src := .Values.gateway.configSource }}
{{- if eq $src "file" }}true
{{- else if eq $src "core" }}
{{- else }}
{{- fail (printf "gateway.configSource must be core or file, got %q" (toString $src)) }}
{{- end }}
{{- end }}

{{/*
Prometheus scrape annotations for a pod template (callers check metrics.podAnnotations).
*/}}
{{- define "nexus-edge.metricsAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.ops.port | int | quote }}
prometheus.io/path: /metrics
{{- end }}

{{/*
MQTT broker credentials from an optional Secret. Call with (dict "prefix" "NEXUS_GATEWAY" "root" $).
*/}}
{{- define "nexus-edge.mqttCredentialsEnv" -}}
{{- with .root.Values.mqtt.credentialsSecret.name }}
- name: {{ $.prefix }}_MQTT_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.root.Values.mqtt.credentialsSecret.usernameKey }}
- name: {{ $.prefix }}_MQTT_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.root.Values.mqtt.credentialsSecret.passwordKey }}
{{- end }}
{{- end }}

{{/*
Probes on the ops port. Call with the startup failureThreshold (periods of 5 s) as an int.
*/}}
{{- define "nexus-edge.probes" -}}
startupProbe:
  httpGet:
    path: /healthz
    port: ops
  periodSeconds: 5
  failureThreshold: {{ . }}
livenessProbe:
  httpGet:
    path: /healthz
    port: ops
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: ops
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 3
{{- end }}
