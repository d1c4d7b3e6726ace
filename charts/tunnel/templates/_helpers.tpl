{{- define "tunnel.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tunnel.serviceAccountName" -}}
{{- default (include "tunnel.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "tunnel.labels" -}}
app.kubernetes.io/name: tunnel
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "tunnel.selectorLabels" -}}
app.kubernetes.io/name: tunnel
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The operator image's tag. */}}
{{- define "tunnel.tag" -}}
{{- .Values.image.tag | default .Chart.AppVersion -}}
{{- end -}}

{{/* The port of a bind address (":8081", "0.0.0.0:8081", "8081"). */}}
{{- define "tunnel.port" -}}
{{- splitList ":" (toString .) | last -}}
{{- end -}}

{{/* Whether metrics are served. */}}
{{- define "tunnel.metricsOn" -}}
{{- if ne (toString .Values.flags.metricsBindAddress) "0" -}}true{{- end -}}
{{- end -}}

{{/* Where the metrics certificate Secret is mounted. */}}
{{- define "tunnel.metricsCertDir" -}}
/etc/tunnel/metrics-certs
{{- end -}}
