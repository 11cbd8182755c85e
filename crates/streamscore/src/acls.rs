//! The least a Kafka principal needs for this processor, derived from the
//! settings: what an operator pastes into kafka-acls or a Strimzi KafkaUser.
//!
//! The output topics need Read as well as Write: when a commit's answer is
//! lost, the sink reads the transaction's outcome back from its output
//! (`kafka::outcome`).
//!
//! Kafka implies Describe from Read and Write, and since Kafka 3.0 (KIP-679)
//! a producer with Write on a topic needs no IdempotentWrite on the cluster,
//! so neither is listed. DescribeConfigs on the output topics is optional:
//! without it the start-time size check is skipped with a warning.

use crate::config::Settings;

/// A Kafka resource type, as kafka-acls spells its option and Strimzi its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceType {
    Topic,
    Group,
    TransactionalId,
}

impl ResourceType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Topic => "topic",
            Self::Group => "group",
            Self::TransactionalId => "transactionalId",
        }
    }
}

/// One ACL the processor's principal needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    pub resource: ResourceType,
    pub name: String,
    /// A prefix pattern (per-replica transactional ids), else a literal name.
    pub prefixed: bool,
    /// As Kafka names it: Read, Write.
    pub operation: &'static str,
    /// Which setting asks for it, for the operator reading the list.
    pub why: String,
}

impl Acl {
    /// The arguments of `kafka-acls --add` for it (after the principal).
    pub fn kafka_acls_args(&self) -> Vec<String> {
        let mut args = vec![
            "--operation".to_owned(),
            self.operation.to_owned(),
            format!("--{}", kafka_acls_option(self.resource)),
            self.name.clone(),
        ];
        if self.prefixed {
            args.extend(["--resource-pattern-type".to_owned(), "prefixed".to_owned()]);
        }
        args
    }
}

fn kafka_acls_option(resource: ResourceType) -> &'static str {
    match resource {
        ResourceType::Topic => "topic",
        ResourceType::Group => "group",
        ResourceType::TransactionalId => "transactional-id",
    }
}

/// The minimal set for these settings. `transactional_id_prefix`, when
/// given, replaces `kafka.transactional_id` with a prefix (the chart gives
/// each replica `<prefix><pod name>`).
pub fn minimal(settings: &Settings, transactional_id_prefix: Option<&str>) -> Vec<Acl> {
    let acl = |resource, name: &str, operation, why: &str| Acl {
        resource,
        name: name.to_owned(),
        prefixed: false,
        operation,
        why: why.to_owned(),
    };
    let mut acls: Vec<Acl> = settings
        .input
        .topics
        .iter()
        .map(|t| acl(ResourceType::Topic, t, "Read", "input.topics"))
        .collect();
    acls.push(acl(
        ResourceType::Group,
        &settings.kafka.group_id,
        "Read",
        "kafka.group_id: join, and offsets committed in transactions",
    ));
    let mut outputs = vec![
        ("output.topic", settings.output.topic.as_str()),
        (
            "output.dead_letter_topic",
            settings.output.dead_letter_topic.as_str(),
        ),
    ];
    if settings.model.shadow_card.is_some() {
        outputs.push(("output.shadow_topic", settings.output.shadow_topic.as_str()));
    }
    for (key, topic) in outputs {
        acls.push(acl(ResourceType::Topic, topic, "Write", key));
        acls.push(acl(
            ResourceType::Topic,
            topic,
            "Read",
            &format!("{key}: a transaction's outcome, read back when a commit's answer is lost"),
        ));
    }
    acls.push(match transactional_id_prefix {
        Some(prefix) => Acl {
            prefixed: true,
            ..acl(
                ResourceType::TransactionalId,
                prefix,
                "Write",
                "each replica's kafka.transactional_id, by prefix",
            )
        },
        None => acl(
            ResourceType::TransactionalId,
            &settings.kafka.transactional_id,
            "Write",
            "kafka.transactional_id",
        ),
    });
    acls
}

/// `kafka-acls` commands, one per ACL, for `principal` (e.g. `User:streamscore`).
pub fn as_kafka_acls(acls: &[Acl], principal: &str, bootstrap: &str) -> String {
    let mut out = String::new();
    for a in acls {
        out.push_str(&format!(
            "# {}\nkafka-acls.sh --bootstrap-server {bootstrap} --add --allow-principal {principal} {}\n",
            a.why,
            a.kafka_acls_args().join(" ")
        ));
    }
    out
}

/// A Strimzi `KafkaUser` (SCRAM-SHA-512) with these ACLs.
pub fn as_strimzi(acls: &[Acl], user: &str, cluster: &str) -> String {
    // Names as JSON strings (valid YAML scalars): a topic such as `on` or
    // `1e3`, or one with a `#` or `: `, must stay the same string.
    let quoted = |s: &str| serde_json::Value::from(s).to_string();
    let (user, cluster) = (quoted(user), quoted(cluster));
    let mut out = format!(
        "apiVersion: kafka.strimzi.io/v1beta2\nkind: KafkaUser\nmetadata:\n  name: {user}\n  labels:\n    strimzi.io/cluster: {cluster}\nspec:\n  authentication:\n    type: scram-sha-512\n  authorization:\n    type: simple\n    acls:\n"
    );
    for a in acls {
        out.push_str(&format!(
            "      # {}\n      - resource:\n          type: {}\n          name: {}\n          patternType: {}\n        operations: [{}]\n",
            a.why,
            a.resource.as_str(),
            quoted(&a.name),
            if a.prefixed { "prefix" } else { "literal" },
            a.operation
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_set_is_read_on_inputs_and_group_write_and_read_on_outputs_and_the_transactional_id() {
        let mut s = Settings::load_with_env(None, false).unwrap();
        s.input.topics = vec!["a".into(), "b".into()];
        let acls = minimal(&s, None);
        let short: Vec<(ResourceType, &str, &str)> = acls
            .iter()
            .map(|a| (a.resource, a.name.as_str(), a.operation))
            .collect();
        assert_eq!(
            short,
            [
                (ResourceType::Topic, "a", "Read"),
                (ResourceType::Topic, "b", "Read"),
                (ResourceType::Group, "streamscore", "Read"),
                (ResourceType::Topic, "scores", "Write"),
                (ResourceType::Topic, "scores", "Read"),
                (ResourceType::Topic, "scores-dlq", "Write"),
                (ResourceType::Topic, "scores-dlq", "Read"),
                (ResourceType::TransactionalId, "streamscore-0", "Write"),
            ]
        );
        let prefixed = minimal(&s, Some("scorer-"));
        let last = prefixed.last().unwrap();
        assert_eq!(
            last.kafka_acls_args(),
            [
                "--operation",
                "Write",
                "--transactional-id",
                "scorer-",
                "--resource-pattern-type",
                "prefixed"
            ]
        );
        let yaml = as_strimzi(&prefixed, "scorer", "my-cluster");
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(
            doc["spec"]["authorization"]["acls"]
                .as_sequence()
                .unwrap()
                .len(),
            8
        );
        assert_eq!(
            doc["spec"]["authorization"]["acls"][7]["resource"]["patternType"],
            "prefix"
        );
    }

    #[test]
    fn strimzi_names_stay_strings_whatever_they_look_like() {
        let mut s = Settings::load_with_env(None, false).unwrap();
        s.input.topics = vec!["on".into(), "1e3".into(), "a#b: c".into()];
        let yaml = as_strimzi(&minimal(&s, None), "null", "yes");
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml).unwrap();
        let acls = &doc["spec"]["authorization"]["acls"];
        for (i, name) in ["on", "1e3", "a#b: c"].iter().enumerate() {
            assert_eq!(acls[i]["resource"]["name"], *name, "{yaml}");
        }
        assert_eq!(doc["metadata"]["name"], "null");
        assert_eq!(doc["metadata"]["labels"]["strimzi.io/cluster"], "yes");
    }
}
