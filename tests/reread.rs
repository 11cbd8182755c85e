//! Records read again after an abort are not consumed twice: an aborted
//! transaction rewinds the source to the last commit, and what it reads
//! again goes to `records_reread_total`, so `records_consumed_total` counts
//! each input record once, in this pipeline's counters as `/metrics` serves
//! them (counters are per pipeline, not process-wide: other pipelines in the
//! same test binary do not add to them).

use crate::support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use streamscore::Faults;
use streamscore::Format;
use streamscore::Pipeline;
use streamscore::telemetry::Stats;
use streamscore_tools::events::EventFactory;
use support::scrape::{value, value_with};

#[test]
fn records_read_again_after_aborts_are_counted_as_rereads_not_consumed() {
    let settings = support::settings("reread", Format::Avro, Format::Avro);
    support::create(&settings);
    let keyring = support::keyring();
    let stats = Arc::new(Stats::default());
    // Served as `run` serves it, from a runtime of its own on another thread.
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let served = stats.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let health = Arc::new(streamscore::telemetry::Health::new(Duration::from_secs(60)));
            let (addr, server) = streamscore::telemetry::serve(
                "127.0.0.1:0".parse().unwrap(),
                streamscore::telemetry::metrics::install(),
                served,
                health,
                None,
            )
            .await
            .unwrap();
            addr_tx.send(addr).unwrap();
            let _ = server.await;
        });
    });
    let addr = addr_rx.recv().unwrap().to_string();
    let faults = Arc::new(Faults::default());
    // The first three transactions with records abort: each rewinds.
    faults.abort_next_commits(3);
    let pipeline = Pipeline::start_with_faults(
        &settings,
        streamscore::share(keyring.clone()),
        stats.clone(),
        faults.clone(),
    )
    .expect("pipeline starts");
    let mut factory = EventFactory::new(keyring, Format::Avro, "reread", 5);
    let records: Vec<_> = (0..201).map(|_| factory.next(None)).collect();
    support::publish_all(&settings, &records);
    let deadline = Instant::now() + Duration::from_secs(120);
    while stats.committed() < 201 && Instant::now() < deadline && !pipeline.has_stopped() {
        std::thread::sleep(Duration::from_millis(50));
    }
    pipeline.stop();
    pipeline.join().expect("stops cleanly");
    let report = support::verify_topics(&settings);
    assert!(report.exactly_once(), "{}", report.line());
    assert_eq!(faults.commits_to_abort(), 0, "the aborts happened");

    let text = support::scrape::metrics_text(&addr);
    let consumed = value(&text, "streamscore_records_consumed_total");
    let reread = value(&text, "streamscore_records_reread_total");
    assert_eq!(
        consumed,
        Some(201.0),
        "each record consumed once ({}; re-read {reread:?})",
        support::counts(&stats)
    );
    assert!(
        reread.is_some_and(|n| n > 0.0),
        "three aborts re-read what they held: {reread:?}"
    );
    assert!(
        value_with(
            &text,
            "streamscore_transactions_total",
            "outcome",
            "aborted"
        )
        .is_some_and(|n| n >= 3.0),
        "{}",
        support::counts(&stats)
    );
    assert_eq!(stats.consumed(), 201);
}
