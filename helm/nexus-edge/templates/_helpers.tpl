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

{{/*
ServiceAccount of one component. Call with (dict "root" $ "component" "gateway").
*/}}
{{- define "nexus-edge.serviceAccountName" -}}
{{- if .root.Values.serviceAccount.create }}
{{- printf "%s-%s" (include "nexus-edge.fullname" .root) .component }}
{{- else }}default{{- end }}
{{- end }}

{{/*
Labels and selector labels of one component. Call with (dict "root" $ "component" "gateway").
*/}}
{{- define "nexus-edge.componentLabels" -}}
{{ include "nexus-edge.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "nexus-edge.componentSelector" -}}
{{ include "nexus-edge.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
The broker address: mqtt.host, or the bundled EMQX's client Service.
*/}}
{{- define "nexus-edge.mqttHost" -}}
{{- if .Values.mqtt.host }}{{ .Values.mqtt.host }}
{{- else if .Values.emqx.enabled }}{{ include "nexus-edge.fullname" . }}-emqx
{{- else }}{{ fail "set mqtt.host (an external broker) or emqx.enabled=true" }}
{{- end }}
{{- end }}

{{- define "nexus-edge.timescaledbHost" -}}
{{- printf "%s-timescaledb" (include "nexus-edge.fullname" .) }}
{{- end }}

{{/*
The historian's DSN as env entries: the bundled TimescaleDB (password as libpq's PGPASSWORD), or the
db.dsnSecret. Call with (dict "root" $ "name" "NEXUS_INGESTION_DB_DSN").
*/}}
{{- define "nexus-edge.dsnEnv" -}}
{{- $v := .root.Values }}
{{- if $v.timescaledb.enabled }}
- name: {{ .name }}
  value: {{ printf "host=%s port=5432 dbname=%s user=%s" (include "nexus-edge.timescaledbHost" .root) $v.timescaledb.database $v.timescaledb.user | quote }}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ required "timescaledb.auth.existingSecret is required" $v.timescaledb.auth.existingSecret }}
      key: password
{{- else }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ required "db.dsnSecret.name is required (or timescaledb.enabled)" $v.db.dsnSecret.name }}
      key: {{ $v.db.dsnSecret.key }}
{{- end }}
{{- end }}

{{/*
The Secret with the broker passwords per role: mqtt.credentialsSecret, or the chart-made one
(mqtt.createCredentials), or none ("").
*/}}
{{- define "nexus-edge.credentialsSecret" -}}
{{- if .Values.mqtt.credentialsSecret }}{{ .Values.mqtt.credentialsSecret }}
{{- else if .Values.mqtt.createCredentials }}{{ include "nexus-edge.fullname" . }}-mqtt
{{- end }}
{{- end }}

{{/*
The broker port the daemons connect to: mqtt.tls.port with TLS, else mqtt.port.
*/}}
{{- define "nexus-edge.mqttPort" -}}
{{- if .Values.mqtt.tls.enabled }}{{ .Values.mqtt.tls.port | int }}{{ else }}{{ .Values.mqtt.port | int }}{{ end }}
{{- end }}

{{/*
Whether the daemons use the bundled EMQX ("true" or "").
*/}}
{{- define "nexus-edge.bundledBroker" -}}
{{- if and .Values.emqx.enabled (not .Values.mqtt.host) }}true{{ end }}
{{- end }}

{{/*
The Secret and key of the broker's CA for the daemons: mqtt.tls.caSecret, or the bundled EMQX's
certificate Secret (its ca.crt), or none (the system's CAs). Two lines: name, key.
*/}}
{{- define "nexus-edge.mqttCa" -}}
{{- $t := .Values.mqtt.tls }}
{{- if $t.caSecret }}{{ $t.caSecret }}
{{ $t.caKey }}
{{- else if and (include "nexus-edge.bundledBroker" .) .Values.emqx.tls.enabled .Values.emqx.tls.secret }}{{ .Values.emqx.tls.secret }}
ca.crt
{{- end }}
{{- end }}

{{/*
The user name patterns of the gateways with a broker identity each: a regular expression (EMQX's ACL
"re") matching every gateway id this release runs and no other role's user.
*/}}
{{- define "nexus-edge.gatewayUserRegex" -}}
{{- if eq (include "nexus-edge.gateway.fileMode" .) "true" }}
{{- printf "^%s$" (regexQuoteMeta .Values.gateway.gatewayId) }}
{{- else }}
{{- /* Deployment pods: <deployment>-<pod-template-hash>-<5 characters> */}}
{{- printf "^%s-[a-z0-9]+-[a-z0-9]+$" (regexQuoteMeta (include "nexus-edge.gateway.fullname" .)) }}
{{- end }}
{{- end }}

{{/*
The bundled EMQX's acl.conf (Erlang terms), per role as deploy/mosquitto/nexus.acl (docs/security.md):
rendered into its ConfigMap and into the StatefulSet's checksum, since EMQX reads the file only at start
(a subPath mount is not updated either), so a changed ACL rolls the brokers.
*/}}
{{- define "nexus-edge.emqxAcl" -}}
{{- $e := .Values.emqx }}
{{- $t := .Values.topicRoot }}
{{- $cr := .Values.controlRoot }}
{{- $u := .Values.mqtt.users }}
{{- if .Values.mqtt.gatewayIdentity.enabled }}
{{- $gwUser := printf "{re, %s}" (include "nexus-edge.gatewayUserRegex" . | quote) }}
%% first match wins: confirmations come from ingestion only, whatever unsTopics allows
{deny, {username, {{ $gwUser }}}, publish, ["{{ $t }}/ack/v1/#"]}.
{allow, {username, {{ $gwUser }}}, publish,
   ["{{ $t }}/batch/v1/#", "{{ $t }}/windows/v1/#", "{{ $t }}/events/v1/#", "{{ $t }}/alarms/v1/#",
    {{- range $e.acl.unsTopics }} {{ . | quote }},{{ end }}
    "{{ $cr }}/status/gateways/${username}", "{{ $cr }}/config/sync/request", "{{ $cr }}/cmd/+/+/response",
    "{{ $cr }}/status/devices/+"]}.
{allow, {username, {{ $gwUser }}}, subscribe,
   ["{{ $t }}/ack/v1/${username}", "{{ $cr }}/config/sync/response/${username}", "{{ $cr }}/config/devices/+", "{{ $cr }}/cmd/+/+/set"]}.
{{- with $.Values.sparkplug }}{{ if .enabled }}
%% Sparkplug B: each edge node (its id = the gateway id) its own node's topics, its commands, the host's STATE
{allow, {username, {{ $gwUser }}}, publish,
   ["spBv1.0/{{ .groupId }}/NBIRTH/${username}", "spBv1.0/{{ .groupId }}/NDEATH/${username}",
    "spBv1.0/{{ .groupId }}/DBIRTH/${username}/+", "spBv1.0/{{ .groupId }}/DDATA/${username}/+",
    "spBv1.0/{{ .groupId }}/DDEATH/${username}/+"]}.
{allow, {username, {{ $gwUser }}}, subscribe,
   ["spBv1.0/{{ .groupId }}/NCMD/${username}", "spBv1.0/{{ .groupId }}/DCMD/${username}/+", "spBv1.0/STATE/{{ .hostId }}"]}.
{{- end }}{{ end }}
{{- else }}
%% first match wins: confirmations come from ingestion only, whatever unsTopics allows
{deny, {username, {{ $u.gateway | quote }}}, publish, ["{{ $t }}/ack/v1/#"]}.
{allow, {username, {{ $u.gateway | quote }}}, publish,
   ["{{ $t }}/batch/v1/#", "{{ $t }}/windows/v1/#", "{{ $t }}/events/v1/#", "{{ $t }}/alarms/v1/#",
    {{- range $e.acl.unsTopics }} {{ . | quote }},{{ end }}
    "{{ $cr }}/status/gateways/+", "{{ $cr }}/config/sync/request", "{{ $cr }}/cmd/+/+/response",
    "{{ $cr }}/status/devices/+"]}.
{allow, {username, {{ $u.gateway | quote }}}, subscribe,
   ["{{ $t }}/ack/v1/+", "{{ $cr }}/config/sync/response/+", "{{ $cr }}/config/devices/+", "{{ $cr }}/cmd/+/+/set"]}.
{{- with $.Values.sparkplug }}{{ if .enabled }}
%% Sparkplug B: the edge nodes (shared user: any node id of the group), their commands, the host's STATE
{allow, {username, {{ $u.gateway | quote }}}, publish,
   ["spBv1.0/{{ .groupId }}/NBIRTH/+", "spBv1.0/{{ .groupId }}/NDEATH/+", "spBv1.0/{{ .groupId }}/DBIRTH/+/+",
    "spBv1.0/{{ .groupId }}/DDATA/+/+", "spBv1.0/{{ .groupId }}/DDEATH/+/+"]}.
{allow, {username, {{ $u.gateway | quote }}}, subscribe,
   ["spBv1.0/{{ .groupId }}/NCMD/+", "spBv1.0/{{ .groupId }}/DCMD/+/+", "spBv1.0/STATE/{{ .hostId }}"]}.
{{- end }}{{ end }}
{{- end }}
{allow, {username, {{ $u.ingestion | quote }}}, subscribe,
   ["$share/{{ .Values.ingestion.shareGroup }}/{{ $t }}/batch/v1/#", "$share/{{ .Values.ingestion.shareGroup }}/{{ $t }}/windows/v1/#",
    "$share/{{ .Values.ingestion.shareGroup }}/{{ $t }}/events/v1/#", "{{ $t }}/batch/v1/#", "{{ $t }}/windows/v1/#", "{{ $t }}/events/v1/#"]}.
{allow, {username, {{ $u.ingestion | quote }}}, publish, ["{{ $t }}/ack/v1/+"]}.
{{- with $.Values.sparkplug }}{{ if .enabled }}
%% the Sparkplug primary host: the group's messages, rebirth requests, its own STATE (retained; its will too)
{allow, {username, {{ $u.ingestion | quote }}}, subscribe, ["spBv1.0/{{ .groupId }}/#", "spBv1.0/STATE/{{ .hostId }}"]}.
{allow, {username, {{ $u.ingestion | quote }}}, publish, ["spBv1.0/{{ .groupId }}/NCMD/+", "spBv1.0/STATE/{{ .hostId }}"]}.
{{- end }}{{ end }}
%% gateway_core's web console: device health, the live stream's batches (not shared) and its filter of the
%% per-tag topics as it subscribes it (EMQX checks a subscription's filter, not the topics it delivers)
{allow, {username, {{ $u.core | quote }}}, subscribe,
   ["{{ $cr }}/status/gateways/+", "{{ $cr }}/config/sync/request", "{{ $cr }}/cmd/+/+/response",
    "{{ $cr }}/status/devices/+", "{{ $t }}/batch/v1/#", "{{ with .Values.gateway.unsPrefix }}{{ . }}/{{ end }}+/+/+/+/+/+"]}.
{allow, {username, {{ $u.core | quote }}}, publish,
   ["{{ $cr }}/config/devices/+", "{{ $cr }}/config/sync/response/+", "{{ $cr }}/cmd/+/+/set", "{{ $cr }}/status/gateways/+"]}.
{{- $n := .Values.normalizer }}
{allow, {username, {{ $u.normalizer | quote }}}, subscribe,
   ["$share/{{ $n.shareGroup }}/{{ $n.inRoot }}/batch/v1/#", "$share/{{ $n.shareGroup }}/{{ $n.inPrefix }}/#", "{{ $n.inRoot }}/batch/v1/#", "{{ $n.inPrefix }}/#"]}.
{allow, {username, {{ $u.normalizer | quote }}}, publish,
   ["{{ $n.outRoot }}/batch/v1/#", "{{ $n.outRoot }}/windows/v1/#", "{{ $n.outRoot }}/events/v1/#",
    "{{ $n.outRoot }}/deadletter/v1/normalizer/#", "{{ $n.inRoot }}/ack/v1/+"]}.
{deny, all}.
{{- end }}

{{/*
Every file a daemon reads from a Secret: TLS material for the broker, PostgreSQL, the REST API. A YAML
list of {volume, path, secret, items}; the env entries name the same paths. Call with
(dict "root" $ "role" "core").
*/}}
{{- define "nexus-edge.secretFiles" -}}
{{- $v := .root.Values }}
{{- $role := .role | default .component }}
{{- if and $v.mqtt.tls.enabled (has $role (list "gateway" "ingestion" "core" "normalizer")) }}
{{- $ca := include "nexus-edge.mqttCa" .root | splitList "\n" }}
{{- if gt (len $ca) 1 }}
- {volume: mqtt-ca, path: /etc/nexus-tls/mqtt-ca, secret: {{ index $ca 0 | quote }}, items: [{key: {{ index $ca 1 | quote }}, path: ca.crt}]}
{{- end }}
{{- with get $v.mqtt.tls.clientCertSecrets $role }}
- {volume: mqtt-client, path: /etc/nexus-tls/mqtt-client, secret: {{ . | quote }}, items: [{key: tls.crt, path: tls.crt}, {key: tls.key, path: tls.key}]}
{{- end }}
{{- end }}
{{- if has $role (list "ingestion" "core") }}
{{- with $v.db.tls.caSecret }}
- {volume: db-ca, path: /etc/nexus-tls/db-ca, secret: {{ . | quote }}, items: [{key: {{ $v.db.tls.caKey | quote }}, path: ca.crt}]}
{{- end }}
{{- with $v.db.tls.clientCertSecret }}
- {volume: db-client, path: /etc/nexus-tls/db-client, secret: {{ . | quote }}, items: [{key: tls.crt, path: tls.crt}, {key: tls.key, path: tls.key}]}
{{- end }}
{{- end }}
{{- if eq $role "core" }}
{{- with $v.core.http.tls.secret }}
- {volume: http-tls, path: /etc/nexus-tls/http, secret: {{ . | quote }}, items: [{key: tls.crt, path: tls.crt}, {key: tls.key, path: tls.key}]}
{{- end }}
{{- with $v.core.http.tls.clientCaSecret }}
- {volume: http-client-ca, path: /etc/nexus-tls/http-client-ca, secret: {{ . | quote }}, items: [{key: ca.crt, path: ca.crt}]}
{{- end }}
{{- end }}
{{- if and (eq $role "operator") (not $v.operator.coreUrl) $v.core.http.tls.secret }}
- {volume: core-ca, path: /etc/nexus-tls/core-ca, secret: {{ $v.core.http.tls.secret | quote }}, items: [{key: ca.crt, path: ca.crt}]}
{{- end }}
{{- end }}

{{- define "nexus-edge.secretMounts" -}}
{{- range (include "nexus-edge.secretFiles" . | fromYamlArray) }}
- name: {{ .volume }}
  mountPath: {{ .path }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "nexus-edge.secretVolumes" -}}
{{- range (include "nexus-edge.secretFiles" . | fromYamlArray) }}
- name: {{ .volume }}
  secret:
    secretName: {{ .secret }}
    # 0440: root-owned, read by the daemons' group (fsGroup); libpq and OpenSSL accept such a key
    defaultMode: 288
    items:
      {{- toYaml .items | nindent 6 }}
{{- end }}
{{- end }}

{{/*
libpq's TLS variables for a daemon that connects to the historian (db.tls).
*/}}
{{- define "nexus-edge.dbTlsEnv" -}}
{{- $t := .Values.db.tls }}
{{- with $t.sslmode }}
{{- if not (has . (list "disable" "allow" "prefer" "require" "verify-ca" "verify-full")) }}
{{- fail (printf "db.tls.sslmode must be disable, allow, prefer, require, verify-ca or verify-full, got %q" .) }}
{{- end }}
- name: PGSSLMODE
  value: {{ . | quote }}
{{- end }}
{{- if $t.caSecret }}
- name: PGSSLROOTCERT
  value: /etc/nexus-tls/db-ca/ca.crt
{{- end }}
{{- if $t.clientCertSecret }}
- name: PGSSLCERT
  value: /etc/nexus-tls/db-client/tls.crt
- name: PGSSLKEY
  value: /etc/nexus-tls/db-client/tls.key
{{- end }}
{{- end }}

{{/*
Broker, ops and log env entries every daemon has. Call with
(dict "root" $ "prefix" "NEXUS_GATEWAY" "role" "gateway" "logLevel" .. "logJson" ..).
*/}}
{{- define "nexus-edge.commonEnv" -}}
{{- $v := .root.Values }}
{{- $t := $v.mqtt.tls }}
{{- $creds := include "nexus-edge.credentialsSecret" .root }}
{{- $identity := and (eq .role "gateway") $v.mqtt.gatewayIdentity.enabled }}
- name: {{ .prefix }}_MQTT_HOST
  value: {{ include "nexus-edge.mqttHost" .root | quote }}
- name: {{ .prefix }}_MQTT_PORT
  value: {{ include "nexus-edge.mqttPort" .root | quote }}
- name: {{ .prefix }}_MQTT_MAX_INFLIGHT
  value: {{ $v.mqtt.maxInflight | int | quote }}
{{- if $identity }}
# its own broker user (its gateway id) and token: [mqtt] username, password of the file the init container wrote
- name: {{ .prefix }}_CONFIG
  value: /run/nexus/mqtt-identity/mqtt.toml
{{- else if $creds }}
- name: {{ .prefix }}_MQTT_USERNAME
  value: {{ get $v.mqtt.users .role | quote }}
- name: {{ .prefix }}_MQTT_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $creds }}
      key: {{ .role }}-password
{{- end }}
{{- if $t.enabled }}
- name: {{ .prefix }}_MQTT_TLS
  value: "true"
{{- range (include "nexus-edge.secretFiles" (dict "root" .root "role" .role) | fromYamlArray) }}
{{- if eq .volume "mqtt-ca" }}
- name: {{ $.prefix }}_MQTT_CA_FILE
  value: /etc/nexus-tls/mqtt-ca/ca.crt
{{- else if eq .volume "mqtt-client" }}
- name: {{ $.prefix }}_MQTT_CERT_FILE
  value: /etc/nexus-tls/mqtt-client/tls.crt
- name: {{ $.prefix }}_MQTT_KEY_FILE
  value: /etc/nexus-tls/mqtt-client/tls.key
{{- end }}
{{- end }}
{{- if $t.insecureNoHostnameCheck }}
- name: {{ .prefix }}_MQTT_TLS_INSECURE_NO_HOSTNAME_CHECK
  value: "true"
{{- end }}
{{- end }}
- name: {{ .prefix }}_OPS_HOST
  value: "0.0.0.0"
- name: {{ .prefix }}_OPS_PORT
  value: {{ $v.ops.port | int | quote }}
- name: {{ .prefix }}_LOG_LEVEL
  value: {{ .logLevel | quote }}
- name: {{ .prefix }}_LOG_JSON
  value: {{ .logJson | quote }}
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
{{- end }}

{{/*
Pod annotations: Prometheus scrape annotations (metrics.podAnnotations) and extra ones.
Call with (dict "root" $ "extra" .podAnnotations "checksum" "...").
*/}}
{{- define "nexus-edge.podAnnotations" -}}
{{- if or .root.Values.metrics.podAnnotations .extra .checksum }}
annotations:
  {{- with .checksum }}
  checksum/config: {{ . }}
  {{- end }}
  {{- if .root.Values.metrics.podAnnotations }}
  prometheus.io/scrape: "true"
  prometheus.io/port: {{ .root.Values.ops.port | int | quote }}
  prometheus.io/path: /metrics
  {{- end }}
  {{- with .extra }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
{{- end }}

{{/*
Scheduling fields. Call with (dict "root" $ "component" "gateway" "values" $gw "spread" true).
*/}}
{{- define "nexus-edge.scheduling" -}}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .values.affinity }}
affinity:
  {{- toYaml .values.affinity | nindent 2 }}
{{- else if .spread }}
# Prefer one pod per node: a lost node takes fewer of them with it.
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "nexus-edge.componentSelector" . | nindent 14 }}
{{- end }}
{{- end }}

{{/*
A PodDisruptionBudget for a component with more than one replica. Call with
(dict "root" $ "component" "gateway" "max" <most replicas> "pdb" <values.podDisruptionBudget>).
*/}}
{{- define "nexus-edge.pdb" -}}
{{- if and .pdb.enabled (gt (int .max) 1) }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "nexus-edge.fullname" .root }}-{{ .component }}
  labels:
    {{- include "nexus-edge.componentLabels" . | nindent 4 }}
spec:
  maxUnavailable: {{ .pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "nexus-edge.componentSelector" . | nindent 6 }}
{{- end }}
{{- end }}

{{/*
The HPA of a Deployment on CPU and memory (and extra metrics). Call with
(dict "root" $ "component" "gateway" "as" <autoscaling values> "extra" <list of metrics>).
*/}}
{{- define "nexus-edge.hpa" -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "nexus-edge.fullname" .root }}-{{ .component }}
  labels:
    {{- include "nexus-edge.componentLabels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "nexus-edge.fullname" .root }}-{{ .component }}
  minReplicas: {{ .as.minReplicas | int }}
  maxReplicas: {{ .as.maxReplicas | int }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ .as.targetCPUUtilizationPercentage | int }}
    - type: Resource
      resource:
        name: memory
        target:
          type: Utilization
          averageUtilization: {{ .as.targetMemoryUtilizationPercentage | int }}
    {{- with .extra }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .as.behavior }}
  behavior:
    {{- toYaml . | nindent 4 }}
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
