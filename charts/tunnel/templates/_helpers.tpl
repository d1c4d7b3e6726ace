{{- define "tunnel.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
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
