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

{{/* Milliseconds in a duration such as 500ms, 30s, 5m, 1h or 7d (plain numbers are seconds). */}}
{{- define "bridge.millis" -}}
{{- $d := toString . -}}
{{- if hasSuffix "ms" $d -}}{{ trimSuffix "ms" $d | int64 }}
{{- else if hasSuffix "s" $d -}}{{ mul (trimSuffix "s" $d | int64) 1000 }}
{{- else if hasSuffix "m" $d -}}{{ mul (trimSuffix "m" $d | int64) 60000 }}
{{- else if hasSuffix "h" $d -}}{{ mul (trimSuffix "h" $d | int64) 3600000 }}
{{- else if hasSuffix "d" $d -}}{{ mul (trimSuffix "d" $d | int64) 86400000 }}
{{- else -}}{{ mul ($d | int64) 1000 }}
{{- end -}}
{{- end -}}

{{/* Whole seconds in a duration, rounded up. */}}
{{- define "bridge.seconds" -}}
{{- div (add (include "bridge.millis" . | int64) 999) 1000 -}}
{{- end -}}

{{/* "<fullname><suffix>", the fullname cut so that the whole stays a DNS label (63). Call with (list . "-suffix"). */}}
{{- define "bridge.suffixed" -}}
{{- $suffix := index . 1 -}}
{{- printf "%s%s" (include "bridge.fullname" (index . 0) | trunc (int (sub 63 (len $suffix))) | trimSuffix "-") $suffix -}}
{{- end -}}

{{/* Cluster-scoped objects are named after the namespace too: two releases of one name in two namespaces do not collide. */}}
{{- define "bridge.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "bridge.fullname" .) | trunc 57 | trimSuffix "-" -}}-watch
{{- end -}}

{{/* The checkpoint ConfigMaps' name (their label value: at most 63 characters). */}}
{{- define "bridge.checkpointName" -}}
{{- default (include "bridge.suffixed" (list . "-checkpoint")) .Values.checkpoint.name -}}
{{- end -}}

{{- define "bridge.leaseName" -}}
{{- default (include "bridge.fullname" .) .Values.leaderElection.leaseName -}}
{{- end -}}

{{/* Environment variables the chart sets itself; env and extraEnv must not repeat them. */}}
{{- define "bridge.ownEnv" -}}
POD_NAME KFP_BRIDGE_ADMIN_ADDR KFP_BRIDGE_CONFIG KFP_BRIDGE_LOG KFP_BRIDGE_LOG_FORMAT KFP_BRIDGE_KFP_ONLY KFP_BRIDGE_WATCH_EVENTS KFP_BRIDGE_NODE_EVENTS KFP_BRIDGE_RETENTION KFP_BRIDGE_LABEL_SELECTOR KFP_BRIDGE_NAMESPACES KFP_BRIDGE_CHECKPOINT KFP_BRIDGE_CHECKPOINT_INTERVAL KFP_BRIDGE_LEADER_ELECTION KFP_BRIDGE_LEADER_ELECTION_NAME KFP_BRIDGE_LEADER_ELECTION_NAMESPACE KFP_BRIDGE_LEASE_DURATION KFP_BRIDGE_RENEW_DEADLINE KFP_BRIDGE_LEASE_RETRY_PERIOD KFP_BRIDGE_KFP_UI_URL KFP_BRIDGE_ARGO_UI_URL KFP_BRIDGE_SUBSCRIBERS_DIR KFP_BRIDGE_SINKS KFP_BRIDGE_DEAD_LETTER KFP_BRIDGE_SHUTDOWN_TIMEOUT
{{- end -}}

{{/* An env value as the bridge reads it: whole numbers without an exponent (YAML reads 10000000 as a float, which would print as 1e+07). */}}
{{- define "bridge.envValue" -}}
{{- if and (kindIs "float64" .) (eq (float64 (int64 .)) .) -}}
{{- int64 . | toString | quote -}}
{{- else -}}
{{- toString . | quote -}}
{{- end -}}
{{- end -}}

{{/* What makes a URI or an option hold a secret that would end up in the rendered ConfigMap. */}}
{{- define "bridge.secretKey" -}}
(?i)(^|[._])(password|passwd|pass|token|secret|credentials?|creds|nkey|seed|jaas\.config|oauthbearer\.config|key\.pem|private)$
{{- end -}}

{{/* Refuses a secret in a sink URI (a password or, for NATS, any userinfo; a query parameter) or in its options (by name, or an Authorization header). */}}
{{- define "bridge.checkSink" -}}
{{- $which := index . 0 -}}
{{- $uri := index . 1 -}}
{{- $options := index . 2 -}}
{{- $secretKey := index . 3 -}}
{{- $hint := "which would be in the rendered ConfigMap; put it in a file under secrets.mountPath (from the Secret secrets.name) and name it with the sink's *_file option (password_file, token_file, creds_file, nkey_file, sasl.password_file, …)" -}}
{{- if regexMatch "^[A-Za-z0-9+.-]+://[^/@?#]*:[^/@?#]*@" $uri -}}
{{- fail (printf "%s: the uri holds a password, %s" $which $hint) -}}
{{- end -}}
{{- if regexMatch "(?i)^(nats|tls)://[^/@?#]+@" $uri -}}
{{- fail (printf "%s: the uri holds a NATS user or token, %s" $which $hint) -}}
{{- end -}}
{{- if contains "?" $uri -}}
{{- range splitList "&" (regexReplaceAll "#.*$" (regexReplaceAll "^[^?]*\\?" $uri "") "") -}}
{{- $key := regexReplaceAll "=.*$" . "" -}}
{{- if regexMatch $secretKey $key -}}
{{- fail (printf "%s: the uri's parameter %s holds a secret, %s" $which $key $hint) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $key, $value := $options -}}
{{- if regexMatch $secretKey $key -}}
{{- fail (printf "%s: option %s holds a secret, %s" $which $key $hint) -}}
{{- end -}}
{{- if eq $key "header" -}}
{{- range (kindIs "slice" $value | ternary $value (list $value)) -}}
{{- if regexMatch "(?i)^\\s*(authorization|proxy-authorization|x-api-key|api-key)\\s*:" (toString .) -}}
{{- fail (printf "%s: header %q holds a credential, %s" $which (regexReplaceAll ":.*$" (toString .) "") $hint) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Checks the schema cannot say clearly. */}}
{{- define "bridge.validate" -}}
{{- $secretKey := include "bridge.secretKey" . -}}
{{- range $i, $sink := .Values.sinks -}}
{{- $which := printf "sinks[%d]" $i -}}
{{- with $sink.name }}{{ $which = printf "sinks[%d] (%s)" $i . }}{{ end -}}
{{- include "bridge.checkSink" (list $which $sink.uri $sink.options $secretKey) -}}
{{- end -}}
{{- with .Values.deadLetter -}}
{{- include "bridge.checkSink" (list "deadLetter" . dict $secretKey) -}}
{{- end -}}
{{- if and (eq .Values.watch.scope "cluster") .Values.watch.namespaces -}}
{{- fail "watch.namespaces is set but watch.scope is cluster; set watch.scope: namespaces to watch only those" -}}
{{- end -}}
{{- if and (not .Values.serviceAccount.create) (not .Values.serviceAccount.name) -}}
{{- fail "serviceAccount.create is false but serviceAccount.name is empty: name the existing ServiceAccount the bridge runs as (the namespace's default account would get the bridge's rules)" -}}
{{- end -}}
{{- $own := splitList " " (include "bridge.ownEnv" .) -}}
{{- range $name, $_ := .Values.env -}}
{{- if has $name $own -}}
{{- fail (printf "env.%s: the chart sets %s itself; use its value instead (see the chart's README)" $name $name) -}}
{{- end -}}
{{- end -}}
{{- range .Values.extraEnv -}}
{{- if has .name $own -}}
{{- fail (printf "extraEnv: the chart sets %s itself; use its value instead (see the chart's README)" .name) -}}
{{- end -}}
{{- if hasKey $.Values.env .name -}}
{{- fail (printf "extraEnv: %s is in env too" .name) -}}
{{- end -}}
{{- end -}}
{{- if lt (include "bridge.millis" .Values.watch.retention | int64) 3600000 -}}
{{- fail (printf "watch.retention: %v is less than the bridge's minimum, 1h" .Values.watch.retention) -}}
{{- end -}}
{{- $lease := include "bridge.millis" .Values.leaderElection.leaseDuration | int64 -}}
{{- $renew := include "bridge.millis" .Values.leaderElection.renewDeadline | int64 -}}
{{- $retry := include "bridge.millis" .Values.leaderElection.retryPeriod | int64 -}}
{{- if not (and (gt $lease $renew) (gt $renew $retry)) -}}
{{- fail (printf "leaderElection: leaseDuration (%v) must be longer than renewDeadline (%v), and renewDeadline longer than retryPeriod (%v)" .Values.leaderElection.leaseDuration .Values.leaderElection.renewDeadline .Values.leaderElection.retryPeriod) -}}
{{- end -}}
{{- range .Values.knative.triggers -}}
{{- if and (not .broker) (ne $.Values.knative.sinkBinding.sink.kind "Broker") -}}
{{- fail (printf "knative.triggers (%s): name its broker; the SinkBinding's sink is a %s, not a Broker" .name $.Values.knative.sinkBinding.sink.kind) -}}
{{- end -}}
{{- end -}}
{{- end -}}
