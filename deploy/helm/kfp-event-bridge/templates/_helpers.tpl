{{/* The release's name for its objects: <release>-kfp-event-bridge, or the release name when it already holds the chart's name. */}}
{{- define "bridge.fullname" -}}
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

{{- define "bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "bridge.labels" -}}
{{ include "bridge.selectorLabels" . }}
app.kubernetes.io/part-of: kubeflow-pipelines
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "bridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "bridge.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "bridge.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Leader election is on with two replicas or more. */}}
{{- define "bridge.ha" -}}
{{- if ge (int .Values.replicaCount) 2 -}}true{{- end -}}
{{- end -}}

{{/* The namespaces watched with scope namespaces. */}}
{{- define "bridge.namespaces" -}}
{{- if .Values.watch.namespaces -}}
{{- join "," .Values.watch.namespaces -}}
{{- else -}}
{{- .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* The bridge's config file: sinks, dead letter, retry, lanes, shutdown timeout. */}}
{{- define "bridge.config" -}}
{{- $config := dict "sinks" .Values.sinks -}}
{{- with .Values.deadLetter }}{{ $_ := set $config "dead_letter" . }}{{ end -}}
{{- with .Values.retry }}{{ $_ := set $config "retry" . }}{{ end -}}
{{- with .Values.lanes }}{{ $_ := set $config "lanes" . }}{{ end -}}
{{- with .Values.shutdownTimeout }}{{ $_ := set $config "shutdown_timeout" . }}{{ end -}}
{{- toYaml $config -}}
{{- end -}}

{{/* The watch rules: Argo Workflows and the workflow controller's Events, read only. */}}
{{- define "bridge.watchRules" -}}
- apiGroups: ["argoproj.io"]
  resources: ["workflows"]
  verbs: ["list", "watch"]
{{- if .Values.watch.events }}
- apiGroups: [""]
  resources: ["events"]
  verbs: ["list", "watch"]
{{- end }}
{{- end -}}

{{/* Seconds in a duration such as 30s, 5m or 1h (plain numbers are seconds). */}}
{{- define "bridge.seconds" -}}
{{- $d := toString . -}}
{{- if hasSuffix "ms" $d -}}1
{{- else if hasSuffix "s" $d -}}{{ trimSuffix "s" $d | int }}
{{- else if hasSuffix "m" $d -}}{{ mul (trimSuffix "m" $d | int) 60 }}
{{- else if hasSuffix "h" $d -}}{{ mul (trimSuffix "h" $d | int) 3600 }}
{{- else -}}{{ $d | int }}
{{- end -}}
{{- end -}}

{{/* Checks the schema cannot say clearly: no secret in a sink's URI or options. */}}
{{- define "bridge.validate" -}}
{{- range $i, $sink := .Values.sinks -}}
{{- $which := printf "sinks[%d]" $i -}}
{{- with $sink.name }}{{ $which = printf "sinks[%d] (%s)" $i . }}{{ end -}}
{{- if regexMatch "^[a-z0-9+]+://[^/@?#]*:[^/@?#]*@" $sink.uri -}}
{{- fail (printf "%s: the uri holds a password, which would be in the rendered ConfigMap; put it in a file under secrets.mountPath (from the Secret secrets.name) and name it with the sink's *_file option (AMQP password_file; NATS creds_file, nkey_file or token_file)" $which) -}}
{{- end -}}
{{- range $key, $_ := $sink.options -}}
{{- if regexMatch "(?i)(^|[._])(password|passwd|token|secret|credentials?|creds|nkey|seed)$" $key -}}
{{- fail (printf "%s: option %s holds a secret, which would be in the rendered ConfigMap; put it in a file under secrets.mountPath (from the Secret secrets.name) and name it with %s_file" $which $key $key) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and (eq .Values.watch.scope "cluster") .Values.watch.namespaces -}}
{{- fail "watch.namespaces is set but watch.scope is cluster; set watch.scope: namespaces to watch only those" -}}
{{- end -}}
{{- end -}}
