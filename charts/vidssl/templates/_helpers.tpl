{{/* Names, labels and the pieces every pod shares. */}}

{{- define "vidssl.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vidssl.fullname" -}}
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

{{- define "vidssl.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "vidssl.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "seaweedfs"). */}}
{{- define "vidssl.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vidssl.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "vidssl.componentLabels" -}}
{{ include "vidssl.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The vidssl image, CPU variant; "vidssl.imageGpu" adds image.gpuTagSuffix. */}}
{{- define "vidssl.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "vidssl.imageGpu" -}}
{{- printf "%s:%s%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) .Values.image.gpuTagSuffix }}
{{- end }}

{{/* The Secret with endpoint, access-key, secret-key. */}}
{{- define "vidssl.s3SecretName" -}}
{{- default .Values.s3.secretName .Values.s3.existingSecret }}
{{- end }}

{{- define "vidssl.seaweedfsHost" -}}
{{- printf "%s-seaweedfs.%s.svc.cluster.local" (include "vidssl.fullname" .) .Release.Namespace }}
{{- end }}

{{- define "vidssl.pushgatewayAddress" -}}
{{- if .Values.pushgateway.enabled }}
{{- printf "%s-pushgateway.%s.svc.cluster.local:9091" (include "vidssl.fullname" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{/* Where KFP runs the pipelines' pods: kfp.namespace (multi-user) or the release namespace. */}}
{{- define "vidssl.runNamespace" -}}
{{- default .Release.Namespace .Values.kfp.namespace }}
{{- end }}

{{/* The store's environment, as the vidssl code reads it (pipelines/cluster.py). */}}
{{- define "vidssl.s3Env" -}}
- name: VIDSSL_S3_ENDPOINT
  valueFrom: {secretKeyRef: {name: {{ include "vidssl.s3SecretName" . }}, key: endpoint}}
- name: VIDSSL_S3_ACCESS_KEY
  valueFrom: {secretKeyRef: {name: {{ include "vidssl.s3SecretName" . }}, key: access-key}}
- name: VIDSSL_S3_SECRET_KEY
  valueFrom: {secretKeyRef: {name: {{ include "vidssl.s3SecretName" . }}, key: secret-key}}
{{- end }}

{{/* Pod-level security: non-root with a fixed uid (the image's 1000 unless given). */}}
{{- define "vidssl.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ default 1000 .uid }}
runAsGroup: {{ default 1000 .uid }}
fsGroup: {{ default 1000 .uid }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "vidssl.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end }}

{{/* nodeSelector, tolerations, affinity and pull secrets of the chart's own pods. */}}
{{- define "vidssl.scheduling" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Checks the schema cannot express; each error names the key to change. */}}
{{- define "vidssl.validate" -}}
{{- if and (not .Values.seaweedfs.enabled) (not .Values.s3.existingSecret) }}
{{- fail "s3.existingSecret: required when seaweedfs.enabled is false (a Secret with the keys endpoint, access-key and secret-key of your S3 endpoint)" }}
{{- end }}
{{- $names := dict }}
{{- range $i, $s := .Values.schedules }}
{{- if hasKey $names $s.name }}
{{- fail (printf "schedules[%d].name: %q is used twice" $i $s.name) }}
{{- end }}
{{- $_ := set $names $s.name true }}
{{- end }}
{{- if and .Values.schedules (not .Values.kfp.sync) }}
{{- fail "kfp.sync: schedules are reconciled by the sync hook Job; set kfp.sync: true or schedules: []" }}
{{- end }}
{{- end }}
