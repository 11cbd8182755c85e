//! The wire format is enough for a team that does not use Rust: the Python
//! example in docs/examples, written from docs/wire-format.md alone, publishes
//! events that the processor scores, every one, exactly once. It also
//! reproduces the spec's test vector with its own sealing code.

mod support;

use std::process::Command;
use std::sync::Arc;

use streamscore::config::Format;
use streamscore::envelope::Keyring;

fn python() -> std::path::PathBuf {
    let venv = support::root().join(".local/venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run `make setup` (it installs the example's Python clients)",
        venv.display()
    );
    venv
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
