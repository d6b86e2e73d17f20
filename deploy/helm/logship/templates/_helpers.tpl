{{/* The chart's name, or nameOverride. */}}
{{- define "logship.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The objects' name: fullnameOverride, else the release name when it contains
the chart's name (`helm install logship` → logship, as in the kustomize
base), else <release>-<name>. 63 characters at most (a DNS label); the
Service adds "-metrics", so keep release names short.
*/}}
{{- define "logship.fullname" -}}
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

{{- define "logship.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Every object's labels. */}}
{{- define "logship.labels" -}}
helm.sh/chart: {{ include "logship.chart" . }}
{{ include "logship.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* What the DaemonSet and the Service select pods by. */}}
{{- define "logship.selectorLabels" -}}
app.kubernetes.io/name: {{ include "logship.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "logship.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "logship.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "logship.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Where the pod sees the Elasticsearch credentials and CA. */}}
{{- define "logship.credentialsDir" -}}/run/secrets/elasticsearch{{- end }}
{{- define "logship.caDir" -}}/etc/logship-tls{{- end }}
{{/* The data directory inside the pod (the config's data_dir). */}}
{{- define "logship.dataDir" -}}/var/lib/logship{{- end }}

{{/*
logship's config file (docs/configuration.md). With the default values it is
the kustomize base's ConfigMap config, key for key.
*/}}
{{- define "logship.config" -}}
{{- $es := .Values.elasticsearch -}}
{{- $auth := $es.auth -}}
{{- $ca := $es.tls.ca -}}
{{- if not $es.hosts }}{{ fail "elasticsearch.hosts: give at least one URL" }}{{ end -}}
{{- if and $ca.secretName $ca.configMapName }}{{ fail "elasticsearch.tls.ca: give secretName or configMapName, not both" }}{{ end -}}
node_name: ${NODE_NAME}
data_dir: {{ include "logship.dataDir" . }}
shutdown_timeout: 25s
http:
  listen: "0.0.0.0:{{ .Values.httpPort }}"   # /metrics, /healthz, /readyz
sources:
  - name: containers
    include: ["/var/log/containers/*.log"]
    format: auto
    read_from: beginning
  # The node's own services (kubelet, containerd) from the host's
  # persistent journal (hostPath /var/log; the volatile one is mounted
  # at /run/log/journal: point `directory` there on hosts without it).
  - name: node
    journald:
      units: [kubelet, containerd]
      since: now
      directory: /var/log/journal
{{- with .Values.extraSources }}
{{ toYaml . | indent 2 }}
{{- end }}
{{- if eq .Values.buffer.type "disk" }}
buffer:
  type: disk
  max_bytes: {{ .Values.buffer.maxBytes }}
{{- end }}
sink:
  elasticsearch:
    hosts:
    {{- range $i, $host := $es.hosts }}
      {{- if eq $i 0 }}
      - "${ELASTICSEARCH_URL:-{{ $host }}}"
      {{- else }}
      - {{ $host | quote }}
      {{- end }}
    {{- end }}
    index: {{ $es.index | quote }}
    {{- if $auth.existingSecret }}
    auth:
      {{- if eq $auth.type "basic" }}
      basic:
        username: "${ELASTICSEARCH_USERNAME}"
        password_file: {{ include "logship.credentialsDir" . }}/password
      {{- else }}
      api_key_file: {{ include "logship.credentialsDir" . }}/api-key
      {{- end }}
    {{- end }}
    {{- if or $ca.secretName $ca.configMapName }}
    tls:
      ca_file: {{ include "logship.caDir" . }}/ca.pem
    {{- end }}
kubernetes:
  mode: daemonset
  node_name: ${NODE_NAME}
  metadata_wait: 5s
  delete_grace: 60s
  dedot: true
{{- end }}
