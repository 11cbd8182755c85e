//! Transaction sizing under a backlog (issue 14): records queued behind a
//! slow commit are all older than the commit interval by the time their
//! transaction opens, and a transaction that closed on its oldest record's
//! age committed after one batch, so the backlog drained one batch per
//! commit and never recovered. Counts, not times: how many records a
//! transaction holds, against how many a batch holds.

use crate::support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use streamscore::telemetry::Stats;
use streamscore::{Faults, Format, Pipeline};
use streamscore_tools::events::{EventFactory, OutRecord};

use support::counts;

#[test]
fn a_backlog_behind_a_slow_commit_drains_in_transactions_larger_than_one_batch() {
    let mut settings = support::settings("group-commit", Format::Avro, Format::Avro);
    // A short interval and small batches: a transaction that closes on its
    // oldest record's age then holds exactly one batch, and one that counts
    // from its own start holds the batches that queued while the previous
    // commit ran.
    settings.transactions.commit_interval = Duration::from_millis(20);
    settings.batching.max_batch_size = 32;
    settings.batching.min_batch_size = 1;
    settings.validate().expect("test settings are valid");
    support::create(&settings);
    let keyring = support::keyring();
    let mut factory = EventFactory::new(keyring.clone(), Format::Avro, "gc", 1);
    let backlog: Vec<OutRecord> = (0..12_000).map(|_| factory.next(None)).collect();
    support::publish_all(&settings, &backlog);
    let expected = backlog.len() as u64;

    let stats = Arc::new(Stats::default());
    let faults = Arc::new(Faults::default());
    // The first commit is slow: everything read meanwhile waits behind it.
    faults.hold_next_commit();
    let pipeline = Pipeline::start_with_faults(
        &settings,
        streamscore::share(keyring),
        stats.clone(),
        faults.clone(),
    )
    .expect("pipeline starts");
    assert!(
        faults.wait_for_held_commit(Duration::from_secs(60)),
        "no commit came to hold: {}",
        counts(&stats)
    );
    std::thread::sleep(Duration::from_millis(500));
    faults.release_held_commit();
    let deadline = Instant::now() + Duration::from_secs(180);
    while stats.committed() < expected && Instant::now() < deadline && !pipeline.has_stopped() {
        std::thread::sleep(Duration::from_millis(50));
    }
    pipeline.stop();
    pipeline.join().expect("pipeline stops cleanly");
    let report = support::verify_topics(&settings);
    assert!(report.exactly_once(), "{}", report.line());
    assert_eq!(report.scored, expected, "{}", report.line());

    let (batches, rows) = stats.batches();
    let transactions = stats.transactions_committed();
    assert!(batches > 0 && transactions > 0, "{}", counts(&stats));
    let per_batch = rows as f64 / batches as f64;
    let per_transaction = expected as f64 / transactions as f64;
    assert!(
        per_transaction > 3.0 * per_batch,
        "the backlog drained in transactions of {per_transaction:.0} records, batches of {per_batch:.0} rows ({batches} batches, {transactions} transactions): {}",
        counts(&stats)
    );
}

/// A commit sends what the producer's `linger.ms` still holds (issue 14,
/// point 4): the producer lingers between commits to send fewer, larger
/// requests, and the wait for deliveries before a commit is librdkafka's
/// flush, which sends at once. A wait that only watched the in-flight count
/// ran out its whole patience with the record still lingering.
#[test]
fn the_wait_before_a_commit_sends_what_lingers() {
    let mut settings = support::settings("flush-at-commit", Format::Avro, Format::Avro);
    settings
        .kafka
        .producer
        .insert("linger.ms".into(), "20000".into());
    support::create(&settings);
    let producer: ThreadedProducer<DefaultProducerContext> =
        streamscore::clients::producer_config(&settings)
            .create()
            .expect("producer");
    let timeout = Duration::from_secs(30);
    producer
        .init_transactions(timeout)
        .expect("init_transactions");
    producer.begin_transaction().expect("begin_transaction");
    producer
        .send(BaseRecord::<[u8], [u8]>::to(&settings.output.topic).payload(b"lingers".as_slice()))
        .map_err(|(e, _)| e)
        .expect("enqueued");
    streamscore::clients::await_deliveries(&producer, Duration::from_secs(5));
    let left = producer.in_flight_count();
    producer
        .abort_transaction(timeout)
        .expect("abort_transaction");
    assert_eq!(
        left, 0,
        "{left} record(s) still lingering after the wait before a commit"
    );
}
