//! Exactly once under crashes: a steady encrypted stream, the processor run as
//! its own OS process and SIGKILLed at random moments (start-up, mid-batch,
//! mid-produce, mid-commit), restarted each time; then an independent
//! read_committed reader checks every input record exactly once and the
//! group's committed offsets at the input's end.
//!
//! `make test` runs 5 cycles; `scripts/chaos --cycles 20 --events N` runs longer
//! (it sets STREAMSCORE_CHAOS_CYCLES / _EVENTS / _SEED).

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use streamscore::Format;
use streamscore::Keyring;
use support::process::{Processor, config_file};

#[test]
fn sigkill_and_restart_loses_and_duplicates_nothing() {
    let _turn = support::exclusive();
    let cycles = support::env_or("STREAMSCORE_CHAOS_CYCLES", 5);
    let events = support::env_or("STREAMSCORE_CHAOS_EVENTS", 6000);
    let seed = support::env_or("STREAMSCORE_CHAOS_SEED", 20261124);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let mut settings = support::settings("chaos", Format::Avro, Format::Avro);
    // Static membership: a restarted instance takes its partitions back at once.
    settings.kafka.group_instance_id = Some(format!("{}-member", settings.kafka.group_id));
    settings.kafka.session_timeout = Duration::from_millis(10_000);
    settings.kafka.transaction_timeout = Duration::from_millis(10_000);
    settings.kafka.request_timeout = Duration::from_millis(10_000);
    support::create(&settings);
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), "chaos", &settings, "");
    let (keyring, json) = Keyring::generate("chaos-key").unwrap();

    // Spread the stream over the kill cycles so every kill lands under load.
    let rate = (events as f64 / (cycles as f64 * 1.8)).max(200.0) as u64;
    let stream = support::stream(&settings, Arc::new(keyring), events, rate, 3);

    let log = dir.path().join("processor.log");
    let mut died_on_their_own = 0;
    for cycle in 0..cycles {
        let processor = Processor::start(&config, &json, log.clone());
        let life = Duration::from_millis(rng.random_range(300..3000));
        std::thread::sleep(life);
        if let Some(status) = processor.kill9() {
            died_on_their_own += 1;
            eprintln!(
                "chaos: cycle {cycle}: the processor had already exited ({status}) before SIGKILL"
            );
        }
    }
    let produced = stream.join().unwrap();

    // The last instance runs until everything is committed, then stops cleanly.
    let last = Processor::start(&config, &json, log.clone());
    let (done, end) = support::wait_committed(&settings, Duration::from_secs(180));
    let status = last.terminate(Duration::from_secs(30));
    let report = support::verify_topics(&settings);
    println!(
        "chaos: seed {seed}, {died_on_their_own} instances exited on their own before their kill"
    );
    println!(
        "chaos: {cycles} cycles, {} records, {} lost, {} duplicated",
        report.produced,
        report.lost,
        report.duplicated + report.unexpected
    );
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(report.produced, produced);
    assert!(
        report.exactly_once(),
        "{} (log: {})",
        report.line(),
        log.display()
    );
    assert_eq!(
        done, end,
        "committed offsets {done} short of the input end {end}"
    );
    assert!(
        report.offsets_committed_to_end(),
        "{:?}",
        report.committed_vs_end
    );
    assert!(
        status.success(),
        "last instance exit {status}; log tail: {}",
        tail(&log_text)
    );
    assert_eq!(
        died_on_their_own,
        0,
        "instances died before being killed; log tail: {}",
        tail(&log_text)
    );
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
