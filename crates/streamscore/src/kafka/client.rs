//! librdkafka settings for every Kafka client streamscore creates: the
//! processor's consumer and transactional producer, the admin client, and the
//! tools (`produce`, `demo`, `bench`, the verifier). All of them come from
//! [`client_config`], so a cluster that `run` reaches (TLS, SASL, any
//! `kafka.properties`) is reached the same way by every tool.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;

use crate::config::{Settings, librdkafka_name};

/// Kafka's v2 record-batch header: base offset and length (the 12-byte log
/// overhead), leader epoch, magic, CRC, attributes, last offset delta, first
/// and max timestamps, producer id and epoch, base sequence, record count.
pub(crate) const RECORD_BATCH_OVERHEAD: u64 = 61;

/// librdkafka's own fetch.max.bytes default, kept when it is already enough.
const DEFAULT_FETCH_MAX_BYTES: u64 = 52_428_800;

/// Room in one fetch response, over one batch at the topic's limit, for
/// Kafka's 12-byte log overhead and the response's framing (topic and
/// partition headers, the aborted-transactions list of read_committed).
const FETCH_HEADROOM: u64 = 65_536;

/// The producer's `message.max.bytes`: librdkafka admits a record when the
/// record, counted with its worst-case record overhead, fits; it does not
/// count the batch header, and sends a lone record whatever its batch's size.
/// So a batch may be `RECORD_BATCH_OVERHEAD` bytes over `message.max.bytes`,
/// and a topic whose `max.message.bytes` is `kafka.max_message_bytes` would
/// refuse it, aborting every transaction that holds it. Leaving that header
/// out keeps every batch we send within `kafka.max_message_bytes`, which is
/// what the start-time check compares with the output topics.
pub(crate) fn producer_message_max_bytes(settings: &Settings) -> u64 {
    settings
        .kafka
        .max_message_bytes
        .saturating_sub(RECORD_BATCH_OVERHEAD)
}

/// An operator's properties go last, so they win over ours. Keys may be
/// written `ssl.ca.location` or `ssl_ca_location` (environment variables
/// cannot hold dots); librdkafka property names have no underscores.
fn with_overrides<'a>(
    mut c: ClientConfig,
    tables: impl IntoIterator<Item = &'a BTreeMap<String, String>>,
) -> ClientConfig {
    for table in tables {
        for (key, value) in table {
            c.set(librdkafka_name(key), value);
        }
    }
    c
}

/// How long a tool's record may wait for its acknowledgement (ms), where
/// librdkafka's default is 300000: a tool reports an unreachable broker or a
/// refused record within a minute instead of five. (A topic that does not
/// exist fails sooner, after `topic.metadata.propagation.max.ms`.)
/// `kafka.properties` "message.timeout.ms" overrides it.
pub const TOOL_MESSAGE_TIMEOUT_MS: u64 = 60_000;

/// Which client a config is for: each role adds its own settings between
/// the connection (bootstrap, `client.id`) and the operator's tables.
#[derive(Debug, Clone, Copy)]
pub enum Role<'a> {
    /// The processor's consumer: `kafka.properties`, then `kafka.consumer`.
    Consumer,
    /// The processor's transactional producer: `kafka.properties`, then `kafka.producer`.
    Producer,
    /// The sink's reader of a transaction's outcome from its output, after a
    /// commit whose answer was lost: the producer's connection and identity
    /// (the principal the start-time check asks Read of), read_committed,
    /// assigned (never joining the group).
    OutcomeReader,
    /// Admin requests answered as the principal that writes the output
    /// topics: the producer's connection and identity without its
    /// transactional settings.
    Admin,
    /// A tool's admin client (topics for demo, bench and tests): `kafka.properties`.
    ToolAdmin,
    /// A tool's plain idempotent producer (`produce`, demo, bench), as an
    /// upstream team would run one: `kafka.properties`.
    ToolProducer,
    /// The verifier's read_committed reader in this group, without
    /// committing: `kafka.properties`.
    ToolReader { group_id: &'a str },
}

impl Role<'_> {
    /// Names the client to the broker (its logs, quotas and ACL audit);
    /// `kafka.properties` "client.id" overrides it.
    fn client_id(&self) -> &'static str {
        match self {
            Role::Consumer => "streamscore-consumer",
            Role::Producer => "streamscore-producer",
            Role::OutcomeReader => "streamscore-outcome-reader",
            Role::Admin => "streamscore-admin",
            Role::ToolAdmin => "streamscore-tool-admin",
            Role::ToolProducer => "streamscore-tool-producer",
            Role::ToolReader { .. } => "streamscore-verifier",
        }
    }
}

/// The one place a Kafka client's configuration is built (as Vector builds
/// every Kafka sink and source from one function): connection first, then
/// the role's own settings, then the operator's tables, which win.
pub fn client_config(settings: &Settings, role: Role<'_>) -> ClientConfig {
    let mut c = role_config(settings, role);
    // Last, so no table overrides a secret that `validate` found in a file.
    for (key, path) in &settings.kafka.secret_files {
        // Read when the client is made (validate saw it readable): a
        // rotated file is used by the next client.
        let value = std::fs::read_to_string(path).unwrap_or_default();
        c.set(librdkafka_name(key), value.trim_end_matches(['\r', '\n']));
    }
    c
}

fn role_config(settings: &Settings, role: Role<'_>) -> ClientConfig {
    let k = &settings.kafka;
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.bootstrap_servers)
        .set("client.id", role.client_id());
    match role {
        Role::Consumer => {
            consumer_settings(&mut c, settings);
            with_overrides(c, [&k.properties, &k.consumer])
        }
        Role::Producer => {
            producer_settings(&mut c, settings);
            with_overrides(c, [&k.properties, &k.producer])
        }
        Role::OutcomeReader => {
            // Not the producer's tuning (linger, compression), which a
            // consumer would warn about at the worst moment to read warnings.
            let identity: BTreeMap<String, String> = (k.producer.iter())
                .filter(|(key, _)| identifies(&librdkafka_name(key)))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
            let mut c = with_overrides(c, [&k.properties, &identity]);
            // After the tables: the answer depends on them. librdkafka
            // assigns only with a group.id; the processor's own, which the
            // principal may already use, as a member never joins with
            // `assign` and commits nothing.
            c.remove("group.instance.id");
            c.set("group.id", &k.group_id)
                .set("enable.auto.commit", "false")
                .set("isolation.level", "read_committed")
                .set("enable.partition.eof", "true")
                .set("auto.offset.reset", "error");
            c
        }
        Role::Admin => with_overrides(c, [&k.properties, &k.producer]),
        Role::ToolAdmin => with_overrides(c, [&k.properties]),
        Role::ToolProducer => {
            c.set("enable.idempotence", "true")
                .set("acks", "all")
                .set("linger.ms", "5")
                .set("message.timeout.ms", TOOL_MESSAGE_TIMEOUT_MS.to_string());
            with_overrides(c, [&k.properties])
        }
        Role::ToolReader { group_id } => {
            c.set("group.id", group_id)
                .set("enable.auto.commit", "false")
                .set("isolation.level", "read_committed")
                .set("enable.partition.eof", "true");
            with_overrides(c, [&k.properties])
        }
    }
}

/// Whether a property says who a client is or how it connects (TLS, SASL),
/// as opposed to how a producer or a consumer behaves.
fn identifies(name: &str) -> bool {
    ["security.", "sasl.", "ssl.", "enable.ssl.", "client."]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

/// A tool's admin client config: see [`Role::ToolAdmin`].
pub fn tool_config(settings: &Settings) -> ClientConfig {
    client_config(settings, Role::ToolAdmin)
}

/// See [`Role::Admin`].
pub(crate) fn admin_config(settings: &Settings) -> ClientConfig {
    client_config(settings, Role::Admin)
}

/// How often the consumer refreshes topic metadata (ms). librdkafka learns of
/// partitions added to an input topic only on a refresh, and its default of
/// 300000 leaves records written to them unread for up to five minutes; a
/// refresh of the subscribed topics every 30 s costs one small request.
/// `[kafka.consumer] "topic.metadata.refresh.interval.ms"` overrides it.
pub(crate) const CONSUMER_METADATA_REFRESH_MS: u64 = 30_000;

/// Exactly-once input side: no auto-commit (offsets go into transactions) and
/// read_committed, so aborted upstream records are never scored.
pub fn consumer_config(settings: &Settings) -> ClientConfig {
    client_config(settings, Role::Consumer)
}

fn consumer_settings(c: &mut ClientConfig, settings: &Settings) {
    let k = &settings.kafka;
    c.set("group.id", &k.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set(
            "session.timeout.ms",
            k.session_timeout.as_millis().to_string(),
        )
        // A partition's fetch starts at one record's worth; the broker still
        // sends a larger first batch whole (KIP-74), and then the response
        // must fit fetch.max.bytes + 512 (receive.message.max.bytes, which
        // librdkafka derives from it), so that is sized for one batch at the
        // topic's limit.
        .set("max.partition.fetch.bytes", k.max_message_bytes.to_string())
        .set(
            "fetch.max.bytes",
            DEFAULT_FETCH_MAX_BYTES
                .max(k.max_message_bytes + FETCH_HEADROOM)
                .to_string(),
        )
        .set("statistics.interval.ms", "5000")
        .set(
            "topic.metadata.refresh.interval.ms",
            CONSUMER_METADATA_REFRESH_MS.to_string(),
        );
    if let Some(id) = &k.group_instance_id {
        c.set("group.instance.id", id);
    }
}

/// One transactional producer per instance, with a fixed transactional.id so
/// that a restarted instance fences its predecessor (KIP-98/KIP-447).
pub fn producer_config(settings: &Settings) -> ClientConfig {
    client_config(settings, Role::Producer)
}

fn producer_settings(c: &mut ClientConfig, settings: &Settings) {
    let k = &settings.kafka;
    c.set("transactional.id", &k.transactional_id)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set(
            "transaction.timeout.ms",
            k.transaction_timeout.as_millis().to_string(),
        )
        .set(
            "message.max.bytes",
            producer_message_max_bytes(settings).to_string(),
        )
        // librdkafka's default batch (1000000 bytes), never over message.max.bytes.
        .set(
            "batch.size",
            producer_message_max_bytes(settings)
                .min(1_000_000)
                .to_string(),
        )
        // A commit flushes (sink::await_deliveries sends what lingers at
        // once), so lingering between commits costs no latency and gathers
        // fewer, larger produce requests: at 5 000 records/s it cut the CPU
        // a record costs by a quarter against 2 ms (benches/RESULTS.md).
        .set("linger.ms", "20")
        // A transaction begun right after a commit meets CONCURRENT_TRANSACTIONS
        // until the broker has written the previous markers; librdkafka's
        // default 100 ms backoff would add that much to every transaction
        // (KAFKA-5477: the Java client uses 20 ms for the same reason).
        .set("retry.backoff.ms", "10")
        .set("retry.backoff.max.ms", "100")
        .set("queue.buffering.max.messages", "200000");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_properties_reach_both_clients_and_win_over_defaults() {
        let mut s = Settings::load_with_env(None, false).unwrap();
        for (k, v) in [
            ("security.protocol", "SASL_SSL"),
            ("ssl_ca_location", "/etc/ca.pem"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl_username", "scorer"),
            ("linger.ms", "7"),
        ] {
            s.kafka.properties.insert(k.into(), v.into());
        }
        for c in [
            consumer_config(&s),
            producer_config(&s),
            tool_config(&s),
            admin_config(&s),
            client_config(&s, Role::ToolProducer),
            client_config(&s, Role::ToolReader { group_id: "g" }),
        ] {
            assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
            assert_eq!(c.get("ssl.ca.location"), Some("/etc/ca.pem"));
            assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
            assert_eq!(c.get("sasl.username"), Some("scorer"));
        }
        assert_eq!(producer_config(&s).get("linger.ms"), Some("7"));
        assert_eq!(
            client_config(&s, Role::ToolProducer).get("linger.ms"),
            Some("7")
        );
    }

    /// The outcome reader is the producer's principal (the start-time check
    /// asks Read of that one), without the producer's tuning, and nothing in
    /// a table can make it read uncommitted records or join the group.
    #[test]
    fn the_outcome_reader_is_the_producers_principal_reading_committed_only() {
        let mut s = Settings::load_with_env(None, false).unwrap();
        for (k, v) in [
            ("sasl_username", "writer"),
            ("ssl.key.location", "/k.pem"),
            ("linger.ms", "50"),
        ] {
            s.kafka.producer.insert(k.into(), v.into());
        }
        for (k, v) in [
            ("sasl.username", "reader"),
            ("isolation.level", "read_uncommitted"),
            ("group.instance.id", "pod-0"),
        ] {
            s.kafka.consumer.insert(k.into(), v.into());
        }
        s.kafka
            .properties
            .insert("enable.partition.eof".into(), "false".into());
        let c = client_config(&s, Role::OutcomeReader);
        assert_eq!(c.get("sasl.username"), Some("writer"));
        assert_eq!(c.get("ssl.key.location"), Some("/k.pem"));
        assert_eq!(c.get("linger.ms"), None);
        assert_eq!(c.get("isolation.level"), Some("read_committed"));
        assert_eq!(c.get("enable.partition.eof"), Some("true"));
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.get("group.instance.id"), None);
        assert_eq!(c.get("group.id"), Some(s.kafka.group_id.as_str()));
    }

    /// A tool's record waits a bounded time for its acknowledgement, so an
    /// unreachable broker is reported, not waited on for librdkafka's 5 minutes.
    #[test]
    fn tool_producers_give_up_in_bounded_time_unless_told_otherwise() {
        let mut s = Settings::load_with_env(None, false).unwrap();
        let c = client_config(&s, Role::ToolProducer);
        assert_eq!(c.get("message.timeout.ms"), Some("60000"));
        s.kafka
            .properties
            .insert("message.timeout.ms".into(), "5000".into());
        let c = client_config(&s, Role::ToolProducer);
        assert_eq!(c.get("message.timeout.ms"), Some("5000"));
    }

    /// librdkafka lets a lone record through when its own size, counted with
    /// the worst-case record overhead, fits message.max.bytes; the broker then
    /// measures the batch around it, 61 bytes of header more. Checked on the
    /// real broker: with message.max.bytes = 1048576 on a default topic
    /// (max.message.bytes = 1048588) a 1048540-byte value was accepted by
    /// librdkafka and refused by the broker, and so were all down to 1048517.
    #[test]
    fn producer_batches_never_exceed_kafka_max_message_bytes() {
        let mut s = Settings::load_with_env(None, false).unwrap();
        for max in [1_061, 4_096, 1_048_576, 1_000_000_000] {
            s.kafka.max_message_bytes = max;
            let c = producer_config(&s);
            let message_max: u64 = c.get("message.max.bytes").unwrap().parse().unwrap();
            let batch: u64 = c.get("batch.size").unwrap().parse().unwrap();
            assert_eq!(message_max + RECORD_BATCH_OVERHEAD, max);
            assert!(
                batch <= message_max,
                "batch.size {batch} over {message_max}"
            );
            let _: rdkafka::producer::BaseProducer = c.create().expect("librdkafka accepts it");
        }
    }

    /// A fetch response must hold one whole batch at the topic's limit
    /// (kafka.max_message_bytes plus Kafka's 12-byte log overhead): the broker
    /// sends the first batch even when it is larger than fetch.max.bytes, and
    /// librdkafka drops a response over receive.message.max.bytes, which it
    /// keeps at fetch.max.bytes + 512.
    #[test]
    fn consumer_fetches_a_batch_at_the_topic_limit() {
        let mut s = Settings::load_with_env(None, false).unwrap();
        for max in [1_061, 1_048_576, 100_000_000, 1_000_000_000] {
            s.kafka.max_message_bytes = max;
            let c = consumer_config(&s);
            let fetch: u64 = c.get("fetch.max.bytes").unwrap().parse().unwrap();
            assert!(
                fetch >= max + 12 && fetch >= 52_428_800,
                "{fetch} for {max}"
            );
            assert_eq!(
                c.get("max.partition.fetch.bytes"),
                Some(max.to_string().as_str())
            );
            assert_eq!(c.get("message.max.bytes"), None);
            assert_eq!(c.get("receive.message.max.bytes"), None);
            let _: rdkafka::consumer::BaseConsumer = c.create().expect("librdkafka accepts it");
        }
    }

    #[test]
    fn client_tables_reach_only_their_client_and_win_over_shared_properties() {
        let mut s = Settings::load_with_env(None, false).unwrap();
        s.kafka.properties.insert("linger.ms".into(), "7".into());
        s.kafka.producer.insert("linger_ms".into(), "9".into());
        s.kafka
            .consumer
            .insert("fetch.wait.max.ms".into(), "50".into());
        assert_eq!(producer_config(&s).get("linger.ms"), Some("9"));
        assert_eq!(producer_config(&s).get("fetch.wait.max.ms"), None);
        assert_eq!(consumer_config(&s).get("fetch.wait.max.ms"), Some("50"));
        assert_eq!(tool_config(&s).get("fetch.wait.max.ms"), None);
        assert_eq!(admin_config(&s).get("linger.ms"), Some("9"));
        assert_eq!(admin_config(&s).get("transactional.id"), None);
    }

    #[test]
    fn consumer_refreshes_metadata_often_enough_to_see_added_partitions() {
        let mut s = Settings::load_with_env(None, false).unwrap();
        let key = "topic.metadata.refresh.interval.ms";
        assert_eq!(consumer_config(&s).get(key), Some("30000"));
        s.kafka.consumer.insert(key.into(), "5000".into());
        assert_eq!(consumer_config(&s).get(key), Some("5000"));
    }
}
