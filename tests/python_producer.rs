//! The wire format is enough for a team that does not use Rust: the Python
//! example in docs/examples, written from docs/wire-format.md alone, publishes
//! events that the processor scores, every one, exactly once. It also
//! reproduces the spec's test vector with its own sealing code.

use crate::support;

use std::process::Command;
use std::sync::Arc;

use streamscore::Format;
use streamscore::Keyring;

fn python() -> std::path::PathBuf {
    support::python("the example producer needs confluent-kafka, fastavro and cryptography")
}

#[test]
fn python_example_reproduces_the_test_vector() {
    let out = support::run_ok(
        Command::new(python())
            .arg(support::root().join("docs/examples/producer.py"))
            .arg("--check-vector"),
    );
    assert_eq!(out.trim(), "test vector: ok");
}

#[test]
fn python_example_events_are_all_scored() {
    let settings = support::settings("python", Format::Avro, Format::Avro);
    support::create(&settings);
    let dir = tempfile::tempdir().unwrap();
    let (keyring, json) = Keyring::generate("py-2026").unwrap();
    let keyring_path = dir.path().join("keyring.json");
    std::fs::write(&keyring_path, json).unwrap();
    support::run_ok(
        Command::new(python())
            .arg(support::root().join("docs/examples/producer.py"))
            .args([
                "--bootstrap",
                &settings.kafka.bootstrap_servers,
                "--topic",
                &settings.input.topics[0],
            ])
            .arg("--keyring")
            .arg(&keyring_path)
            .args(["--count", "40"]),
    );

    let report = support::run_and_verify(&settings, Arc::new(keyring), 40);
    assert!(report.exactly_once(), "{}", report.line());
    assert_eq!(
        report.scored, 40,
        "dead letters: {:?}",
        report.dead_letter_reasons
    );
    assert!(report.scores.iter().all(|s| s.event_id.starts_with("py-")));
}

/// The example never reports records it did not deliver: each record's
/// delivery report counts, and so do records flush() leaves unacknowledged.
/// `producer.py` on these arguments; returns (success, stdout, stderr).
fn run_example(
    bootstrap: &str,
    topic: &str,
    keyring: &std::path::Path,
    timeout_s: &str,
) -> (bool, String, String) {
    let out = Command::new(python())
        .arg(support::root().join("docs/examples/producer.py"))
        .args(["--bootstrap", bootstrap, "--topic", topic])
        .arg("--keyring")
        .arg(keyring)
        .args(["--count", "15", "--timeout", timeout_s])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A topic that does not exist (the test broker does not create topics on
/// demand), and a broker that never answers: neither is reported as produced;
/// the example exits non-zero naming how many failed and why.
#[test]
fn python_example_reports_records_it_did_not_deliver() {
    let settings = support::settings("python-missing", Format::Avro, Format::Avro);
    support::create(&settings);
    let dir = tempfile::tempdir().unwrap();
    let (_, json) = Keyring::generate("py-2026").unwrap();
    let keyring_path = dir.path().join("keyring.json");
    std::fs::write(&keyring_path, json).unwrap();

    let missing = format!("{}.missing", settings.input.topics[0]);
    // Longer than librdkafka waits for a new topic's metadata (30 s), so the
    // broker's answer, not the timeout, is the reason given.
    let (ok, stdout, stderr) = run_example(
        &settings.kafka.bootstrap_servers,
        &missing,
        &keyring_path,
        "60",
    );
    assert!(!ok && !stdout.contains("produced 15"), "{stdout}{stderr}");
    assert!(
        stderr.contains("15 of 15 records were not delivered")
            && stderr.contains("UNKNOWN_TOPIC_OR_PART"),
        "{stderr}"
    );

    // Nothing listens on port 1: no report at all until the records time out.
    let (ok, stdout, stderr) = run_example("127.0.0.1:1", &missing, &keyring_path, "5");
    assert!(!ok && !stdout.contains("produced 15"), "{stdout}{stderr}");
    assert!(
        stderr.contains("15 of 15 records were not delivered") && stderr.contains("timed out"),
        "{stderr}"
    );
}
