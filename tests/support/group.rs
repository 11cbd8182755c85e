//! Several processor instances in one consumer group, each its own OS
//! process with its own `transactional.id` and log, sharing a keyring and
//! the 3-partition input: what rebalance and lag tests are made of.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use streamscore::Keyring;
use streamscore::{Format, Settings};
use streamscore_tools::events::EventFactory;

use super::process::{Processor, config_file};

pub struct Group {
    pub settings: Settings,
    pub dir: tempfile::TempDir,
    pub keyring_json: String,
    pub keyring: Arc<Keyring>,
}

impl Group {
    /// Session timeout 6 s: a killed member's partitions move within seconds.
    pub fn new(name: &str) -> Self {
        Self::with_session_timeout(name, 6_000)
    }

    pub fn with_session_timeout(name: &str, session_timeout_ms: u64) -> Self {
        let mut settings = super::settings(name, Format::Avro, Format::Avro);
        settings.kafka.session_timeout = Duration::from_millis(session_timeout_ms);
        settings.kafka.transaction_timeout = Duration::from_millis(10_000);
        settings.kafka.request_timeout = Duration::from_millis(10_000);
        super::create(&settings);
        let (keyring, keyring_json) = Keyring::generate("group-key").unwrap();
        Self {
            settings,
            dir: tempfile::tempdir().unwrap(),
            keyring_json,
            keyring: Arc::new(keyring),
        }
    }

    /// Instance `i`, with `extra` config lines.
    pub fn start(&self, i: usize, extra: &str) -> Processor {
        self.start_with(i, self.settings.clone(), extra)
    }

    /// Instance `i` on these settings, its `transactional.id` fixed per `i`.
    pub fn start_with(&self, i: usize, mut s: Settings, extra: &str) -> Processor {
        s.kafka.transactional_id = format!("{}-{i}", self.settings.kafka.transactional_id);
        let config = config_file(self.dir.path(), &format!("instance-{i}"), &s, extra);
        Processor::start(&config, &self.keyring_json, self.log(i))
    }

    /// `n` records to each of the input's 3 partitions (by number, not key).
    pub fn publish_to_every_partition(&self, round: u64, n: usize) {
        let mut factory = EventFactory::new(self.keyring.clone(), Format::Avro, "group", round);
        for partition in 0..3 {
            let records: Vec<_> = (0..n).map(|_| factory.next(None)).collect();
            super::publish_to(
                &self.settings,
                &self.settings.input.topics[0],
                Some(partition),
                &records,
            );
        }
    }

    pub fn log(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("instance-{i}.log"))
    }

    pub fn read_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log(i)).unwrap_or_default()
    }

    /// Waits until the group's committed offsets reach the input's end.
    pub fn wait_committed(&self, within: Duration) {
        let (done, end) = super::wait_committed(&self.settings, within);
        assert_eq!(done, end, "the group did not commit the input");
    }

    /// SIGTERM to instance `i`, which must exit 0.
    pub fn stop_cleanly(&self, processor: Processor, i: usize) {
        let status = processor.terminate(Duration::from_secs(60));
        assert!(
            status.success(),
            "instance {i} on SIGTERM: {status}\n{}",
            self.read_log(i)
        );
    }

    /// Everything produced is committed, scored or dead-lettered once.
    pub fn assert_exactly_once(&self, produced: u64) {
        self.wait_committed(Duration::from_secs(180));
        let report = super::verify_topics(&self.settings);
        println!("{}", report.line());
        assert_eq!(report.produced, produced);
        assert!(report.exactly_once(), "{}", report.line());
        assert!(
            report.offsets_committed_to_end(),
            "{:?}",
            report.committed_vs_end
        );
    }
}
