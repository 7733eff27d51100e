{{- define "pulse-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pulse-operator.fullname" -}}
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

{{- define "pulse-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pulse-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "pulse-operator.labels" -}}
{{ include "pulse-operator.commonLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- /* Every label but the component (for objects that are not the operator's pod). */}}
{{- define "pulse-operator.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "pulse-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pulse
{{- end }}

{{- /*
Cluster-scoped objects (the clusterWide ClusterRole and its binding) are named after the
release's namespace too: two releases of the same name in two namespaces must not collide,
or Helm refuses the second ("exists and cannot be imported into the current release").
*/}}
{{- define "pulse-operator.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "pulse-operator.fullname" .) }}
{{- end }}

{{- /* The watched namespace as PULSE_WATCH_NAMESPACE says it: empty watches every one. */}}
{{- define "pulse-operator.watchEnv" -}}
{{- ternary "" (include "pulse-operator.watchNamespace" .) .Values.clusterWide }}
{{- end }}

{{- define "pulse-operator.watchNamespace" -}}
{{- default .Release.Namespace .Values.watchNamespace }}
{{- end }}

{{- define "pulse-operator.image" -}}
{{- $ref := .Values.image.repository }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $ref .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $ref (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}
