{{/* Common labels. */}}
{{- define "clothjob.labels" -}}
app.kubernetes.io/name: clothjob-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "clothjob.selectorLabels" -}}
app.kubernetes.io/name: clothjob-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
