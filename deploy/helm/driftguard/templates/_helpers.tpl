{{/* Common labels. */}}
{{- define "driftguard.labels" -}}
app.kubernetes.io/name: driftguard
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: driftguard-{{ .Chart.Version }}
{{- end }}

{{/* Selector labels of the agent pods. */}}
{{- define "driftguard.selectorLabels" -}}
app.kubernetes.io/name: driftguard
app.kubernetes.io/component: agent
{{- end }}
