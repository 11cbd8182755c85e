{{/* Rules across values that the processor's validate() applies at start
(crates/streamscore/src/config.rs). The schema checks one value at a time; these need two, and
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
{{- if $v.model.shadowCard }}
{{- if or (eq $v.output.shadowTopic $v.output.topic) (eq $v.output.shadowTopic $v.output.deadLetterTopic) }}
{{- fail (printf "config: output.shadowTopic = %s is not allowed: a topic other than output.topic and output.deadLetterTopic, so the challenger's results stay apart" $v.output.shadowTopic) }}
{{- end }}
{{- if has $v.output.shadowTopic $v.input.topics }}
{{- fail (printf "config: output.shadowTopic = %s is not allowed: a topic input.topics does not contain: scoring the challenger's results would loop" $v.output.shadowTopic) }}
{{- end }}
{{- end }}
{{- /* The schema registry: the processor's own rules (config/registry.rs). */}}
{{- $sr := $v.schemaRegistry }}
{{- if and (has $sr.outputMode (list "register" "lookup")) (not $sr.urls) }}
{{- fail (printf "config: schemaRegistry.outputMode = %s is not allowed: auto or off when schemaRegistry.urls is empty: the score schema is registered in that registry" $sr.outputMode) }}
{{- end }}
{{- if and (has $sr.outputMode (list "register" "lookup")) (eq $v.output.format "json") }}
{{- fail (printf "config: schemaRegistry.outputMode = %s is not allowed: auto or off when output.format = json: only Avro scores carry a schema id" $sr.outputMode) }}
{{- end }}
{{- if and $sr.basicAuthUser $sr.bearerToken }}
{{- fail "config: schemaRegistry.bearerToken = true is not allowed: false when schemaRegistry.basicAuthUser is set: one way to authenticate" }}
{{- end }}
{{- $poll := 300000 }}
{{- range $table := list $v.kafka.properties $v.kafka.consumer }}
{{- range $k, $val := $table }}
{{- if eq (replace "_" "." $k) "max.poll.interval.ms" }}
{{- $poll = atoi (include "streamscore.propertyValue" $val | trim) }}
{{- end }}
{{- end }}
{{- end }}
{{- if gt (add (int64 $sr.maxWaitMs) 60000) (int64 $poll) }}
{{- fail (printf "config: schemaRegistry.maxWaitMs = %d is not allowed: at most the consumer's max.poll.interval.ms (%d) less 60000: the source polls nothing while a record waits" (int64 $sr.maxWaitMs) (int64 $poll)) }}
{{- end }}
{{- if and $sr.clientCertificate (not $sr.tlsSecret) }}
{{- fail "config: schemaRegistry.clientCertificate = true is not allowed: a client certificate comes from schemaRegistry.tlsSecret (tls.crt, tls.key), which is empty" }}
{{- end }}
{{- /* With kafka.tls, the chart writes the TLS locations (and the protocol) itself. */}}
{{- if $v.kafka.tls.secretName }}
{{- range $k, $val := $v.kafka.properties }}
{{- $name := replace "_" "." $k }}
{{- if has $name (list "security.protocol" "ssl.ca.location" "ssl.certificate.location" "ssl.key.location") }}
{{- fail (printf "config: kafka.properties.%s = %v is not allowed with kafka.tls.secretName: the chart sets it from the mounted Secret" $name $val) }}
{{- end }}
{{- end }}
{{- if and $v.kafka.sasl.enabled (ne $v.kafka.sasl.securityProtocol "SASL_SSL") }}
{{- fail (printf "config: kafka.sasl.securityProtocol = %s is not allowed with kafka.tls.secretName: SASL_SSL, so the SASL connection uses the TLS it mounts" $v.kafka.sasl.securityProtocol) }}
{{- end }}
{{- end }}
{{- if and (include "streamscore.strimziScram" .) $v.kafka.sasl.username (not $v.kafka.sasl.passwordSecret.name) }}
{{- fail (printf "config: kafka.sasl.username = %s is not allowed with strimzi.kafkaUser (scram-sha-512) unless kafka.sasl.passwordSecret.name names that user's Secret: the password would be the Strimzi user's" $v.kafka.sasl.username) }}
{{- end }}
{{- if and (include "streamscore.strimziScram" .) (not $v.kafka.sasl.enabled) }}
{{- fail "config: strimzi.kafkaUser.authentication = scram-sha-512 is not allowed without kafka.sasl.enabled: the pods log in as that user with SASL/SCRAM (or use tls with kafka.tls)" }}
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
{{- /* librdkafka properties that would silently undo exactly-once, refused in
every kafka.* table as the processor's check_pinned refuses them
(PINNED_PROPERTIES in crates/streamscore/src/config.rs), in the same words. As there: _ spells .,
a value is read as the ConfigMap writes it (toString), trimmed and in any
case; repeating the processor's own value is allowed. */}}
{{- $true := list "true" "t" "1" }}
{{- $false := list "false" "f" "0" }}
{{- range $table := list "properties" "consumer" "producer" }}
{{- range $k, $val := index $v.kafka $table }}
{{- $raw := include "streamscore.propertyValue" $val }}
{{- $value := $raw | trim | lower }}
{{- $name := replace "_" "." $k }}
{{- $why := "" }}
{{- $fixed := "; this property cannot be overridden" }}
{{- if and (eq $name "isolation.level") (ne $value "read_committed") }}
{{- $why = print "exactly-once needs read_committed" $fixed }}
{{- else if and (eq $name "enable.auto.commit") (not (has $value $false)) }}
{{- $why = print "exactly-once commits offsets inside its transactions, so enable.auto.commit stays false" $fixed }}
{{- else if and (eq $name "enable.auto.offset.store") (not (has $value $false)) }}
{{- $why = print "exactly-once stores offsets only for records its transactions wrote, so enable.auto.offset.store stays false" $fixed }}
{{- else if and (eq $name "enable.idempotence") (not (has $value $true)) }}
{{- $why = print "transactions need the idempotent producer" $fixed }}
{{- else if eq $name "transactional.id" }}
{{- $why = print "set kafka.transactional_id instead, the one identity that fences a zombie" $fixed }}
{{- else if eq $name "transaction.timeout.ms" }}
{{- $why = print "set kafka.transaction_timeout_ms instead, which transactions.commit_interval_ms is checked against" $fixed }}
{{- else if eq $name "message.max.bytes" }}
{{- $why = print "set kafka.max_message_bytes instead, which the start-time topic check compares with the output topics" $fixed }}
{{- else if and (eq $name "auto.offset.reset") (has $value (list "latest" "largest" "end")) }}
{{- $why = "a new group would skip every record written before it joined; earliest (or error) only" }}
{{- else if and (eq $name "statistics.interval.ms") (regexMatch "^[+]?0+$" $value) }}
{{- $why = "1 or more: the consumer lag, the broker reachability of /readyz and the liveness signals come from librdkafka's statistics, which 0 turns off" }}
{{- end }}
{{- if $why }}
{{- fail (printf "config: kafka.%s.%s = %q is not allowed: %s" $table $k $raw $why) }}
{{- end }}
{{- /* A credential written into the ConfigMap, which anyone who may read
the release's ConfigMaps can read: refused as the processor refuses it in a
config file (refuse_credentials_in_file, is_credential), in its words, with
the chart's ways to pass it. */}}
{{- if or (regexMatch "(password|secret|passphrase|key\\.pem)$" $name) (has $name (list "sasl.oauthbearer.config" "sasl.jaas.config")) }}
{{- $variable := printf "STREAMSCORE__KAFKA__%s__%s" (upper $table) (replace "." "_" $name | upper) }}
{{- fail (printf "config: kafka.%s.%s = <redacted> is not allowed: not in a config file: a secret comes from the environment (%s) or from a file named in kafka.secret_files; in this chart: kafka.sasl.enabled with the Secret's saslPassword, or extraEnv/extraEnvFrom from a Secret of your own" $table $k $variable) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
