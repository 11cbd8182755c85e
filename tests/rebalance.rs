//! Exactly once across rebalances: several processor instances (separate OS
//! processes, one consumer group, each with its own transactional.id) join and
//! leave while the stream runs; a paused instance (SIGSTOP past the session
//! timeout) comes back as a zombie and must be fenced, not publish twice.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use streamscore::config::{Format, Settings};
use streamscore::envelope::Keyring;
use support::process::{Processor, config_file};

struct Group {
    settings: Settings,
    dir: tempfile::TempDir,
    keyring_json: String,
    keyring: Arc<Keyring>,
}

impl Group {
    fn new(name: &str) -> Self {
        let mut settings = support::settings(name, Format::Avro, Format::Avro);
        settings.kafka.session_timeout_ms = 6_000;
        settings.kafka.transaction_timeout_ms = 10_000;
        settings.kafka.request_timeout_ms = 10_000;
        support::create(&settings);
        let (keyring, keyring_json) = Keyring::generate("group-key").unwrap();
        Self {
            settings,
            dir: tempfile::tempdir().unwrap(),
            keyring_json,
            keyring: Arc::new(keyring),
        }
    }

    /// Instance `i`: same group, its own fixed transactional.id.
    fn start(&self, i: usize) -> Processor {
        let mut s = self.settings.clone();
        s.kafka.transactional_id = format!("{}-{i}", self.settings.kafka.transactional_id);
        let config = config_file(self.dir.path(), &format!("instance-{i}"), &s, "");
        Processor::start(&config, &self.keyring_json, self.log(i))
    }

    fn log(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("instance-{i}.log"))
    }

    fn read_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log(i)).unwrap_or_default()
    }

    fn assert_exactly_once(&self, produced: u64) {
        let (done, end) = support::wait_committed(&self.settings, Duration::from_secs(180));
        assert_eq!(done, end, "committed offsets short of the input end");
        let report = support::verify_topics(&self.settings);
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

fn wait_for(mut done: impl FnMut() -> bool, what: impl Fn() -> String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {}",
            what()
        );
        sleep_ms(100);
    }
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

#[test]
fn instances_joining_and_leaving_mid_stream_lose_and_duplicate_nothing() {
    let _turn = support::exclusive();
    let g = Group::new("rebalance");
    let stream = support::stream(&g.settings, g.keyring.clone(), 8000, 700, 3);
    let a = g.start(0);
    sleep_ms(2000);
    let b = g.start(1);
    sleep_ms(2500);
    let c = g.start(2);
    sleep_ms(2500);
    // A graceful leave: commits what it read, hands its partitions over.
    let status = b.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "instance 1 on SIGTERM: {status}\n{}",
        g.read_log(1)
    );
    sleep_ms(1500);
    // A crash: its partitions move after the session timeout.
    assert!(
        c.kill9().is_none(),
        "instance 2 died before its kill:\n{}",
        g.read_log(2)
    );
    sleep_ms(1000);
    let b2 = g.start(1);
    let produced = stream.join().unwrap();
    g.assert_exactly_once(produced);
    for (i, p) in [(0, a), (1, b2)] {
        let status = p.terminate(Duration::from_secs(30));
        assert!(
            status.success(),
            "instance {i} on SIGTERM: {status}\n{}",
            g.read_log(i)
        );
    }
    // Every partition given up mid-stream was committed first, none aborted,
    // and the instance that left on SIGTERM committed before leaving.
    let logs: String = (0..3).map(|i| g.read_log(i)).collect();
    assert!(
        logs.contains("partitions revoked after committing"),
        "no rebalance revoked anything:\n{logs}"
    );
    assert!(
        !logs.contains("revoked after aborting"),
        "a revocation aborted:\n{logs}"
    );
    assert!(
        g.read_log(1)
            .contains("source stopped after a final commit outcome=Some(Committed)"),
        "{}",
        g.read_log(1)
    );
}

#[test]
fn paused_zombie_is_fenced_and_publishes_no_duplicates() {
    let _turn = support::exclusive();
    let g = Group::new("zombie");
    let stream = support::stream(&g.settings, g.keyring.clone(), 6000, 500, 3);
    let mut zombie = g.start(0);
    // The zombie must own partitions and be mid-stream when it freezes.
    wait_for(
        || g.read_log(0).contains("partitions assigned partitions=3"),
        || format!("instance 0 to own all partitions:\n{}", g.read_log(0)),
    );
    wait_for(
        || support::committed_so_far(&g.settings) > 300,
        || "instance 0 to commit records".into(),
    );
    let b = g.start(1);
    sleep_ms(1500);
    zombie.signal("STOP");
    // Past the 6 s session timeout: the group gives the zombie's partitions to instance 1.
    sleep_ms(9000);
    zombie.signal("CONT");
    let produced = stream.join().unwrap();
    g.assert_exactly_once(produced);
    let zombie_log = g.read_log(0);
    // Back from the pause, its transaction or its group membership is stale:
    // it must abort (and rewind) or stop as fenced, never commit stale work.
    assert!(
        zombie_log.contains("transaction failed; aborting") || zombie_log.contains("fatally"),
        "the zombie was neither aborted nor fenced:\n{zombie_log}"
    );
    let _ = zombie.exited();
    let status = b.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "instance 1 on SIGTERM: {status}\n{}",
        g.read_log(1)
    );
    drop(zombie);
}
