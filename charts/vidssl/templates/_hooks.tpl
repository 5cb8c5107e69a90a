{{/* The pod spec shared by the hook Jobs and the helm test: (dict "root" $ "name" ... "command" list "env" yaml). */}}
{{- define "vidssl.hookPod" -}}
{{- $root := .root -}}
metadata:
  labels:
    {{- include "vidssl.componentLabels" (dict "root" $root "component" .name) | nindent 4 }}
  {{- with $root.Values.hooks.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  restartPolicy: Never
  serviceAccountName: {{ include "vidssl.fullname" $root }}-hooks
  automountServiceAccountToken: false
  securityContext:
    {{- include "vidssl.podSecurityContext" (dict "uid" 1000) | nindent 4 }}
  {{- with include "vidssl.scheduling" $root | trim }}
  {{- . | nindent 2 }}
  {{- end }}
  containers:
    - name: {{ .name }}
      image: {{ include "vidssl.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      # The image sets HOME=/tmp, PYTHONPATH=/opt/vidssl (pipelines/, components/) and
      # VIDSSL_EXPERIMENTS_DIR; /tmp is the one writable path.
      command:
        {{- toYaml .command | nindent 8 }}
      env:
        {{- include "vidssl.s3Env" $root | nindent 8 }}
        {{- with .env }}
        {{- . | nindent 8 }}
        {{- end }}
      resources:
        {{- toYaml $root.Values.hooks.resources | nindent 8 }}
      securityContext:
        {{- include "vidssl.containerSecurityContext" $root | nindent 8 }}
      volumeMounts:
        - {name: tmp, mountPath: /tmp}
        {{- with .volumeMounts }}
        {{- . | nindent 8 }}
        {{- end }}
  volumes:
    - name: tmp
      emptyDir: {}
    {{- with .volumes }}
    {{- . | nindent 4 }}
    {{- end }}
{{- end }}
