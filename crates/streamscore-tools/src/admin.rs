//! Topic creation, for the demo and the tests (production topics are the SRE's).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use streamscore::Settings;
use streamscore::clients::tool_config;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot create Kafka admin client for {bootstrap}: {message}")]
    Client { bootstrap: String, message: String },
    #[error(
        "cannot create topic {topic} on {bootstrap}: {message} (is the broker running? `scripts/kafka start NAME` starts one)"
    )]
    Create {
        topic: String,
        bootstrap: String,
        message: String,
    },
}

/// A topic to create: name, partitions, topic configs.
pub type TopicSpec<'a> = (&'a str, i32, &'a [(&'a str, &'a str)]);

/// Creates each `(name, partitions)` topic unless it exists, on the cluster
/// the settings reach (bootstrap and `kafka.properties`), with the cluster's
/// default replication factor (`default.replication.factor`), as
/// `kafka-topics --create` without `--replication-factor` does.
pub async fn create_topics(settings: &Settings, topics: &[(&str, i32)]) -> Result<(), AdminError> {
    let plain: Vec<TopicSpec<'_>> = topics.iter().map(|&(name, p)| (name, p, &[][..])).collect();
    create_topics_with_configs(settings, &plain).await
}

/// As [`create_topics`], each topic with its own topic configs, e.g.
/// `("max.message.bytes", "1000")`.
pub async fn create_topics_with_configs(
    settings: &Settings,
    topics: &[TopicSpec<'_>],
) -> Result<(), AdminError> {
    let bootstrap = settings.kafka.bootstrap_servers.as_str();
    let admin: AdminClient<DefaultClientContext> =
        tool_config(settings)
            .create()
            .map_err(|e| AdminError::Client {
                bootstrap: bootstrap.to_owned(),
                message: e.to_string(),
            })?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions, configs)| {
            configs.iter().fold(
                NewTopic::new(name, *partitions, TopicReplication::Fixed(-1)),
                |topic, (key, value)| topic.set(key, value),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&new, &options)
        .await
        .map_err(|e| AdminError::Create {
            topic: topics.iter().map(|t| t.0).collect::<Vec<_>>().join(","),
            bootstrap: bootstrap.to_owned(),
            message: e.to_string(),
        })?;
    for result in results {
        if let Err((topic, code)) = result
            && code != RDKafkaErrorCode::TopicAlreadyExists
        {
            return Err(AdminError::Create {
                topic,
                bootstrap: bootstrap.to_owned(),
                message: code.to_string(),
            });
        }
    }
    Ok(())
}
