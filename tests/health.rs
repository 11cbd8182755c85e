//! /healthz and /readyz as an orchestrator sees them, on a broker of the
//! test's own that is taken away (killed: not ready, but alive, since a
//! restart would not bring it back) or hung under load (a stage wedged for
//! longer than the stall limit: not alive, so the orchestrator restarts it).

use crate::support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use streamscore::Keyring;
use streamscore::Settings;
use support::broker::OwnBroker;
use support::process::{Processor, config_file, http_get as get};

fn wait_for(addr: &str, path: &str, status: u16, log: &Path) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (got, body) = get(addr, path);
        if got == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} stayed {got} ({body}), expected {status}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A stall limit the test can wait out (the minimum the processor allows).
const STALL: &str = "stall_timeout_ms = 10000\n";

/// Settings on the test's broker with a short group session, so the
/// membership leaves "steady" soon after the broker goes.
fn on(broker: &OwnBroker, name: &str) -> Settings {
    let mut s = broker.settings(name);
    s.kafka.session_timeout = Duration::from_millis(6_000);
    s
}

fn wait_steady(addr: &str) {
    // The consumer's statistics come every 5 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(addr, "/healthz").1["group_state"] != "steady" {
        assert!(Instant::now() < deadline, "{}", get(addr, "/healthz").1);
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn readiness_follows_the_broker_and_a_missing_broker_is_not_a_reason_to_restart() {
    let _turn = support::exclusive();
    let broker = OwnBroker::start("health");
    let settings = on(&broker, "health");
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), "p", &settings, STALL);
    let (_, json) = Keyring::generate("k").unwrap();
    let log = dir.path().join("p.log");
    let processor = Processor::start(&config, &json, log.clone());
    let addr = processor.wait_address(Duration::from_secs(60));

    let ready = wait_for(&addr, "/readyz", 200, &log);
    assert_eq!(ready["model_warmed"], true, "{ready}");
    assert_eq!(ready["broker_reachable"], true, "{ready}");
    let (status, live) = get(&addr, "/healthz");
    assert_eq!(status, 200, "{live}");
    assert_eq!(live["alive"], true, "{live}");
    assert!(
        live["source_idle_seconds"].as_f64().unwrap() < 5.0,
        "the source loop turns at least every 100 ms: {live}"
    );
    wait_steady(&addr);
    assert_eq!(get(&addr, "/healthz").1["group_unsteady_seconds"], 0.0);

    // No broker: not ready (nothing can be consumed). Still alive after the
    // group session and the stall limit have both run out: the stages turn,
    // and a rejoin that waits for a broker is not stuck.
    broker.act("halt");
    let unready = wait_for(&addr, "/readyz", 503, &log);
    assert_eq!(unready["broker_reachable"], false, "{unready}");
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(20) {
        let (status, live) = get(&addr, "/healthz");
        assert_eq!(status, 200, "alive while the broker is away: {live}");
        std::thread::sleep(Duration::from_secs(1));
    }

    broker.act("restart");
    let again = wait_for(&addr, "/readyz", 200, &log);
    assert_eq!(again["broker_reachable"], true, "{again}");

    let status = processor.terminate(Duration::from_secs(60));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "{status}\n{text}");
}

#[test]
fn a_stage_wedged_past_the_stall_limit_fails_liveness() {
    let _turn = support::exclusive();
    let broker = OwnBroker::start_pausable("wedge");
    let settings = on(&broker, "wedge");
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), "p", &settings, STALL);
    let (keyring, json) = Keyring::generate("k").unwrap();
    let log = dir.path().join("p.log");
    let processor = Processor::start(&config, &json, log.clone());
    let addr = processor.wait_address(Duration::from_secs(60));
    wait_for(&addr, "/readyz", 200, &log);

    let stream = support::stream(&settings, Arc::new(keyring), 20_000, 1_000, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while support::committed_so_far(&settings) < 100 {
        assert!(Instant::now() < deadline, "nothing committed");
        std::thread::sleep(Duration::from_millis(200));
    }
    // A hung broker (SIGSTOP) under load: the open transaction's commit
    // blocks for kafka.request_timeout_ms (30 s), past the 10 s stall limit.
    broker.act("pause");
    let dead = wait_for(&addr, "/healthz", 503, &log);
    assert_eq!(dead["alive"], false, "{dead}");
    // The wedged commit shows as a stage idle past the limit, or as records
    // waiting past it without a commit, whichever crosses the limit first.
    let stalled = [
        "sink_idle_seconds",
        "source_idle_seconds",
        "progress_stall_seconds",
    ]
    .iter()
    .map(|k| dead[*k].as_f64().unwrap())
    .fold(0.0, f64::max);
    assert!(stalled > 10.0, "a stall past the limit: {dead}");

    broker.act("resume");
    // An orchestrator would restart it now; the chaos and broker-fault tests
    // show a restart loses and duplicates nothing. The input producer is
    // left to itself: in 2 of 3 fresh-clone runs its idempotent producer
    // delivered nothing more after this broker's SIGCONT (5 flushes of 60 s),
    // which says nothing about the processor's liveness checked above.
    drop(stream);
    drop(processor);
}

/// A processor that stops on an error keeps serving /metrics for
/// `telemetry.exit_linger_ms` (not ready, not alive), so Prometheus scrapes
/// the counters that say why and this run's start time before the restart
/// resets them; a SIGTERM ends the linger at once, and the exit still fails.
#[test]
fn a_processor_stopping_on_an_error_lingers_on_metrics_then_fails() {
    let mut settings = support::settings(
        "linger",
        streamscore::Format::Avro,
        streamscore::Format::Avro,
    );
    support::create(&settings);
    // A dead-letter topic that does not exist stops the start with an error.
    settings.output.dead_letter_topic = format!("{}.missing", settings.output.dead_letter_topic);
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), "p", &settings, "exit_linger_ms = 60000\n");
    let (_, json) = Keyring::generate("k").unwrap();
    let log = dir.path().join("p.log");
    let mut processor = Processor::start(&config, &json, log.clone());
    let addr = processor.wait_address(Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(90);
    let body = loop {
        let (status, body) = get(&addr, "/healthz");
        if status == 503 && body["failed"].is_string() {
            break body;
        }
        assert!(
            processor.exited().is_none(),
            "exited without lingering on /metrics:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(
            Instant::now() < deadline,
            "/healthz never said failed ({status} {body})\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        body["failed"].as_str().unwrap().contains(".missing"),
        "the reason names the missing topic: {body}"
    );
    assert_eq!(get(&addr, "/readyz").0, 503);
    let metrics = support::scrape::metrics_text(&addr);
    assert!(
        support::scrape::value(&metrics, "process_start_time_seconds").is_some(),
        "{metrics}"
    );
    // A run that never started its pipeline still has the gauges the alerts
    // and the dashboard read, at their "nothing yet" values.
    for gauge in [
        "streamscore_last_commit_timestamp_seconds",
        "streamscore_transactions_consecutive_aborts",
        "streamscore_assigned_partitions",
    ] {
        assert_eq!(
            support::scrape::value(&metrics, gauge),
            Some(0.0),
            "{gauge} at 0 before the pipeline starts"
        );
    }
    // The linger is 60 s; `terminate` gives up after 30: SIGTERM ends it.
    let status = processor.terminate(Duration::from_secs(30));
    assert!(!status.success(), "an error exit stays an error: {status}");
}
