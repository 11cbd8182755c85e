{{/* Rules across values that the processor's validate() applies at start
(src/config.rs). The schema checks one value at a time; these need two, and
without them `helm install` would succeed and every pod would crash-loop on
its first config check. Each failure is one line in the processor's own form:
the key, its value, what is allowed. */}}
{{- define "streamscore.validate" -}}
{{- $v := .Values }}
{{- $commit := $v.transactions.commitIntervalMs | int64 }}
{{- $txTimeout := $v.kafka.transactionTimeoutMs | int64 }}
{{- if gt (mul $commit 2) $txTimeout }}
{{- fail (printf "config: transactions.commitIntervalMs = %d is not allowed: at most half of kafka.transactionTimeoutMs (%d), so a transaction commits well before the broker aborts it" $commit $txTimeout) }}
{{- end }}
{{- $minBatch := $v.batching.minBatchSize | int64 }}
{{- $maxBatch := $v.batching.maxBatchSize | int64 }}
{{- if gt $minBatch $maxBatch }}
{{- fail (printf "config: batching.minBatchSize = %d is not allowed: at most batching.maxBatchSize (%d)" $minBatch $maxBatch) }}
{{- end }}
{{- $record := $v.input.maxRecordBytes | int64 }}
{{- $message := $v.kafka.maxMessageBytes | int64 }}
{{- if gt $record $message }}
{{- fail (printf "config: input.maxRecordBytes = %d is not allowed: at most kafka.maxMessageBytes (%d)" $record $message) }}
{{- end }}
{{- range $key, $topic := dict "output.topic" $v.output.topic "output.deadLetterTopic" $v.output.deadLetterTopic }}
{{- if has $topic $v.input.topics }}
{{- fail (printf "config: input.topics = %s is not allowed: topics other than %s (%s): scoring its own output would loop" (toJson $v.input.topics) $key $topic) }}
{{- end }}
{{- end }}
{{- if eq $v.output.topic $v.output.deadLetterTopic }}
{{- fail (printf "config: output.deadLetterTopic = %s is not allowed: a topic other than output.topic, so scores and dead letters stay apart" $v.output.deadLetterTopic) }}
{{- end }}
{{- /* With SASL on, the chart writes these two itself: a second one would be a duplicate TOML key the pod cannot read. */}}
{{- if $v.kafka.sasl.enabled }}
{{- range $k, $val := $v.kafka.properties }}
{{- $name := replace "_" "." $k }}
{{- if has $name (list "security.protocol" "sasl.mechanism") }}
{{- fail (printf "config: kafka.properties.%s = %v is not allowed with kafka.sasl.enabled: set kafka.sasl.%s instead" $name $val (ternary "securityProtocol" "mechanism" (eq $name "security.protocol"))) }}
{{- end }}
{{- end }}
{{- end }}
{{- /* The consumer's group.protocol as librdkafka reads it: _ spells ., the consumer table wins. */}}
{{- $protocol := "" }}
{{- range $table := list $v.kafka.properties $v.kafka.consumer }}
{{- range $k, $val := $table }}
{{- if eq (replace "_" "." $k) "group.protocol" }}
{{- $protocol = $val | toString | lower }}
{{- end }}
{{- end }}
{{- end }}
{{- if and $v.kafka.staticMembership (eq $protocol "consumer") (eq (include "streamscore.leaveGroup" .) "always") }}
{{- fail "config: shutdown.leaveGroup = always (set, or auto with autoscaling.enabled) is not allowed with group.protocol = consumer (KIP-848) and kafka.staticMembership = true: that protocol keeps a static member's partitions through its leave; use never, or kafka.staticMembership = false" }}
{{- end }}
{{- end }}
