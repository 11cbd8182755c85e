//! A three-node Kafka cluster of a test's own (scripts/kafka cluster):
//! replication factor 3 and min.insync.replicas 2 for every topic, nodes
//! killed and restarted one by one, coordinators found with the broker's
//! own admin tools; deleted on drop.

use std::process::Command;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

pub const NODES: [i32; 3] = [1, 2, 3];

pub struct Cluster {
    pub name: String,
    /// All three nodes' plaintext listeners.
    pub bootstrap: String,
}

impl Cluster {
    pub fn start(name: &str) -> Self {
        let name = format!("{name}-{}", std::process::id());
        let bootstrap = kafka(&["cluster", &name]).trim().to_owned();
        Self { name, bootstrap }
    }

    /// Fresh default settings (unique topics, group, transactional id) bound
    /// to the cluster, their topics created with the cluster's defaults
    /// (replication factor 3, min.insync.replicas 2).
    pub fn settings(&self, name: &str) -> streamscore::Settings {
        let mut s = super::settings(name, streamscore::Format::Avro, streamscore::Format::Avro);
        s.kafka.bootstrap_servers = self.bootstrap.clone();
        super::create(&s);
        s
    }

    /// crash, halt, restart, pause or resume node `id` (see scripts/kafka).
    pub fn node(&self, id: i32, action: &str) {
        kafka(&[action, &format!("{}-{id}", self.name)]);
    }

    /// The node coordinating a transactional id, as Admin.describeTransactions says.
    pub fn transaction_coordinator(&self, transactional_id: &str) -> i32 {
        self.coordinator("transaction", transactional_id)
    }

    /// The node coordinating a (live) group, as Admin.describeConsumerGroups says.
    pub fn group_coordinator(&self, group: &str) -> i32 {
        self.coordinator("group", group)
    }

    fn coordinator(&self, kind: &str, id: &str) -> i32 {
        let out = kafka(&["coordinator", &self.name, kind, id]);
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("no {kind} coordinator for {id}: {out:?}"))
    }

    /// The node leading `topic`'s `partition`, from the cluster's metadata.
    pub fn leader(&self, topic: &str, partition: i32) -> i32 {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .expect("a metadata client");
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .and_then(|t| t.partitions().iter().find(|p| p.id() == partition))
            .map(|p| p.leader())
            .unwrap_or_else(|| panic!("no leader for {topic}-{partition}"))
    }

    /// The score partitions `node` leads, and whether it coordinates the
    /// transactional id or the group: what its death interrupts.
    pub fn roles(&self, node: i32, settings: &streamscore::Settings) -> String {
        let mut roles: Vec<String> = (0..3)
            .filter(|p| self.leader(&settings.output.topic, *p) == node)
            .map(|p| format!("leader of {}-{p}", settings.output.topic))
            .collect();
        if self.transaction_coordinator(&settings.kafka.transactional_id) == node {
            roles.push("transaction coordinator".into());
        }
        if self.group_coordinator(&settings.kafka.group_id) == node {
            roles.push("group coordinator".into());
        }
        format!("node {node}: {}", roles.join(", "))
    }

    /// The partitions, of every topic, the internal ones included, without
    /// all their replicas in sync (or without a leader); empty when none.
    /// A second node down before the first caught up would leave one copy,
    /// under min.insync.replicas: an operator's rolling restart waits for
    /// none, and so do the tests.
    pub fn under_replicated(&self) -> Vec<String> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .expect("a metadata client");
        match consumer.fetch_metadata(None, Duration::from_secs(10)) {
            Ok(metadata) => metadata
                .topics()
                .iter()
                .flat_map(|t| {
                    t.partitions()
                        .iter()
                        .filter(|p| p.isr().len() < p.replicas().len() || p.leader() < 0)
                        .map(move |p| format!("{}-{}", t.name(), p.id()))
                })
                .collect(),
            Err(e) => vec![e.to_string()],
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(super::root().join("scripts/kafka"))
            .args(["stop", &self.name])
            .status();
    }
}

fn kafka(args: &[&str]) -> String {
    let mut c = Command::new(super::root().join("scripts/kafka"));
    c.args(args);
    super::run_ok(&mut c)
}
