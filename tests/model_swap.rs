//! Hot swap (issue 15): a new card takes over mid-stream at a transaction
//! boundary, with no restart and no record lost or scored twice; a card that
//! fails to load leaves the model serving. Counts and order, not times.

use crate::support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use streamscore::telemetry::Stats;
use streamscore::{Format, ModelSwap, Pipeline, PipelineError};
use streamscore_tools::events::{EventFactory, OutRecord};

use support::counts;

/// Puts `card` (a card under models/) and its model in `dir` as card.json,
/// the path the pipeline's `model.card` names.
fn install(card: &str, dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let source = support::root().join(card);
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&source).unwrap()).unwrap();
    let file = json["file"].as_str().unwrap().to_owned();
    std::fs::copy(source.with_file_name(&file), dir.join(&file)).unwrap();
    edit(&mut json);
    std::fs::write(dir.join("card.json"), json.to_string()).unwrap();
}

fn wait_for(stats: &Stats, pipeline: &Pipeline, committed: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while stats.committed() < committed && Instant::now() < deadline && !pipeline.has_stopped() {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(stats.committed() >= committed, "{}", counts(stats));
}

#[test]
fn a_swapped_model_takes_over_under_load_exactly_once_and_a_bad_card_leaves_it_serving() {
    let dir = tempfile::tempdir().unwrap();
    install("models/fraud_mlp.card.json", dir.path(), |_| {});
    let mut settings = support::settings("swap", Format::Avro, Format::Avro);
    settings.model.card = dir.path().join("card.json");
    support::create(&settings);
    let keyring = support::keyring();
    let mut factory = EventFactory::new(keyring.clone(), Format::Avro, "swap", 1);
    let records: Vec<OutRecord> = (0..6_000).map(|_| factory.next(None)).collect();
    let stats = Arc::new(Stats::default());
    let pipeline = Pipeline::start(&settings, streamscore::share(keyring), stats.clone())
        .expect("pipeline starts");
    let swapper = pipeline.model_swapper();

    // A steady stream: 60 chunks of 100 records, published while the swap happens.
    let publisher = {
        let (settings, records) = (settings.clone(), records.clone());
        std::thread::spawn(move || {
            for chunk in records.chunks(100) {
                support::publish_all(&settings, chunk);
                std::thread::sleep(Duration::from_millis(25));
            }
        })
    };
    wait_for(&stats, &pipeline, 1_000);

    // The same card again: nothing to do.
    assert_eq!(swapper.swap().unwrap(), ModelSwap::Unchanged);
    // A card whose model is not the one it describes: refused, the MLP serves on.
    install("models/zoo/logreg_tensor.card.json", dir.path(), |c| {
        c["sha256"] = "00".repeat(32).into();
    });
    let refused = swapper.swap().unwrap_err();
    assert!(refused.to_string().contains("SHA-256"), "{refused}");
    // A card that changes the features: refused, it takes a restart.
    install("models/zoo/logreg_tensor.card.json", dir.path(), |c| {
        c["features"][0]["field"] = "amount_sum_24h".into();
    });
    let refused = swapper.swap().unwrap_err();
    assert!(
        matches!(refused, PipelineError::SwapFeatures(_)),
        "{refused}"
    );
    let before = stats.committed();
    wait_for(&stats, &pipeline, before + 500);

    install("models/zoo/logreg_tensor.card.json", dir.path(), |_| {});
    match swapper.swap().unwrap() {
        ModelSwap::Swapped { name, .. } => assert_eq!(name, "logreg_tensor"),
        other => panic!("{other:?}"),
    }
    publisher.join().unwrap();
    wait_for(&stats, &pipeline, records.len() as u64);
    pipeline.stop();
    pipeline.join().expect("pipeline stops cleanly");

    let report = support::verify_topics(&settings);
    assert!(report.exactly_once(), "{}", report.line());
    assert_eq!(report.scored, records.len() as u64, "{}", report.line());
    // Per partition, in offset order: the MLP, then from one record on the
    // logistic regression, never the MLP again.
    let mut by_partition: HashMap<i32, Vec<(i64, String)>> = HashMap::new();
    for s in &report.scores {
        by_partition
            .entry(s.source_partition)
            .or_default()
            .push((s.source_offset, s.model_name.clone()));
    }
    let mut seen = HashMap::new();
    for (partition, mut scores) in by_partition {
        scores.sort();
        let names: Vec<&str> = scores.iter().map(|(_, n)| n.as_str()).collect();
        let first_new = names
            .iter()
            .position(|n| *n == "logreg_tensor")
            .unwrap_or(names.len());
        assert!(
            names[..first_new].iter().all(|n| *n == "fraud_mlp")
                && names[first_new..].iter().all(|n| *n == "logreg_tensor"),
            "partition {partition}: the models interleave: {names:?}"
        );
        for n in names {
            *seen.entry(n.to_owned()).or_insert(0u64) += 1;
        }
    }
    assert!(
        seen.get("fraud_mlp").copied().unwrap_or(0) >= 1_500
            && seen.get("logreg_tensor").copied().unwrap_or(0) > 0,
        "both models scored: {seen:?}"
    );
    assert_eq!(stats.model_swaps(), (1, 2), "swaps, failed swaps");
}
