//! Request-level faults the real broker cannot be made to inject, on
//! librdkafka's mock cluster. The mock cannot prove exactly once (its
//! TxnOffsetCommit stores no offsets and read_committed readers see aborted
//! records), so these tests check only how the processor reacts to each class
//! of error: retriable → it goes on; abortable → it aborts, rewinds and goes
//! on; fatal → it stops with an error. Exactly once itself is proven on the
//! real broker (chaos, rebalance and broker_faults tests).

use crate::support;

use support::counts;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use streamscore::Faults;
use streamscore::Keyring;
use streamscore::clients::SinkError;
use streamscore::telemetry::Stats;
use streamscore::{Format, Settings};
use streamscore::{Pipeline, PipelineError};
use streamscore_tools::events::EventFactory;

const RECORDS: u64 = 300;

struct Mock {
    cluster: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    settings: Settings,
    keyring: Arc<Keyring>,
}

fn mock(name: &str) -> Mock {
    streamscore::telemetry::logging::init(
        streamscore::LogFormat::Human,
        "info,ort=warn,librdkafka=warn",
    );
    let cluster = MockCluster::new(1).unwrap();
    let mut settings = support::settings(name, Format::Avro, Format::Avro);
    settings.kafka.bootstrap_servers = cluster.bootstrap_servers();
    settings.kafka.request_timeout = Duration::from_millis(5_000);
    for (topic, partitions) in [
        (&settings.input.topics[0], 2),
        (&settings.output.topic, 2),
        (&settings.output.dead_letter_topic, 1),
    ] {
        cluster.create_topic(topic, partitions, 1).unwrap();
    }
    let keyring = Arc::new(Keyring::generate("mock-key").unwrap().0);
    let mut factory = EventFactory::new(keyring.clone(), Format::Avro, "mock", 5);
    let records: Vec<_> = (0..RECORDS).map(|_| factory.next(None)).collect();
    support::publish_all(&settings, &records);
    Mock {
        cluster,
        settings,
        keyring,
    }
}

/// Runs until `done(stats)` or the pipeline stops on its own; returns the stats and the join result.
fn run_until(m: &Mock, done: impl Fn(&Stats) -> bool) -> (Arc<Stats>, Result<(), PipelineError>) {
    run_with_faults(m, |_, _| {}, done)
}

#[test]
/// librdkafka retries these internally; the mock consumes one error per
/// request (the fenced test below shows EndTxn injection takes effect), so
/// what this checks is that the pipeline neither aborts nor stops on them.
fn retriable_end_txn_errors_neither_abort_nor_stop_the_pipeline() {
    let m = mock("mock-retriable");
    use RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS as LOADING;
    m.cluster
        .request_errors(RDKafkaApiKey::EndTxn, &[LOADING, LOADING, LOADING]);
    let (stats, joined) = run_until(&m, |s| s.scored() >= RECORDS);
    joined.expect("the pipeline keeps running through retriable errors");
    assert!(stats.scored() >= RECORDS);
    assert_eq!(stats.transactions_aborted(), 0);
}

#[test]
fn failed_produce_aborts_rewinds_and_goes_on() {
    let m = mock("mock-abortable");
    use RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE as TOO_LARGE;
    // Produce requests fail non-retriably: the transaction must be aborted.
    m.cluster
        .request_errors(RDKafkaApiKey::Produce, &[TOO_LARGE, TOO_LARGE]);
    let (stats, joined) = run_until(&m, |s| {
        s.transactions_aborted() >= 1 && s.scored() >= RECORDS
    });
    joined.expect("an abortable error does not stop the pipeline");
    assert!(
        stats.transactions_aborted() >= 1,
        "no abort: {}",
        counts(&stats)
    );
    assert!(
        stats.scored() >= RECORDS,
        "records were not read again and committed after the rewind: {}",
        counts(&stats)
    );
}

#[test]
fn fenced_producer_stops_the_pipeline_with_a_fatal_error() {
    let m = mock("mock-fatal");
    use RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED as FENCED;
    m.cluster.request_errors(RDKafkaApiKey::EndTxn, &[FENCED]);
    let (stats, joined) = run_until(&m, |_| false);
    match joined {
        Err(PipelineError::Sink(SinkError::Fatal(e))) => {
            let text = e.to_string();
            assert!(text.to_lowercase().contains("fenced"), "{text}");
        }
        other => panic!(
            "expected a fatal sink error, got {other:?} ({})",
            counts(&stats)
        ),
    }
    assert_eq!(stats.scored(), 0, "nothing may count as committed");
}

#[test]
fn rejected_offset_commit_aborts_rewinds_and_goes_on() {
    let m = mock("mock-offsets");
    use RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID as UNKNOWN_MEMBER;
    // The group no longer knows this member: its offsets must not be
    // committed, so the transaction is aborted and the records read again.
    m.cluster
        .request_errors(RDKafkaApiKey::TxnOffsetCommit, &[UNKNOWN_MEMBER]);
    let (stats, joined) = run_until(&m, |s| {
        s.transactions_aborted() >= 1 && s.scored() >= RECORDS
    });
    joined.expect("a rejected offset commit does not stop the pipeline");
    assert!(
        stats.transactions_aborted() >= 1,
        "no abort: {}",
        counts(&stats)
    );
    assert!(stats.scored() >= RECORDS, "{}", counts(&stats));
}

/// Runs with faults a test can arm, until `done(stats)` or the pipeline stops.
fn run_with_faults(
    m: &Mock,
    arm: impl Fn(&Stats, &Faults),
    done: impl Fn(&Stats) -> bool,
) -> (Arc<Stats>, Result<(), PipelineError>) {
    let stats = Arc::new(Stats::default());
    let faults = Arc::new(Faults::default());
    let pipeline = Pipeline::start_with_faults(
        &m.settings,
        streamscore::share(m.keyring.clone()),
        stats.clone(),
        faults.clone(),
    )
    .expect("pipeline starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(&stats) && !pipeline.has_stopped() && Instant::now() < deadline {
        arm(&stats, &faults);
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let anything that would be scored twice show up in the counts.
    std::thread::sleep(Duration::from_secs(2));
    pipeline.stop();
    (stats, pipeline.join())
}

#[test]
/// The mock stores no transactional offsets, so the group's committed
/// offsets are unknown to anyone asking the coordinator: exactly the case
/// where a rewind that asks must not fall back to the beginning (that
/// replays what was committed). The rewind uses what this instance itself
/// committed, so after an abort past the first commit every record is
/// committed once.
fn a_rewind_never_goes_back_past_what_was_committed() {
    let m = mock("mock-rewind");
    let armed = std::sync::atomic::AtomicBool::new(false);
    let mut factory = EventFactory::new(m.keyring.clone(), Format::Avro, "mock-more", 6);
    let more: Vec<_> = (0..RECORDS).map(|_| factory.next(None)).collect();
    let (stats, joined) = run_with_faults(
        &m,
        |s, f| {
            // After the first commit: the next transaction, with newer
            // records in it, aborts.
            if s.committed() > 0 && !armed.swap(true, Ordering::SeqCst) {
                f.abort_next_commits(1);
                support::publish_all(&m.settings, &more);
            }
        },
        |s| s.committed() >= 2 * RECORDS && s.transactions_aborted() >= 1,
    );
    joined.expect("an abort does not stop the pipeline");
    assert!(stats.transactions_aborted() >= 1, "{}", counts(&stats));
    assert_eq!(
        stats.committed(),
        2 * RECORDS,
        "records committed before the abort were read and committed again: {}",
        counts(&stats)
    );
}

#[test]
/// A heartbeat answered UNKNOWN_MEMBER_ID means the group went on without
/// this member: its assignment is lost, and what it read must be aborted,
/// not committed with an empty member id and generation -1 (which the
/// coordinator would accept without fencing).
fn a_lost_assignment_aborts_instead_of_committing() {
    let mut m = mock("mock-lost");
    // One long transaction holds every record when the heartbeat fails.
    m.settings.transactions.commit_interval = Duration::from_millis(8_000);
    use RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID as UNKNOWN_MEMBER;
    let injected = std::sync::atomic::AtomicBool::new(false);
    let (stats, joined) = run_with_faults(
        &m,
        |s, _| {
            // Once every record is read into the open transaction, the next
            // heartbeat finds the member gone.
            if s.consumed() >= RECORDS && !injected.swap(true, Ordering::SeqCst) {
                m.cluster
                    .request_errors(RDKafkaApiKey::Heartbeat, &[UNKNOWN_MEMBER]);
            }
        },
        |s| s.transactions_aborted() >= 1 && s.committed() >= RECORDS,
    );
    joined.expect("a lost assignment does not stop the pipeline");
    assert!(
        stats.transactions_aborted() >= 1,
        "the transaction of the lost partitions was committed: {}",
        counts(&stats)
    );
    assert_eq!(stats.committed(), RECORDS, "{}", counts(&stats));
}

#[test]
/// A produce error that no retry can cure (here the principal may not
/// write the topic) must end in a fatal error naming the topic, not in an
/// endless abort-and-rewind loop.
fn a_topic_that_refuses_every_write_stops_the_pipeline_naming_it() {
    let m = mock("mock-unwritable");
    use RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED as FORBIDDEN;
    m.cluster
        .request_errors(RDKafkaApiKey::Produce, &[FORBIDDEN; 200]);
    let (stats, joined) = run_until(&m, |_| false);
    match joined {
        Err(PipelineError::Sink(e @ SinkError::WriteUnauthorized { .. })) => {
            let text = e.to_string();
            assert!(
                text.contains(&m.settings.output.topic)
                    || text.contains(&m.settings.output.dead_letter_topic),
                "{text}"
            );
            assert!(text.contains("may not Write topic"), "{text}");
        }
        other => panic!(
            "expected the sink to give up naming the topic, got {other:?} ({})",
            counts(&stats)
        ),
    }
    assert_eq!(stats.committed(), 0, "{}", counts(&stats));
}

#[test]
/// librdkafka's send_offsets_to_transaction can wait past its timeout for
/// ever once the group coordinator has gone away (librdkafka #5456, #5511:
/// a coordinator request is never timed out). On the three-node cluster
/// that was a silent minute, the sink parked in the call, ended only by the
/// liveness probes. With the group coordinator down, the sink must give the
/// call up after its timeout and settle the transaction with a new
/// producer, or stop with an error: never sit in it.
fn a_group_coordinator_that_goes_away_does_not_hold_the_sink() {
    use rdkafka::mocking::MockCoordinator;
    streamscore::telemetry::logging::init(
        streamscore::LogFormat::Human,
        "info,ort=warn,librdkafka=warn",
    );
    // Broker 1 leads every partition and coordinates the transaction;
    // broker 2 coordinates the group, and goes down.
    let cluster = MockCluster::new(2).unwrap();
    let mut settings = support::settings("mock-coord", Format::Avro, Format::Avro);
    settings.kafka.bootstrap_servers = cluster.bootstrap_servers();
    settings.kafka.request_timeout = Duration::from_millis(2_000);
    settings.kafka.session_timeout = Duration::from_millis(45_000);
    for (topic, partitions) in [
        (&settings.input.topics[0], 2),
        (&settings.output.topic, 2),
        (&settings.output.dead_letter_topic, 1),
    ] {
        cluster.create_topic(topic, partitions, 1).unwrap();
        for p in 0..partitions {
            cluster.partition_leader(topic, p, Some(1)).unwrap();
        }
    }
    let group = MockCoordinator::Group(settings.kafka.group_id.clone());
    cluster.coordinator(group, 2).unwrap();
    let txn = MockCoordinator::Transaction(settings.kafka.transactional_id.clone());
    cluster.coordinator(txn, 1).unwrap();
    let keyring = Arc::new(Keyring::generate("mock-key").unwrap().0);
    let mut factory = EventFactory::new(keyring.clone(), Format::Avro, "coord", 5);
    let first: Vec<_> = (0..50).map(|_| factory.next(None)).collect();
    support::publish_all(&settings, &first);
    let stats = Arc::new(Stats::default());
    let pipeline =
        Pipeline::start(&settings, streamscore::share(keyring), stats.clone()).expect("starts");
    let waited = Instant::now();
    while stats.committed() < 50 && waited.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(stats.committed(), 50, "{}", counts(&stats));
    cluster.broker_down(2).unwrap();
    let more: Vec<_> = (0..50).map(|_| factory.next(None)).collect();
    support::publish_all(&settings, &more);
    let down = Instant::now();
    while stats.producers_replaced() == 0
        && !pipeline.has_stopped()
        && down.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let settled = stats.producers_replaced() > 0 || pipeline.has_stopped();
    let took = down.elapsed();
    cluster.broker_up(2).unwrap();
    if !settled {
        // Its sink may never come back out of librdkafka: leave its threads.
        std::mem::forget(pipeline);
        panic!(
            "the sink still waits on the gone group coordinator after {took:?} (request timeout 2 s): {}",
            counts(&stats)
        );
    }
    // Given up and replaced (not stopped: one call given up is not two):
    // once the coordinator is back, every record commits once.
    let back = Instant::now();
    while stats.committed() < 100
        && !pipeline.has_stopped()
        && back.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !pipeline.has_stopped(),
        "stopped after {took:?}: {:?}",
        pipeline.join()
    );
    assert!(stats.producers_replaced() >= 1, "{}", counts(&stats));
    assert_eq!(stats.committed(), 100, "{}", counts(&stats));
    pipeline.stop();
    pipeline.join().expect("a clean stop");
}
