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

{{/*
An image reference from {repository, tag, digest}: repository@digest when digest is set,
else repository:tag, the tag defaulting to the chart's appVersion.
Call as: include "clothjob.imageRef" (list .Values.image .Chart.AppVersion)
*/}}
{{- define "clothjob.imageRef" -}}
{{- $image := index . 0 -}}
{{- $appVersion := index . 1 -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default $appVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The namespaces watched, in words (for NOTES.txt). */}}
{{- define "clothjob.watchedInWords" -}}
{{- if .Values.watchNamespaces -}}
{{- join ", " .Values.watchNamespaces -}}
{{- else -}}
all namespaces
{{- end -}}
{{- end -}}

{{/*
What the operator may do in a namespace it watches: reconcile ClothJobs into Jobs, read their
pods and the Job controller's Events, record Events, and give each ClothJob's runner its own
identity: a ServiceAccount, a Role with `get` on that ClothJob and `get`/`patch` on its status
(resourceNames), and a RoleBinding. Kubernetes lets it create that Role and RoleBinding only
because it holds those permissions itself (RBAC's escalation check): no `bind` or `escalate`.
*/}}
{{- define "clothjob.operatorRules" -}}
- apiGroups: [closetconnect.io]
  resources: [clothjobs]
  verbs: [get, list, watch, patch, delete]
- apiGroups: [closetconnect.io]
  resources: [clothjobs/status]
  verbs: [get, patch, update]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch, list, watch]
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [get, create, patch]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, create, patch]
{{- end -}}
