//! Start-time checks of the output topics. A transaction that writes to a
//! topic the broker refuses (missing, not ours to write, a record limit under
//! ours) aborts, and so does every retry of it: the processor would run,
//! score nothing and log only the broker's error code. Asking the broker
//! once at start turns that into a refusal to start that names the topic.
//!
//! The questions go through the producer's own connection and identity
//! ([`admin_config`]), so TLS and SASL apply and the answers are the ones
//! the principal that writes gets. On a broker with
//! `auto.create.topics.enable=true` the metadata request may create a missing
//! topic, exactly as the first produce to it would.

use std::time::Duration;

// The admin client answers from its own thread, and the pipeline starts on a
// plain blocking thread, inside or outside a tokio runtime (where a nested
// runtime's block_on would panic): a thread-parking executor fits.
use futures_executor::block_on;

use rdkafka::admin::{AdminClient, AdminOptions, OwnedResourceSpecifier, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::config::Settings;
use crate::kafka::authorized::{self, Operation};
use crate::kafka::client::admin_config;

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("cannot create the Kafka admin client to check the output topics: {0}")]
    Client(KafkaError),
    #[error("cannot read the metadata of {key} \"{topic}\" at {bootstrap}: {error}")]
    Metadata {
        key: &'static str,
        topic: String,
        bootstrap: String,
        error: Box<KafkaError>,
    },
    #[error("{key} \"{topic}\" does not exist at {bootstrap}: create it before starting")]
    Missing {
        key: &'static str,
        topic: String,
        bootstrap: String,
    },
    #[error(
        "{key} \"{topic}\": the broker answered TOPIC_AUTHORIZATION_FAILED: the configured principal may not describe or write it; grant it WRITE and READ on the topic"
    )]
    Unauthorized { key: &'static str, topic: String },
    #[error(
        "{key} \"{topic}\": the configured principal may not write it (the broker grants it {granted} there); grant it WRITE on the topic"
    )]
    NotWritable {
        key: &'static str,
        topic: String,
        granted: String,
    },
    #[error(
        "{key} \"{topic}\": the configured principal may not read it (the broker grants it {granted} there); grant it READ on the topic: when a commit's answer is lost, the transaction's outcome is read back from its output"
    )]
    NotReadable {
        key: &'static str,
        topic: String,
        granted: String,
    },
    #[error("{key} \"{topic}\" cannot be written: the broker answered {code}")]
    Unusable {
        key: &'static str,
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("cannot read the configs of the output topics at {bootstrap}: {message}")]
    DescribeConfigs { bootstrap: String, message: String },
    #[error(
        "{key} \"{topic}\" has max.message.bytes = {topic_limit} but kafka.max_message_bytes = {ours}: {remedy}"
    )]
    TooSmall {
        key: &'static str,
        topic: String,
        topic_limit: u64,
        ours: u64,
        remedy: String,
    },
}

/// Refuses to start unless every output topic exists, may be written and
/// read by the configured principal, and takes a batch of
/// `kafka.max_message_bytes`.
/// Blocks for at most a few `kafka.request_timeout_ms`.
pub(crate) fn check_output_topics(settings: &Settings) -> Result<(), PreflightError> {
    let admin: AdminClient<DefaultClientContext> = admin_config(settings)
        .create()
        .map_err(PreflightError::Client)?;
    let bootstrap = &settings.kafka.bootstrap_servers;
    let timeout = settings.kafka.request_timeout;
    let topics = output_topics(settings);
    for &(key, topic) in &topics {
        // A topic being created (auto-creation, or just before the start) or
        // electing a leader answers LEADER_NOT_AVAILABLE for a moment:
        // asked again, not refused, within the request timeout.
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let metadata = admin
                .inner()
                .fetch_metadata(Some(topic), timeout)
                .map_err(|error| PreflightError::Metadata {
                    key,
                    topic: topic.to_owned(),
                    bootstrap: bootstrap.clone(),
                    error: Box::new(error),
                })?;
            let answer = metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic)
                .map(|t| t.error().map(RDKafkaErrorCode::from));
            let transient = matches!(
                answer,
                Some(Some(
                    RDKafkaErrorCode::LeaderNotAvailable | RDKafkaErrorCode::NotLeaderForPartition
                ))
            );
            if transient && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            judge_metadata(key, topic, bootstrap, answer)?;
            break;
        }
    }
    check_rights(&admin, &topics, timeout)?;
    let limits = topic_limits(&admin, &topics, bootstrap, timeout)?;
    for (&(key, topic), limit) in topics.iter().zip(limits) {
        match limit {
            Some(limit) => judge_size(key, topic, limit, settings.kafka.max_message_bytes)?,
            None => tracing::warn!(
                topic,
                "cannot read {key}'s max.message.bytes (the principal may lack DESCRIBE_CONFIGS on it); \
                 keep it at or above kafka.max_message_bytes = {}",
                settings.kafka.max_message_bytes
            ),
        }
    }
    Ok(())
}

fn output_topics(settings: &Settings) -> Vec<(&'static str, &str)> {
    let mut topics = vec![
        ("output.topic", settings.output.topic.as_str()),
        (
            "output.dead_letter_topic",
            settings.output.dead_letter_topic.as_str(),
        ),
    ];
    // The challenger's results, with shadow scoring.
    if settings.model.shadow_card.is_some() {
        topics.push(("output.shadow_topic", settings.output.shadow_topic.as_str()));
    }
    topics
}

/// Metadata answers a principal that may describe a topic; writing needs
/// WRITE, which Read-only rights (Read implies Describe) lack, and reading a
/// transaction's outcome back needs READ. A broker that
/// will not say (before KIP-430, or librdkafka's mock cluster) leaves it to
/// the first transaction, whose refusal the sink names.
fn check_rights(
    admin: &AdminClient<DefaultClientContext>,
    topics: &[(&'static str, &str)],
    timeout: Duration,
) -> Result<(), PreflightError> {
    let names: Vec<&str> = topics.iter().map(|&(_, topic)| topic).collect();
    let granted = match authorized::topic_operations(admin.inner(), &names, timeout) {
        Ok(granted) => granted,
        Err(e) => {
            tracing::debug!(error = %e, "cannot ask the broker which operations it grants on the output topics");
            return Ok(());
        }
    };
    for &(key, topic) in topics {
        if let Some(operations) = granted.get(topic) {
            judge_rights(key, topic, operations)?;
        }
    }
    Ok(())
}

fn judge_rights(
    key: &'static str,
    topic: &str,
    operations: &[Operation],
) -> Result<(), PreflightError> {
    let granted = || {
        operations
            .iter()
            .map(|op| op.name().to_uppercase())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !operations.contains(&Operation::WRITE) {
        return Err(PreflightError::NotWritable {
            key,
            topic: topic.to_owned(),
            granted: granted(),
        });
    }
    if !operations.contains(&Operation::READ) {
        return Err(PreflightError::NotReadable {
            key,
            topic: topic.to_owned(),
            granted: granted(),
        });
    }
    Ok(())
}

/// `answer`: None when the broker did not mention the topic at all, else the
/// topic's error code, if any.
fn judge_metadata(
    key: &'static str,
    topic: &str,
    bootstrap: &str,
    answer: Option<Option<RDKafkaErrorCode>>,
) -> Result<(), PreflightError> {
    match answer {
        Some(None) => Ok(()),
        None | Some(Some(RDKafkaErrorCode::UnknownTopicOrPartition)) => {
            Err(PreflightError::Missing {
                key,
                topic: topic.to_owned(),
                bootstrap: bootstrap.to_owned(),
            })
        }
        Some(Some(RDKafkaErrorCode::TopicAuthorizationFailed)) => {
            Err(PreflightError::Unauthorized {
                key,
                topic: topic.to_owned(),
            })
        }
        Some(Some(code)) => Err(PreflightError::Unusable {
            key,
            topic: topic.to_owned(),
            code,
        }),
    }
}

/// Every batch the producer sends fits `kafka.max_message_bytes`
/// (see [`crate::kafka::client::producer_message_max_bytes`]); the broker
/// refuses a batch over the topic's `max.message.bytes`.
fn judge_size(
    key: &'static str,
    topic: &str,
    topic_limit: u64,
    ours: u64,
) -> Result<(), PreflightError> {
    if topic_limit >= ours {
        return Ok(());
    }
    let least = crate::config::MIN_MAX_MESSAGE_BYTES;
    let remedy = if topic_limit >= least {
        format!(
            "lower kafka.max_message_bytes to at most {topic_limit} or raise the topic's max.message.bytes"
        )
    } else {
        format!(
            "raise the topic's max.message.bytes to at least {ours} (kafka.max_message_bytes cannot go below {least})"
        )
    };
    Err(PreflightError::TooSmall {
        key,
        topic: topic.to_owned(),
        topic_limit,
        ours,
        remedy,
    })
}

/// Each output topic's `max.message.bytes`, in the order of `topics`, or
/// None where the broker will not say (no DESCRIBE_CONFIGS for this
/// principal, which a writer need not have).
fn topic_limits(
    admin: &AdminClient<DefaultClientContext>,
    topics: &[(&'static str, &str)],
    bootstrap: &str,
    timeout: Duration,
) -> Result<Vec<Option<u64>>, PreflightError> {
    let failed = |message: String| PreflightError::DescribeConfigs {
        bootstrap: bootstrap.to_owned(),
        message,
    };
    let specifiers: Vec<ResourceSpecifier<'_>> = topics
        .iter()
        .map(|&(_, topic)| ResourceSpecifier::Topic(topic))
        .collect();
    let options = AdminOptions::new().request_timeout(Some(timeout));
    // The broker answered metadata a moment ago; one that does not answer
    // DescribeConfigs (an old or partial implementation, librdkafka's mock
    // cluster) leaves the limits unread, which is warned about, not refused.
    let results = match block_on(admin.describe_configs(&specifiers, &options)) {
        Ok(results) => results,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the output topics' configuration");
            return Ok(vec![None; topics.len()]);
        }
    };
    let mut limits = Vec::new();
    for &(key, topic) in topics {
        let mut limit = None;
        for result in &results {
            match result {
                Ok(resource)
                    if resource.specifier == OwnedResourceSpecifier::Topic(topic.to_owned()) =>
                {
                    limit = resource
                        .get("max.message.bytes")
                        .and_then(|e| e.value.as_deref())
                        .and_then(|v| v.parse().ok());
                }
                Ok(_)
                | Err(
                    RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::ClusterAuthorizationFailed,
                ) => {}
                // The result does not say which resource failed otherwise.
                Err(code) => return Err(failed(format!("{key} \"{topic}\": {code}"))),
            }
        }
        limits.push(limit);
    }
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_answers_become_one_line_naming_the_topic() {
        let judge = |answer| {
            judge_metadata("output.dead_letter_topic", "x.dlq", "k:9092", answer)
                .map_err(|e| e.to_string())
        };
        assert!(judge(Some(None)).is_ok());
        let missing = "output.dead_letter_topic \"x.dlq\" does not exist at k:9092: create it before starting";
        assert_eq!(judge(None).unwrap_err(), missing);
        assert_eq!(
            judge(Some(Some(RDKafkaErrorCode::UnknownTopicOrPartition))).unwrap_err(),
            missing
        );
        assert_eq!(
            judge(Some(Some(RDKafkaErrorCode::TopicAuthorizationFailed))).unwrap_err(),
            "output.dead_letter_topic \"x.dlq\": the broker answered TOPIC_AUTHORIZATION_FAILED: the configured principal may not describe or write it; grant it WRITE and READ on the topic"
        );
        assert!(
            judge(Some(Some(RDKafkaErrorCode::LeaderNotAvailable)))
                .unwrap_err()
                .starts_with(
                    "output.dead_letter_topic \"x.dlq\" cannot be written: the broker answered"
                )
        );
    }

    #[test]
    fn rights_without_write_or_read_are_refused_naming_what_is_granted() {
        let (r, w, d) = (Operation::READ, Operation::WRITE, Operation::DESCRIBE);
        assert!(judge_rights("output.topic", "s", &[r, w, d]).is_ok());
        assert_eq!(
            judge_rights("output.dead_letter_topic", "x.dlq", &[r, d])
                .unwrap_err()
                .to_string(),
            "output.dead_letter_topic \"x.dlq\": the configured principal may not write it (the broker grants it READ, DESCRIBE there); grant it WRITE on the topic"
        );
        assert_eq!(
            judge_rights("output.topic", "s", &[w, d])
                .unwrap_err()
                .to_string(),
            "output.topic \"s\": the configured principal may not read it (the broker grants it WRITE, DESCRIBE there); grant it READ on the topic: when a commit's answer is lost, the transaction's outcome is read back from its output"
        );
    }

    #[test]
    fn a_topic_limit_under_ours_is_refused_with_both_values_and_a_remedy() {
        assert!(judge_size("output.topic", "s", 1_048_588, 1_048_576).is_ok());
        assert!(judge_size("output.topic", "s", 1_048_576, 1_048_576).is_ok());
        assert_eq!(
            judge_size("output.topic", "s", 500_000, 1_048_576)
                .unwrap_err()
                .to_string(),
            "output.topic \"s\" has max.message.bytes = 500000 but kafka.max_message_bytes = 1048576: lower kafka.max_message_bytes to at most 500000 or raise the topic's max.message.bytes"
        );
        assert_eq!(
            judge_size("output.dead_letter_topic", "x.dlq", 1000, 1_048_576)
                .unwrap_err()
                .to_string(),
            "output.dead_letter_topic \"x.dlq\" has max.message.bytes = 1000 but kafka.max_message_bytes = 1048576: raise the topic's max.message.bytes to at least 1048576 (kafka.max_message_bytes cannot go below 1061)"
        );
    }
}
