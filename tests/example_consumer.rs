//! Downstream teams: the Python example consumer in docs/examples, written
//! from docs/wire-format.md alone, reads the score topic of a real run
//! (read_committed), decodes Avro (schema id 101) and JSON output, and prints
//! every score exactly once, with the event ids, scores and sources the
//! processor wrote.

mod support;

use std::collections::BTreeMap;
use std::process::Command;

use streamscore::config::Format;
use streamscore::demo::events::{BadKind, EventFactory};

fn python() -> std::path::PathBuf {
    let venv = support::root().join(".local/venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run `make setup` (it installs the example's Python clients)",
        venv.display()
    );
    venv
}

fn consumer_prints_every_score_once(output: Format, format_arg: &str) {
    let settings = support::settings(
        &format!("example-consumer-{format_arg}"),
        Format::Avro,
        output,
    );
    support::create(&settings);
    let keyring = support::keyring();
    let mut factory = EventFactory::new(keyring.clone(), Format::Avro, "ex", 4);
    // Dead letters go to their own topic: the consumer must not see them.
    let mut records: Vec<_> = (0..30).map(|_| factory.next(None)).collect();
    records.extend(BadKind::ALL.iter().map(|k| factory.next(Some(*k))));
    support::publish_all(&settings, &records);
    let report = support::run_and_verify(&settings, keyring, records.len() as u64);
    assert!(report.exactly_once(), "{}", report.line());
    assert_eq!(report.scored, 30, "{:?}", report.dead_letter_reasons);

    let out = Command::new(python())
        .arg(support::root().join("docs/examples/consumer.py"))
        .args([
            "--bootstrap",
            &settings.kafka.bootstrap_servers,
            "--topic",
            &settings.output.topic,
            "--group",
            &format!("{}-example", settings.kafka.group_id),
            "--format",
            format_arg,
            "--idle-timeout",
            "10",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    let mut printed: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for line in stdout.lines() {
        let score: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        let id = score["event_id"].as_str().expect("event_id").to_owned();
        printed.entry(id).or_default().push(score);
    }
    let good: Vec<&str> = records
        .iter()
        .filter(|r| r.bad.is_none())
        .map(|r| r.event_id.as_str())
        .collect();
    assert_eq!(
        printed.keys().map(String::as_str).collect::<Vec<_>>(),
        {
            let mut g = good.clone();
            g.sort_unstable();
            g
        },
        "every good event, and nothing else"
    );
    for written in &report.scores {
        let seen = &printed[&written.event_id];
        assert_eq!(
            seen.len(),
            1,
            "{} printed {} times",
            written.event_id,
            seen.len()
        );
        let s = &seen[0];
        assert!(same(&s["score"], written.score), "{s} vs {}", written.score);
        assert!(same(&s["threshold"], written.threshold), "{s}");
        let decision = serde_json::to_value(written.decision).unwrap();
        assert_eq!(s["decision"], decision);
        assert_eq!(
            s["source_topic"].as_str(),
            Some(written.source_topic.as_str())
        );
        assert_eq!(
            s["source_partition"].as_i64(),
            Some(i64::from(written.source_partition))
        );
        assert_eq!(s["source_offset"].as_i64(), Some(written.source_offset));
        assert_eq!(s["event_time"].as_i64(), Some(written.event_time));
        assert_eq!(s["scored_at"].as_i64(), Some(written.scored_at));
        assert_eq!(s["record_key"].as_str(), written.record_key.as_deref());
        assert_eq!(
            s["model_sha256"].as_str(),
            Some(written.model_sha256.as_str())
        );
    }
}

/// The same double: Python prints the shortest text that reads back exactly,
/// and serde_json's default float parser may land one ulp away from it.
fn same(printed: &serde_json::Value, written: f64) -> bool {
    printed
        .as_f64()
        .is_some_and(|p| (p - written).abs() <= f64::EPSILON * written.abs())
}

#[test]
fn example_consumer_prints_every_avro_score_once() {
    consumer_prints_every_score_once(Format::Avro, "avro");
}

#[test]
fn example_consumer_prints_every_json_score_once() {
    consumer_prints_every_score_once(Format::Json, "json");
}
