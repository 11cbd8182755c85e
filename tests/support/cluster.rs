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

    /// The in-sync replicas of `topic`'s `partition`.
    pub fn isr(&self, topic: &str, partition: i32) -> Vec<i32> {
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
            .map(|p| p.isr().to_vec())
            .unwrap_or_default()
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
