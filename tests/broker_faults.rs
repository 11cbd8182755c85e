//! Exactly once across broker faults, on a broker of the test's own (the
//! shared one must not die): SIGKILL and restart on the same log dir under
//! load, a clean stop and restart, and a hung broker (SIGSTOP) for 30 s while
//! the processor's memory is watched. A supervisor restarts the processor
//! whenever it exits, as Kubernetes would; fatal errors are allowed to end an
//! instance, never to lose or duplicate a record.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use streamscore::Keyring;
use streamscore::Settings;
use support::broker::OwnBroker;
use support::process::config_file;
use support::supervisor::Supervisor;

fn fault_settings(name: &str, broker: &OwnBroker) -> Settings {
    let mut s = broker.settings(name);
    s.kafka.group_instance_id = Some(format!("{}-member", s.kafka.group_id));
    s.kafka.session_timeout = Duration::from_millis(10_000);
    s.kafka.transaction_timeout = Duration::from_millis(20_000);
    s.kafka.request_timeout = Duration::from_millis(10_000);
    s
}

/// A liveness limit the supervisor's probes act on within a test's patience
/// (the default, 300 s, suits a rebalance of a large group in production).
const LIVENESS: &str = "stall_timeout_ms = 60000\n";

fn check(settings: &Settings, produced: u64, log: &str) {
    let report = support::assert_exactly_once(settings, produced, "broker faults", log);
    println!("{}", report.line());
}

#[test]
fn broker_killed_and_stopped_under_load_loses_and_duplicates_nothing() {
    let _turn = support::exclusive();
    let broker = OwnBroker::start("faults-kill");
    let settings = fault_settings("broker-kill", &broker);
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), "p", &settings, LIVENESS);
    let (keyring, json) = Keyring::generate("fault-key").unwrap();
    let stream = support::stream(&settings, Arc::new(keyring), 6000, 400, 3);
    let mut supervisor = Supervisor::start(config, &json, dir.path().join("p.log"));
    supervisor.run_for(Duration::from_secs(3));
    broker.act("crash");
    supervisor.run_for(Duration::from_secs(3));
    broker.act("restart");
    supervisor.run_for(Duration::from_secs(4));
    broker.act("halt");
    supervisor.run_for(Duration::from_secs(2));
    broker.act("restart");
    while !stream.is_finished() {
        supervisor.run_for(Duration::from_secs(1));
    }
    let produced = stream.join().unwrap();
    supervisor.run_until_committed(&settings, Duration::from_secs(180));
    println!(
        "processor restarts after broker faults: {} ({} on failed liveness probes)",
        supervisor.restarts, supervisor.liveness_restarts
    );
    let log = supervisor.stop();
    check(&settings, produced, &log);
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn hung_broker_for_30_seconds_keeps_memory_flat_and_loses_nothing() {
    let _turn = support::exclusive();
    let broker = OwnBroker::start_pausable("faults-hang");
    let settings = fault_settings("broker-hang", &broker);
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), "p", &settings, LIVENESS);
    let (keyring, json) = Keyring::generate("fault-key").unwrap();
    // The whole input is written before the broker hangs, so the processor
    // holds a backlog when its output stops; the producer of the input is not
    // what this test is about.
    // Sized, and watched closely enough, that the processor cannot finish
    // it between two looks: 20 000 records looked at every 200 ms were all committed
    // before the hang once the source drained in parallel.
    let produced = support::stream(&settings, Arc::new(keyring), 100_000, 100_000, 3)
        .join()
        .unwrap();
    let mut supervisor = Supervisor::start(config, &json, dir.path().join("p.log"));
    let mut committed = 0;
    while committed < 1000 {
        supervisor.run_for(Duration::from_millis(20));
        committed = support::committed_so_far(&settings);
    }
    // Nothing commits while the broker hangs, so this is the backlog it hangs on.
    let backlog = produced as i64 - committed;
    let pid = supervisor.pid();
    let baseline = rss_kib(pid);
    broker.act("pause");
    let mut peak = baseline;
    for _ in 0..30 {
        supervisor.run_for(Duration::from_secs(1));
        peak = peak.max(rss_kib(pid));
    }
    broker.act("resume");
    supervisor.run_until_committed(&settings, Duration::from_secs(180));
    println!(
        "RSS during a 30 s hung broker: baseline {} MiB, peak {} MiB; backlog when it hung {backlog}; restarts {} ({} on failed liveness probes)",
        baseline / 1024,
        peak / 1024,
        supervisor.restarts,
        supervisor.liveness_restarts
    );
    let log = supervisor.stop();
    check(&settings, produced, &log);
    assert!(baseline > 0, "could not read the processor's RSS");
    assert!(
        backlog > 1000,
        "the backlog was gone before the hang; the test proved nothing"
    );
    // Bounded queues end to end: an outage must not turn into buffering.
    assert!(
        peak < baseline + 32 * 1024,
        "RSS grew from {baseline} KiB to {peak} KiB during the outage"
    );
}
