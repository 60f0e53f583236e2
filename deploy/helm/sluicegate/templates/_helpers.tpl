{{/* Chart name. */}}
{{- define "sluicegate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name (release-based, at most 63 characters). */}}
{{- define "sluicegate.fullname" -}}
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

{{- define "sluicegate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "sluicegate.labels" -}}
helm.sh/chart: {{ include "sluicegate.chart" . }}
{{ include "sluicegate.selectorLabels" . }}
app.kubernetes.io/component: gateway
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the gateway's pods. */}}
{{- define "sluicegate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sluicegate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The Secret the pods read their environment from. */}}
{{- define "sluicegate.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "sluicegate.fullname" .)) }}
{{- end }}

{{/* The listening port: config.server.port, else 8080. */}}
{{- define "sluicegate.port" -}}
{{- dig "server" "port" 8080 .Values.config }}
{{- end }}

{{- define "sluicegate.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The pods' ServiceAccount. */}}
{{- define "sluicegate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- .Values.serviceAccount.name | default (include "sluicegate.fullname" .) }}
{{- else }}
{{- .Values.serviceAccount.name | default "default" }}
{{- end }}
{{- end }}

{{/* "true" when the pods are interchangeable replicas on a shared store (store.mode postgresql). */}}
{{- define "sluicegate.replicated" -}}
{{- if eq (toString .Values.store.mode) "postgresql" }}true{{ end }}
{{- end }}

{{/*
Refuse a config that does not fit store.mode: SQLite replicas would each have their own store
(an id made through one pod is a 404 on the others), and a `local` provider on an emptyDir
keeps its bytes on one pod. Renders nothing.
*/}}
{{- define "sluicegate.validate" -}}
{{- $mode := toString .Values.store.mode }}
{{- $url := toString (dig "store" "url" "" .Values.config) }}
{{- if eq $mode "postgresql" }}
{{- if or (eq $url "") (hasPrefix "sqlite:" $url) }}
{{- fail "store.mode=postgresql needs config.store.url: a postgresql:// URL, e.g. os.environ/SLUICEGATE_STORE_URL (for one replica on SQLite use -f values-sqlite.yaml)" }}
{{- end }}
{{- range (dig "providers" (list) .Values.config) }}
{{- if and (eq (toString .type) "local") (not .shared_filesystem) }}
{{- fail (printf "store.mode=postgresql: provider %s is type local, whose bytes would be on one pod's emptyDir; use s3 or gcs (or shared_filesystem: true on a ReadWriteMany volume via extraVolumes)" (toString .name)) }}
{{- end }}
{{- end }}
{{- else if eq $mode "sqlite" }}
{{- if not (hasPrefix "sqlite:///" $url) }}
{{- fail "store.mode=sqlite needs config.store.url: sqlite:////data/... (use -f values-sqlite.yaml)" }}
{{- end }}
{{- else }}
{{- fail (printf "store.mode must be postgresql or sqlite, not %q" $mode) }}
{{- end }}
{{- end }}
