//! Shadow scoring (issue 15): a challenger scores the same rows as the model
//! serving; its results go to the shadow topic in the same transactions as
//! the scores, so the shadow topic holds every scored record exactly once,
//! and the comparison counts every committed row.

use crate::support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use streamscore::telemetry::Stats;
use streamscore::{Format, Pipeline};
use streamscore_tools::events::{BadKind, EventFactory, OutRecord};
use streamscore_tools::produce::LineEncoder;

use support::counts;

#[test]
fn a_challenger_scores_every_row_into_the_shadow_topic_exactly_once() {
    let mut settings = support::settings("shadow", Format::Json, Format::Avro);
    settings.model.shadow_card = Some(support::root().join("models/zoo/logreg_tensor.card.json"));
    settings.output.shadow_topic = format!("{}-shadow", settings.output.topic);
    settings.validate().expect("shadow settings are valid");
    support::create(&settings);
    let keyring = support::keyring();

    // The challenger's fixture rows (Python's scores known), generated
    // events, and bad records (dead letters have no shadow).
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            support::root().join("models/fixtures/logreg_tensor.expected.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let encoder = LineEncoder {
        format: Format::Json,
        avro: None,
        keyring: &keyring,
        key_field: "card_id",
    };
    let mut records: Vec<OutRecord> = Vec::new();
    let mut want = HashMap::new();
    for (i, row) in fixture["rows"].as_array().unwrap().iter().enumerate() {
        records.push(encoder.encode(i + 1, &row["event"].to_string()).unwrap());
        want.insert(
            row["event"]["event_id"].as_str().unwrap().to_owned(),
            row["score"].as_f64().unwrap(),
        );
    }
    let mut factory = EventFactory::new(keyring.clone(), Format::Json, "shadow", 3);
    records.extend((0..2_000).map(|_| factory.next(None)));
    records.extend((0..20).map(|_| factory.next(Some(BadKind::WrongKey))));
    support::publish_all(&settings, &records);

    let stats = Arc::new(Stats::default());
    let pipeline = Pipeline::start(&settings, streamscore::share(keyring), stats.clone())
        .expect("pipeline starts with a challenger");
    let deadline = Instant::now() + Duration::from_secs(120);
    while stats.committed() < records.len() as u64
        && Instant::now() < deadline
        && !pipeline.has_stopped()
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    pipeline.stop();
    pipeline.join().expect("pipeline stops cleanly");

    let scores = support::verify_topics(&settings);
    assert!(scores.exactly_once(), "{}", scores.line());
    assert_eq!(
        scores.scored,
        2_064,
        "{} ({})",
        scores.line(),
        counts(&stats)
    );
    assert!(scores.scores.iter().all(|s| s.model_name == "fraud_mlp"));

    // The shadow topic read as the score topic: every input record once in
    // it or in the dead letters.
    let mut shadow_view = settings.clone();
    shadow_view.output.topic = settings.output.shadow_topic.clone();
    let shadow = support::verify_topics(&shadow_view);
    assert!(shadow.exactly_once(), "shadow topic: {}", shadow.line());
    assert_eq!(shadow.scored, 2_064, "shadow topic: {}", shadow.line());
    let mut checked = 0;
    for s in &shadow.scores {
        assert_eq!(s.model_name, "logreg_tensor", "{s:?}");
        if let Some(python) = want.get(&s.event_id) {
            assert!(
                (s.score - python).abs() < 1e-5,
                "{}: {} vs Python {python}",
                s.event_id,
                s.score
            );
            checked += 1;
        }
    }
    assert_eq!(checked, want.len());
    let (agree, disagree) = stats.shadow_decisions();
    assert_eq!(agree + disagree, 2_064, "every committed row compared once");
    assert!(agree > 0, "agree {agree}, disagree {disagree}");
}
