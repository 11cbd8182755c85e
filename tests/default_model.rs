//! The default model (models/fraud_gbm.card.json, trained by
//! models/train_default.py on models/world.py) meets the events that the demo
//! and the bench send (streamscore_tools::events, a port of world.py): it
//! flags a believable share of them, and the events look like card
//! transactions (4-digit merchant category codes, a heavy tail of amounts).
//! Its fixture's scores are checked in inference.rs with every other model's.

use crate::support;

use std::sync::Arc;

use streamscore::{DevicePreference, ModelSession, VerifiedModel, init_runtime};
use streamscore::{FeaturePlan, FeatureRows, Fields, Format, Keyring};
use streamscore_tools::events::EventFactory;

const EVENTS: usize = 20_000;

/// `EVENTS` generated events as the processor reads them (JSON plaintext).
fn generated_events() -> Vec<serde_json::Map<String, serde_json::Value>> {
    let (keyring, _) = Keyring::generate("default-model").unwrap();
    let mut factory = EventFactory::new(Arc::new(keyring), Format::Json, "gbm", 42);
    (0..EVENTS)
        .map(|i| {
            let fields = factory.fields(&format!("e-{i}"), &format!("card-{}", i % 5000));
            serde_json::from_slice(&factory.encode(fields, 1)).unwrap()
        })
        .collect()
}

#[test]
fn the_default_model_flags_a_believable_share_of_generated_events() {
    let events = generated_events();
    let model = VerifiedModel::load(&support::root().join("models/fraud_gbm.card.json")).unwrap();
    let plan = FeaturePlan::new(&model.card);
    let mut rows = FeatureRows::default();
    for event in &events {
        plan.extract(&Fields::Json(event.clone()), &mut rows)
            .unwrap();
    }
    let runtime = init_runtime(&support::root().join(".local/onnxruntime/lib/libonnxruntime.so"))
        .expect("libonnxruntime from `make setup`");
    let mut session = ModelSession::open(&runtime, &model, DevicePreference::Cpu, 1).unwrap();
    let mut scores = Vec::new();
    session
        .score_rows(&rows, events.len(), &mut scores)
        .unwrap();
    assert_eq!(scores.len(), events.len());

    let threshold = model.card.threshold;
    let flagged = scores
        .iter()
        .filter(|s| f64::from(**s) >= threshold)
        .count();
    let rate = flagged as f64 / events.len() as f64;
    println!(
        "fraud_gbm (threshold {threshold}) flags {flagged} of {} generated events: {:.2} %",
        events.len(),
        100.0 * rate
    );
    assert!(
        (0.003..=0.05).contains(&rate),
        "FLAG rate {rate}: the generator and models/world.py have drifted apart"
    );

    let mcc = |e: &serde_json::Map<String, serde_json::Value>| e["merchant_category"].as_i64();
    assert!(
        events
            .iter()
            .all(|e| mcc(e).is_some_and(|c| (1000..=9999).contains(&c))),
        "merchant categories are 4-digit MCCs"
    );
    let mut amounts: Vec<f64> = events
        .iter()
        .map(|e| e["amount"].as_f64().unwrap())
        .collect();
    amounts.sort_by(f64::total_cmp);
    let median = amounts[amounts.len() / 2];
    let p999 = amounts[amounts.len() * 999 / 1000];
    println!("amounts: median {median:.2}, 99.9th percentile {p999:.2}");
    assert!(
        p999 > 10.0 * median,
        "amounts have a heavy tail: median {median}, p99.9 {p999}"
    );
}
