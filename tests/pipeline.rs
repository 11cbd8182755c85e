//! End-to-end tests on the real Apache Kafka broker: exactly-once counts,
//! dead letters with reasons, Avro and JSON, and scores equal to Python
//! onnxruntime's.

use crate::support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use streamscore::Decision;
use streamscore::Format;
use streamscore::Keyring;
use streamscore_tools::events::{BadKind, EventFactory, OutRecord};
use streamscore_tools::produce::LineEncoder;

use support::keyring;

/// `good` good records with every bad kind mixed in `bad_each` times, in a fixed shuffled order.
fn records(keyring: &Arc<Keyring>, format: Format, good: usize, bad_each: usize) -> Vec<OutRecord> {
    let mut factory = EventFactory::new(keyring.clone(), format, "it", 1);
    let mut out: Vec<OutRecord> = (0..good).map(|_| factory.next(None)).collect();
    for (i, kind) in BadKind::ALL
        .iter()
        .cycle()
        .take(BadKind::ALL.len() * bad_each)
        .enumerate()
    {
        let record = factory.next(Some(*kind));
        let at = (i * 7919) % (out.len() + 1);
        out.insert(at, record);
    }
    out
}

fn expected_reasons(format: Format, bad_each: u64) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for kind in BadKind::ALL {
        *m.entry(kind.expected_reason(format).as_str().to_owned())
            .or_default() += bad_each;
    }
    m
}

fn exactly_once_with_every_bad_kind(input: Format, output: Format, good: usize, bad_each: usize) {
    let settings = support::settings("eos", input, output);
    support::create(&settings);
    let keys = keyring();
    let recs = records(&keys, input, good, bad_each);
    support::publish_all(&settings, &recs);
    let report = support::run_and_verify(&settings, keys, recs.len() as u64);

    assert_eq!(report.produced, recs.len() as u64);
    assert_eq!(report.scored, good as u64, "{report:?}");
    assert_eq!(report.dead_lettered, (BadKind::ALL.len() * bad_each) as u64);
    assert!(report.exactly_once(), "{}", report.line());
    assert!(
        report.offsets_committed_to_end(),
        "{:?}",
        report.committed_vs_end
    );
    assert_eq!(
        report.dead_letter_reasons,
        expected_reasons(input, bad_each as u64)
    );
    let good_ids: HashMap<&str, ()> = recs
        .iter()
        .filter(|r| r.bad.is_none())
        .map(|r| (r.event_id.as_str(), ()))
        .collect();
    for s in &report.scores {
        assert!(
            good_ids.contains_key(s.event_id.as_str()),
            "scored an event that was not good: {}",
            s.event_id
        );
        assert!((0.0..=1.0).contains(&s.score));
        assert_eq!(s.decision == Decision::Flag, s.score >= s.threshold);
        assert_eq!(s.model_name, "fraud_mlp");
    }
}

#[test]
fn avro_input_every_record_exactly_once_and_bad_ones_dead_lettered_with_reason() {
    exactly_once_with_every_bad_kind(Format::Avro, Format::Avro, 3000, 12);
}

#[test]
fn json_input_and_json_scores_exactly_once() {
    exactly_once_with_every_bad_kind(Format::Json, Format::Json, 600, 3);
}

#[derive(serde::Deserialize)]
struct Fixture {
    /// The card of the model the fixture is for (the shipped MLP's fixture
    /// predates the key).
    #[serde(default = "shipped_card")]
    card: String,
    model_sha256: String,
    rows: Vec<FixtureRow>,
}

fn shipped_card() -> String {
    "models/fraud_mlp.card.json".into()
}

#[derive(serde::Deserialize)]
struct FixtureRow {
    event: serde_json::Map<String, serde_json::Value>,
    score: f64,
}

/// Every fixture in models/fixtures (written with Python's onnxruntime by
/// models/make_fixtures.py and models/zoo.py), one model shape each: the
/// scores through Kafka equal Python's, and each names its model.
#[test]
fn scores_equal_python_onnxruntime_on_the_fixture_rows_for_every_model_shape() {
    let dir = support::root().join("models/fixtures");
    let mut fixtures: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".expected.json"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 6, "fixtures: {fixtures:?}");
    for path in fixtures {
        let fixture: Fixture = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        scores_equal_python_onnxruntime(&fixture, Format::Json);
        // String features decode through apache-avro's values, not the
        // compiled plan: those models go through Avro (the v2 writer) too.
        let card = streamscore::VerifiedModel::load(&support::root().join(&fixture.card)).unwrap();
        if card.card.features.iter().any(|f| f.is_text()) {
            scores_equal_python_onnxruntime(&fixture, Format::Avro);
        }
    }
}

fn scores_equal_python_onnxruntime(fixture: &Fixture, input: Format) {
    let mut settings = support::settings("fixture", input, Format::Avro);
    settings.model.card = support::root().join(&fixture.card);
    let card = streamscore::VerifiedModel::load(&settings.model.card)
        .unwrap()
        .card;
    assert_eq!(
        fixture.model_sha256, card.sha256,
        "{}: the fixture is for another model: rerun its script",
        fixture.card
    );
    support::create(&settings);
    let keys = keyring();
    let v2 = streamscore::load_schema(&settings.input.avro_schemas[&2]).unwrap();
    let encoder = LineEncoder {
        format: input,
        avro: Some((&v2, 2)),
        keyring: &keys,
        key_field: "card_id",
    };
    let recs: Vec<OutRecord> = fixture
        .rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let line = serde_json::to_string(&row.event).unwrap();
            encoder.encode(i + 1, &line).unwrap()
        })
        .collect();
    support::publish_all(&settings, &recs);
    let report = support::run_and_verify(&settings, keys, recs.len() as u64);
    assert!(report.exactly_once(), "{}: {}", fixture.card, report.line());
    let expected: HashMap<String, f64> = fixture
        .rows
        .iter()
        .map(|r| (r.event["event_id"].as_str().unwrap().to_owned(), r.score))
        .collect();
    assert_eq!(report.scores.len(), expected.len(), "{}", fixture.card);
    for s in &report.scores {
        let want = expected[&s.event_id];
        assert!(
            (s.score - want).abs() < 1e-5,
            "{} {}: streamscore {} vs onnxruntime {}",
            fixture.card,
            s.event_id,
            s.score,
            want
        );
        assert_eq!(
            (s.model_name.as_str(), s.model_sha256.as_str()),
            (card.name.as_str(), card.sha256.as_str())
        );
    }
}

#[test]
fn records_over_the_size_limit_are_dead_lettered_as_too_large() {
    let mut settings = support::settings("too-large", Format::Avro, Format::Avro);
    settings.input.max_record_bytes = 2048;
    support::create(&settings);
    let keys = keyring();
    let mut recs = records(&keys, Format::Avro, 50, 0);
    for i in 0..5 {
        recs.push(OutRecord {
            key: format!("big-{i}").into_bytes(),
            value: Some(vec![0x01; 3000]),
            event_id: format!("big-{i}"),
            bad: None,
        });
    }
    support::publish_all(&settings, &recs);
    let report = support::run_and_verify(&settings, keys, recs.len() as u64);
    assert!(report.exactly_once(), "{}", report.line());
    assert_eq!(report.scored, 50);
    assert_eq!(
        report.dead_letter_reasons.get("too_large"),
        Some(&5),
        "{:?}",
        report.dead_letter_reasons
    );
}

/// Writers on schema v1 and v2 (a new optional field with a default) at once,
/// both resolved against the v2 reader schema; a writer whose record cannot be
/// resolved (amount as a string) is dead-lettered with its reason.
#[test]
fn schema_v1_and_v2_writers_are_scored_side_by_side_and_incompatible_ones_dead_lettered() {
    use apache_avro::types::Value;
    use streamscore::load_schema;
    use streamscore_tools::events::encode_avro;

    let mut settings = support::settings("evolution", Format::Avro, Format::Avro);
    let incompatible_path =
        support::root().join("tests/fixtures/card_transaction.incompatible.avsc");
    settings
        .input
        .avro_schemas
        .insert(3, incompatible_path.clone());
    assert!(
        settings
            .input
            .reader_schema
            .ends_with("card_transaction.v2.avsc")
    );
    support::create(&settings);
    let keys = keyring();
    let v2 = load_schema(&support::root().join("schemas/card_transaction.v2.avsc")).unwrap();
    let incompatible = load_schema(&incompatible_path).unwrap();
    let mut factory = EventFactory::new(keys.clone(), Format::Avro, "evo", 4);
    let mut recs = Vec::new();
    let mut seal = |id: String, plaintext: Vec<u8>| {
        let key = id.clone().into_bytes();
        recs.push(OutRecord {
            value: Some(keys.seal(&plaintext, Some(&key))),
            key,
            event_id: id,
            bad: None,
        });
    };
    for i in 0..100 {
        let id = format!("v1-{i}");
        let fields = factory.fields(&id, "card");
        seal(id, factory.encode(fields, 1));
    }
    for i in 0..100 {
        let id = format!("v2-{i}");
        let mut fields = factory.fields(&id, "card");
        fields.push((
            "merchant_country".into(),
            Value::Union(1, Box::new(Value::String("DE".into()))),
        ));
        seal(id, encode_avro(&v2, fields, 2).unwrap());
    }
    for i in 0..10 {
        let id = format!("bad-{i}");
        let fields = factory
            .fields(&id, "card")
            .into_iter()
            .map(|(k, v)| {
                if k == "amount" {
                    (k, Value::String("12.50 EUR".into()))
                } else {
                    (k, v)
                }
            })
            .collect();
        seal(id, encode_avro(&incompatible, fields, 3).unwrap());
    }
    support::publish_all(&settings, &recs);
    let report = support::run_and_verify(&settings, keys, recs.len() as u64);
    assert!(report.exactly_once(), "{}", report.line());
    assert_eq!(report.scored, 200);
    let v1_scored = report
        .scores
        .iter()
        .filter(|s| s.event_id.starts_with("v1-"))
        .count();
    assert_eq!(v1_scored, 100);
    assert_eq!(
        report.dead_letter_reasons.get("decode_failed"),
        Some(&10),
        "{:?}",
        report.dead_letter_reasons
    );
}
