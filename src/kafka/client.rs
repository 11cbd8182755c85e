//! librdkafka settings shared by the consumer and the transactional producer.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;

use crate::config::Settings;

fn base(settings: &Settings) -> ClientConfig {
    let k = &settings.kafka;
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.bootstrap_servers)
        .set("message.max.bytes", (k.max_message_bytes + 512).to_string());
    c
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
            c.set(key.replace('_', "."), value);
        }
    }
    c
}

/// A librdkafka client config for tools (demo, verifier, admin) that must
/// reach the same cluster the same way: bootstrap plus `kafka.properties`.
pub fn tool_config(settings: &Settings) -> ClientConfig {
    with_overrides(base(settings), [&settings.kafka.properties])
}

/// How often the consumer refreshes topic metadata (ms). librdkafka learns of
/// partitions added to an input topic only on a refresh, and its default of
/// 300000 leaves records written to them unread for up to five minutes; a
/// refresh of the subscribed topics every 30 s costs one small request.
/// `[kafka.consumer] "topic.metadata.refresh.interval.ms"` overrides it.
pub const CONSUMER_METADATA_REFRESH_MS: u64 = 30_000;

/// Exactly-once input side: no auto-commit (offsets go into transactions) and
/// read_committed, so aborted upstream records are never scored.
pub fn consumer_config(settings: &Settings) -> ClientConfig {
    let k = &settings.kafka;
    let mut c = base(settings);
    c.set("group.id", &k.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", k.session_timeout_ms.to_string())
        .set("max.partition.fetch.bytes", k.max_message_bytes.to_string())
        .set("statistics.interval.ms", "5000")
        .set(
            "topic.metadata.refresh.interval.ms",
            CONSUMER_METADATA_REFRESH_MS.to_string(),
        );
    if !k.group_instance_id.is_empty() {
        c.set("group.instance.id", &k.group_instance_id);
    }
    with_overrides(c, [&k.properties, &k.consumer])
}

/// One transactional producer per instance, with a fixed transactional.id so
/// that a restarted instance fences its predecessor (KIP-98/KIP-447).
pub fn producer_config(settings: &Settings) -> ClientConfig {
    let k = &settings.kafka;
    let mut c = base(settings);
    c.set("transactional.id", &k.transactional_id)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set(
            "transaction.timeout.ms",
            k.transaction_timeout_ms.to_string(),
        )
        .set("linger.ms", "2")
        // A transaction begun right after a commit meets CONCURRENT_TRANSACTIONS
        // until the broker has written the previous markers; librdkafka's
        // default 100 ms backoff would add that much to every transaction
        // (KAFKA-5477: the Java client uses 20 ms for the same reason).
        .set("retry.backoff.ms", "10")
        .set("retry.backoff.max.ms", "100")
        .set("queue.buffering.max.messages", "200000");
    with_overrides(c, [&k.properties, &k.producer])
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
        for c in [consumer_config(&s), producer_config(&s), tool_config(&s)] {
            assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
            assert_eq!(c.get("ssl.ca.location"), Some("/etc/ca.pem"));
            assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
            assert_eq!(c.get("sasl.username"), Some("scorer"));
        }
        assert_eq!(producer_config(&s).get("linger.ms"), Some("7"));
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
