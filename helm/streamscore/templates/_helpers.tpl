{{/* Chart name, truncated to the 63 characters a label allows. */}}
{{- define "streamscore.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart unless the release name already holds the chart name. */}}
{{- define "streamscore.fullname" -}}
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

{{- define "streamscore.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "streamscore.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "streamscore.selectorLabels" -}}
app.kubernetes.io/name: {{ include "streamscore.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "streamscore.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "streamscore.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "streamscore.secretName" -}}
{{- default (include "streamscore.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/* The Strimzi KafkaUser's name, and whether the pods log in as it (SCRAM). */}}
{{- define "streamscore.strimziUser" -}}
{{- default (include "streamscore.fullname" .) .Values.strimzi.kafkaUser.name }}
{{- end }}
{{- define "streamscore.strimziScram" -}}
{{- if and .Values.strimzi.kafkaUser.enabled (eq .Values.strimzi.kafkaUser.authentication "scram-sha-512") }}true{{ end }}
{{- end }}

{{/* The SASL username as a literal (kafka.sasl.username, or the Strimzi
user's name); empty: the release's Secret holds it. */}}
{{- define "streamscore.saslUsername" -}}
{{- if .Values.kafka.sasl.username }}{{ .Values.kafka.sasl.username }}
{{- else if include "streamscore.strimziScram" . }}{{ include "streamscore.strimziUser" . }}
{{- end }}
{{- end }}

{{/* The Secret and key holding the SASL password, as JSON {name, key}:
kafka.sasl.passwordSecret, else the Strimzi user's own Secret, else the
release's. */}}
{{- define "streamscore.saslPasswordRef" -}}
{{- $p := .Values.kafka.sasl.passwordSecret }}
{{- if $p.name }}
{{- dict "name" $p.name "key" $p.key | toJson }}
{{- else if include "streamscore.strimziScram" . }}
{{- dict "name" (include "streamscore.strimziUser" .) "key" "password" | toJson }}
{{- else }}
{{- dict "name" (include "streamscore.secretName" .) "key" .Values.secrets.keys.saslPassword "release" true | toJson }}
{{- end }}
{{- end }}

{{/* The CUDA image is the CPU tag plus gpu.imageTagSuffix. */}}
{{- define "streamscore.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.gpu.enabled }}
{{- $tag = printf "%s%s" $tag .Values.gpu.imageTagSuffix }}
{{- end }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}

{{/* model.device as the processor sees it: a GPU deployment runs on CUDA. */}}
{{- define "streamscore.device" -}}
{{- if .Values.gpu.enabled }}cuda{{ else }}{{ .Values.model.device }}{{ end }}
{{- end }}

{{/* shutdown.leave_group as the processor sees it. auto: leave when an
autoscaler removes pods or when membership is dynamic (a dynamic member
always leaves), keep the partitions through a restart otherwise. */}}
{{- define "streamscore.leaveGroup" -}}
{{- $v := .Values.shutdown.leaveGroup | default "auto" }}
{{- if and (eq $v "never") (not .Values.kafka.staticMembership) }}
{{- fail "shutdown.leaveGroup=never needs kafka.staticMembership=true: a dynamic member always leaves the group" }}
{{- end }}
{{- if ne $v "auto" }}{{ $v }}
{{- else if or .Values.autoscaling.enabled (not .Values.kafka.staticMembership) }}always
{{- else }}never
{{- end }}
{{- end }}

{{/* Checksum of the rendered config, so a values change rolls the pods. */}}
{{- define "streamscore.configChecksum" -}}
{{- include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- end }}

{{/* The clients' security.protocol, upper case: kafka.sasl's when SASL is
on, else kafka.properties' (a key spelt with _ or .), else PLAINTEXT. */}}
{{- define "streamscore.securityProtocol" -}}
{{- $protocol := "PLAINTEXT" }}
{{- range $k, $v := .Values.kafka.properties }}
{{- if eq (replace "_" "." $k) "security.protocol" }}
{{- $protocol = $v | toString | upper }}
{{- end }}
{{- end }}
{{- if .Values.kafka.tls.secretName }}
{{- $protocol = "SSL" }}
{{- end }}
{{- if .Values.kafka.sasl.enabled }}
{{- $protocol = .Values.kafka.sasl.securityProtocol }}
{{- end }}
{{- $protocol }}
{{- end }}

{{/* The TriggerAuthentication the Kafka triggers use: the user's, the
chart's (SASL on), or none. */}}
{{- define "streamscore.kedaAuthName" -}}
{{- if .Values.autoscaling.keda.authenticationRef }}
{{- .Values.autoscaling.keda.authenticationRef }}
{{- else if or .Values.kafka.sasl.enabled .Values.autoscaling.keda.tls.secretName .Values.kafka.tls.secretName }}
{{- include "streamscore.fullname" . }}-kafka
{{- end }}
{{- end }}

{{/* KEDA's name for kafka.sasl.mechanism. */}}
{{- define "streamscore.kedaSasl" -}}
{{- $m := dict "PLAIN" "plaintext" "SCRAM-SHA-256" "scram_sha256" "SCRAM-SHA-512" "scram_sha512" "OAUTHBEARER" "oauthbearer" "GSSAPI" "gssapi" }}
{{- get $m .Values.kafka.sasl.mechanism }}
{{- end }}

{{/* A librdkafka property value as text. Values files read numbers as
floats, and toString writes 1000000 as "1e+06", which librdkafka refuses:
a whole number is written as an integer. */}}
{{- define "streamscore.propertyValue" -}}
{{- if and (kindIs "float64" .) (eq (float64 (int64 .)) .) -}}
{{- int64 . -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}
