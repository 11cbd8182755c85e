//! A real schema registry in and out (Apicurio Registry, serving the
//! Confluent API; scripts/registry): writer schemas fetched by the id in each
//! record's framing and resolved against the reader schema, the score schema
//! registered under the score topic's subject and its id framed, and scores
//! read back by the stock Confluent deserializer pointed at the registry.

use crate::support;
use crate::support::registry::OwnRegistry;

use std::collections::BTreeMap;
use std::process::Command;

use streamscore::{Format, PipelineError};
use streamscore_tools::events::{BadKind, EventFactory};

#[test]
fn writers_from_the_registry_are_resolved_and_scores_carry_its_id() {
    let registry = OwnRegistry::start("sr-e2e");
    let mut settings = support::settings("sr-e2e", Format::Avro, Format::Avro);
    registry.attach(&mut settings);
    support::create(&settings);
    let topic = settings.input.topics[0].clone();
    let subject = format!("{topic}-value");
    let v1 = registry.register(&subject, "card_transaction.v1.avsc");
    let v2 = registry.register(&subject, "card_transaction.v2.avsc");
    assert_ne!(v1, v2, "two versions, two ids");

    let (keyring, keyring_json) = streamscore::Keyring::generate("sr-2026").unwrap();
    let keyring = std::sync::Arc::new(keyring);
    let mut old = EventFactory::new(keyring.clone(), Format::Avro, "v1", 1).with_schema_id(v1);
    let mut new = EventFactory::new(keyring.clone(), Format::Avro, "v2", 2).writing_v2(v2);
    let mut records: Vec<_> = (0..60).map(|_| old.next(None)).collect();
    records.extend((0..60).map(|_| new.next(None)));
    // Id 999 is not in the registry, and it says so: dead-lettered.
    records.extend((0..4).map(|_| old.next(Some(BadKind::UnknownSchema))));
    // An id the config maps to a file wins over the registry (which has no 777).
    settings.input.avro_schemas.insert(
        777,
        support::root().join("schemas/card_transaction.v1.avsc"),
    );
    let mut filed = EventFactory::new(keyring.clone(), Format::Avro, "file", 3).with_schema_id(777);
    records.extend((0..5).map(|_| filed.next(None)));
    support::publish_all(&settings, &records);

    // The Python example producer takes its id from the registry too.
    let dir = tempfile::tempdir().unwrap();
    let keyring_path = dir.path().join("keyring.json");
    std::fs::write(&keyring_path, keyring_json).unwrap();
    let out = support::run_ok(
        Command::new(support::python(
            "the producer needs confluent-kafka[schemaregistry]",
        ))
        .arg(support::root().join("docs/examples/producer.py"))
        .args(["--bootstrap", &settings.kafka.bootstrap_servers])
        .args(["--topic", &topic, "--count", "15"])
        .arg("--keyring")
        .arg(&keyring_path)
        .args(["--schema-registry", &registry.url, "--register"]),
    );
    assert!(out.contains("produced 15 records"), "{out}");

    let report = support::run_and_verify(&settings, keyring, records.len() as u64 + 15);
    assert!(report.exactly_once(), "{}", report.line());
    assert_eq!(report.scored, 140, "{:?}", report.dead_letter_reasons);
    assert_eq!(
        report.dead_letter_reasons,
        BTreeMap::from([("unknown_schema".to_owned(), 4)])
    );
    // v2 writers were resolved against the v2 reader: both versions scored.
    for prefix in ["v1-", "v2-", "py-", "file-"] {
        assert!(
            report.scores.iter().any(|s| s.event_id.starts_with(prefix)),
            "no score for the {prefix} writer"
        );
    }

    // The score schema is registered under <score topic>-value, and that id
    // (not output.avro_schema_id) is in the framing the verifier just read.
    let score_text = std::fs::read_to_string(&settings.output.avro_schema).unwrap();
    let score_id = registry
        .client()
        .lookup(&format!("{}-value", settings.output.topic), &score_text)
        .unwrap()
        .expect("the processor registered the score schema");
    assert_ne!(score_id, settings.output.avro_schema_id);

    // A downstream team's stock Confluent deserializer reads every score.
    let out = support::run_ok(
        Command::new(support::python(
            "the consumer needs confluent-kafka[avro,schemaregistry]",
        ))
        .arg(support::root().join("docs/examples/consumer.py"))
        .args(["--bootstrap", &settings.kafka.bootstrap_servers])
        .args(["--topic", &settings.output.topic])
        .args(["--group", &format!("{}-reader", settings.kafka.group_id)])
        .args(["--schema-registry", &registry.url, "--idle-timeout", "8"]),
    );
    let printed: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(printed.len(), 140, "every score, once");
    let mut ids: Vec<&str> = printed
        .iter()
        .map(|s| s["event_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 140);
}

/// The registry refuses the score schema (incompatible with what its subject
/// holds): the start stops with the registry's own message, and `check`
/// says the same.
#[test]
fn a_score_schema_the_registry_refuses_stops_the_start_with_its_message() {
    let registry = OwnRegistry::start("sr-refuse");
    let mut settings = support::settings("sr-refuse", Format::Avro, Format::Avro);
    registry.attach(&mut settings);
    let subject = format!("{}-value", settings.output.topic);
    registry.set_compatibility(&subject, "BACKWARD");
    let older = r#"{"type":"record","name":"ScoreResult","namespace":"streamscore","fields":[{"name":"event_id","type":"int"}]}"#;
    registry.client().register(&subject, older).unwrap();

    let err = match streamscore::prepare(&settings) {
        Err(PipelineError::Registry(e)) => e.to_string(),
        Err(other) => panic!("expected the registry's refusal, got: {other}"),
        Ok(_) => panic!("an incompatible score schema was accepted"),
    };
    assert!(err.contains("HTTP 409"), "{err}");
    assert!(err.contains(&subject), "{err}");
    assert!(err.to_lowercase().contains("incompatible"), "{err}");
}

/// `check` against a registry with basic auth from the environment: it
/// registers the score schema as `run` would and says which id scores
/// carry; the password appears nowhere in what it prints, even at trace level.
#[test]
fn check_speaks_to_the_registry_and_never_prints_its_password() {
    let registry = OwnRegistry::start("sr-check");
    let mut settings = support::settings("sr-check", Format::Avro, Format::Avro);
    registry.attach(&mut settings);
    let dir = tempfile::tempdir().unwrap();
    let password = "pw-5f1d9c3e-never-logged";
    let extra = format!(
        "[input.schema_registry]\nurls = [\"{}\"]\nbasic_auth_user = \"streamscore\"\nbasic_auth_password_env = \"SR_PASSWORD\"\n",
        registry.url
    );
    let config = support::process::config_file(dir.path(), "check", &settings, &extra);
    let out = Command::new(env!("CARGO_BIN_EXE_streamscore"))
        .current_dir(support::root())
        .env("RUST_LOG", "trace")
        .env("SR_PASSWORD", password)
        .env(
            "STREAMSCORE_KEYRING",
            streamscore::Keyring::generate("k").unwrap().1,
        )
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("check: ok"), "{stdout}");
    let score_text = std::fs::read_to_string(&settings.output.avro_schema).unwrap();
    let id = registry
        .client()
        .lookup(&format!("{}-value", settings.output.topic), &score_text)
        .unwrap()
        .expect("check registered the score schema");
    assert!(
        stdout.contains(&format!("framed with schema id {id}")),
        "{stdout}"
    );
    for text in [&stdout, &stderr] {
        assert!(
            !text.contains(password),
            "the password was printed:\n{text}"
        );
        let encoded = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("streamscore:{password}"),
        );
        assert!(
            !text.contains(&encoded),
            "the Authorization header was printed"
        );
    }
}

/// A registry that speaks only https and wants a client certificate: with
/// `ca_file`, `certificate_file` and `key_file` the processor registers the
/// score schema, reads writer schemas and scores; without the client
/// certificate the registry refuses the connection and the start stops
/// saying so.
#[test]
fn a_registry_behind_mutual_tls_is_reached_with_the_client_certificate() {
    let registry = OwnRegistry::start_mtls("sr-mtls");
    let mut settings = support::settings("sr-mtls", Format::Avro, Format::Avro);
    registry.attach(&mut settings);
    support::create(&settings);
    let subject = format!("{}-value", settings.input.topics[0]);
    let v2 = registry.register(&subject, "card_transaction.v2.avsc");
    let keyring = support::keyring();
    let mut factory = EventFactory::new(keyring.clone(), Format::Avro, "tls", 9).writing_v2(v2);
    let records: Vec<_> = (0..30).map(|_| factory.next(None)).collect();
    support::publish_all(&settings, &records);
    let report = support::run_and_verify(&settings, keyring, 30);
    assert!(report.exactly_once(), "{}", report.line());
    assert_eq!(report.scored, 30, "{:?}", report.dead_letter_reasons);

    let mut anonymous = settings.clone();
    anonymous.input.schema_registry.certificate_file = None;
    anonymous.input.schema_registry.key_file = None;
    let err = match streamscore::prepare(&anonymous) {
        Err(PipelineError::Registry(e)) => e.to_string(),
        Err(other) => panic!("expected the registry's refusal, got: {other}"),
        Ok(_) => panic!("a registry that wants a client certificate took a client without one"),
    };
    assert!(err.contains("did not answer"), "{err}");

    let mut untrusted = settings.clone();
    untrusted.input.schema_registry.ca_file = None;
    let err = match streamscore::prepare(&untrusted) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a certificate the built-in roots do not know was trusted"),
    };
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}
