//! /healthz and /readyz as an orchestrator sees them, on a broker of the
//! test's own that is taken away and brought back.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use streamscore::config::Format;
use streamscore::envelope::Keyring;
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

#[test]
fn readiness_follows_the_broker_and_liveness_follows_the_pipeline() {
    let _turn = support::exclusive();
    let broker = OwnBroker::start("health");
    let mut settings = support::settings("health", Format::Avro, Format::Avro);
    settings.kafka.bootstrap_servers = broker.bootstrap.clone();
    support::create(&settings);
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), "p", &settings, "");
    let (_, json) = Keyring::generate("k").unwrap();
    let log = dir.path().join("p.log");
    let processor = Processor::start(&config, &json, log.clone());
    let addr = processor.wait_address(Duration::from_secs(60));

    let ready = wait_for(&addr, "/readyz", 200, &log);
    assert_eq!(ready["model_warmed"], true, "{ready}");
    assert_eq!(ready["broker_reachable"], true, "{ready}");
    assert!(ready["group_state"].is_string(), "{ready}");
    let (status, live) = get(&addr, "/healthz");
    assert_eq!(status, 200, "{live}");
    assert_eq!(live["alive"], true, "{live}");
    // The membership settles ("steady", from the consumer's statistics every
    // 5 s), or liveness would count it as stuck.
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&addr, "/healthz").1["group_state"] != "steady" {
        assert!(Instant::now() < deadline, "{}", get(&addr, "/healthz").1);
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(get(&addr, "/healthz").1["group_unsteady_seconds"], 0.0);
    assert!(
        live["source_idle_seconds"].as_f64().unwrap() < 5.0,
        "the source loop turns at least every 100 ms: {live}"
    );

    // No broker: not ready (nothing can be consumed), yet alive (the stages
    // turn and wait; restarting would not bring the broker back).
    broker.act("halt");
    let unready = wait_for(&addr, "/readyz", 503, &log);
    assert_eq!(unready["broker_reachable"], false, "{unready}");
    let (status, live) = get(&addr, "/healthz");
    assert_eq!(status, 200, "alive while the broker is away: {live}");

    broker.act("restart");
    let again = wait_for(&addr, "/readyz", 200, &log);
    assert_eq!(again["broker_reachable"], true, "{again}");

    let status = processor.terminate(Duration::from_secs(60));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "{status}\n{text}");
}
