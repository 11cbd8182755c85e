//! Issue 11, "never wedge", on the real broker: one record, one abort at the
//! wrong moment, a broker that stops answering or a failed inference must
//! end in progress or a clear fatal exit, never in a loop that holds every
//! partition while the stages keep turning. Each test checks exactly once
//! with the independent reader at the end.

use crate::support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use streamscore::Faults;
use streamscore::Keyring;
use streamscore::telemetry::Health;
use streamscore::telemetry::Stats;
use streamscore::{Format, Settings};
use streamscore::{Pipeline, PipelineError};
use streamscore_tools::events::EventFactory;
use streamscore_tools::publish;

struct Running {
    pipeline: Pipeline,
    stats: Arc<Stats>,
    faults: Arc<Faults>,
}

fn start(settings: &Settings, keyring: &Arc<Keyring>) -> Running {
    // Shown for a failing test only (the harness captures it otherwise).
    streamscore::telemetry::logging::init(
        streamscore::LogFormat::Human,
        "info,ort=warn,librdkafka=warn",
    );
    let stats = Arc::new(Stats::default());
    let faults = Arc::new(Faults::default());
    let pipeline = Pipeline::start_with_faults(
        settings,
        streamscore::share(keyring.clone()),
        stats.clone(),
        faults.clone(),
    )
    .expect("pipeline starts");
    Running {
        pipeline,
        stats,
        faults,
    }
}

/// Stops cleanly and checks every published record is in an output topic once.
fn stop_and_verify(run: Running, settings: &Settings, published: u64) {
    run.pipeline.stop();
    run.pipeline.join().expect("stops cleanly");
    let report = support::verify_topics(settings);
    assert!(report.exactly_once(), "{}", report.line());
    assert_eq!(report.produced, published);
}

/// Waits (bounded) until `done`; false if it never came.
fn wait(timeout: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

use support::{counts, keyring};

fn publish_good(settings: &Settings, factory: &mut EventFactory, n: usize) {
    let records: Vec<_> = (0..n).map(|_| factory.next(None)).collect();
    support::publish_all(settings, &records);
}

/// A record whose dead letter (value + reason headers) is over the
/// producer's limit: within a few hundred bytes of a default topic's
/// max.message.bytes (1 048 588), as a producer may legitimately send it.
const POISON_BYTES: usize = 1_048_400;

#[test]
fn a_dead_letter_too_large_for_its_topic_is_written_without_its_value_and_commits_go_on() {
    let settings = support::settings("poison", Format::Avro, Format::Avro);
    support::create(&settings);
    let keyring = keyring();
    let mut factory = EventFactory::new(keyring.clone(), Format::Avro, "poison", 3);
    publish_good(&settings, &mut factory, 100);
    let big: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &settings.kafka.bootstrap_servers)
        .set("message.max.bytes", "1048588")
        .create()
        .unwrap();
    let garbage = vec![0xA5u8; POISON_BYTES];
    big.send(
        BaseRecord::to(&settings.input.topics[0])
            .partition(0)
            .key("poison")
            .payload(&garbage),
    )
    .map_err(|(e, _)| e)
    .unwrap();
    big.flush(Duration::from_secs(30)).unwrap();
    publish_good(&settings, &mut factory, 100);

    let report = support::run_and_verify(&settings, keyring, 201);
    assert!(report.exactly_once(), "{}", report.line());
    assert!(
        report.offsets_committed_to_end(),
        "{:?}",
        report.committed_vs_end
    );
    assert_eq!(report.dead_lettered, 1, "{}", report.line());

    // The dead letter says what was left out and where the original sits.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.kafka.bootstrap_servers)
        .set("group.id", support::unique("dlq-reader"))
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer
        .subscribe(&[&settings.output.dead_letter_topic])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let letter = loop {
        assert!(Instant::now() < deadline, "no dead letter read back");
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            break m.detach();
        }
    };
    let headers: std::collections::HashMap<String, String> = letter
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(letter.payload(), None, "the value must be left out");
    assert_eq!(letter.key(), Some(&b"poison"[..]));
    assert_eq!(
        headers.get("streamscore.value.omitted").map(String::as_str),
        Some(POISON_BYTES.to_string().as_str()),
        "{headers:?}"
    );
    assert_eq!(
        headers
            .get("streamscore.source.partition")
            .map(String::as_str),
        Some("0"),
        "{headers:?}"
    );
    assert!(
        headers
            .get("streamscore.source.offset")
            .is_some_and(|o| o.bytes().all(|b| b.is_ascii_digit()) && o.parse::<i64>().is_ok()),
        "{headers:?}"
    );
    assert!(headers.contains_key("streamscore.reason"), "{headers:?}");
}

#[test]
fn liveness_fails_while_records_wait_and_nothing_commits_then_recovers() {
    let mut settings = support::settings("progress", Format::Avro, Format::Avro);
    settings.telemetry.stall_timeout = Duration::from_millis(10_000);
    support::create(&settings);
    let keyring = keyring();
    let health = Health::new(settings.telemetry.stall_timeout);
    let run = start(&settings, &keyring);
    health.attach(run.pipeline.signals());
    let stream = support::stream(&settings, keyring.clone(), 3_000, 200, 0);
    assert!(
        wait(Duration::from_secs(60), || run.stats.committed() > 100),
        "nothing committed at first: {}",
        counts(&run.stats)
    );
    // Every commit from now on fails; the stages go on turning.
    run.faults.abort_next_commits(u32::MAX);
    let stalled = wait(Duration::from_secs(40), || !health.liveness().0);
    let (alive, body) = health.liveness();
    assert!(
        stalled && !alive,
        "/healthz stayed alive while nothing committed: {body}"
    );
    assert!(
        body["consecutive_aborts"].as_u64().unwrap_or(0) >= 2,
        "{body}"
    );
    assert!(
        body["progress_stall_seconds"].as_f64().unwrap_or(0.0) > 10.0,
        "{body}"
    );
    assert!(
        body["source_idle_seconds"].as_f64().unwrap_or(99.0) < 5.0,
        "the stages still turn: {body}"
    );
    run.faults.abort_next_commits(0);
    assert!(
        wait(Duration::from_secs(30), || health.liveness().0),
        "{}",
        health.liveness().1
    );
    let published = stream.join().unwrap();
    assert!(wait(Duration::from_secs(60), || run.stats.committed()
        >= published));
    stop_and_verify(run, &settings, published);
}

#[test]
fn an_abort_while_a_new_partition_waits_for_its_offsets_rewinds_only_what_was_read() {
    let mut settings = support::settings("rewind", Format::Avro, Format::Avro);
    // New partitions are seen on a metadata refresh.
    settings
        .kafka
        .consumer
        .insert("topic.metadata.refresh.interval.ms".into(), "1000".into());
    let input = settings.input.topics[0].clone();
    support::create(&settings);
    let keyring = keyring();
    let run = start(&settings, &keyring);
    let stream = support::stream(&settings, keyring.clone(), 4_000, 400, 0);
    assert!(wait(Duration::from_secs(60), || run.stats.committed() > 200));

    // The input grows a partition whose committed offset another producer's
    // open transaction holds back (UNSTABLE_OFFSET_COMMIT): when assigned,
    // it waits for its offset for as long as that transaction stays open.
    support::add_partitions(&settings, &input, 4);
    let holder = hold_offsets(&settings, &input, 3);
    assert!(
        wait(Duration::from_secs(60), || assigned(&run.pipeline) == 4),
        "the new partition was never assigned"
    );
    // An abort now must not seek the waiting partition.
    run.faults.abort_next_commits(1);
    assert!(
        wait(Duration::from_secs(30), || run.faults.commits_to_abort()
            == 0),
        "the armed abort never fired"
    );
    let before = run.stats.committed();
    assert!(
        wait(Duration::from_secs(30), || run.stats.committed() > before
            || run.pipeline.has_stopped()),
        "no progress after the abort"
    );
    assert!(
        !run.pipeline.has_stopped(),
        "the pipeline stopped after the abort: {:?}",
        run.pipeline.join()
    );
    holder.abort_transaction(Duration::from_secs(30)).unwrap();
    // Records for the new partition too, once its offset is free.
    let mut factory = EventFactory::new(keyring.clone(), Format::Avro, "rewind-new", 9);
    let producer = publish::publisher(&settings).unwrap();
    for _ in 0..50 {
        let r = factory.next(None);
        let mut rec: BaseRecord<'_, [u8], [u8]> =
            BaseRecord::to(&input).partition(3).key(r.key.as_slice());
        if let Some(v) = r.value.as_deref() {
            rec = rec.payload(v);
        }
        producer.send(rec).map_err(|(e, _)| e).unwrap();
    }
    publish::flush(&producer).unwrap();
    let published = stream.join().unwrap() + 50;
    assert!(
        wait(Duration::from_secs(90), || run.stats.committed()
            >= published),
        "{}",
        counts(&run.stats)
    );
    run.pipeline.stop();
    run.pipeline.join().expect("stops cleanly");
    let report = support::verify_topics(&settings);
    assert!(report.exactly_once(), "{}", report.line());
    assert!(
        report.offsets_committed_to_end(),
        "{:?}",
        report.committed_vs_end
    );
}

fn assigned(pipeline: &Pipeline) -> i64 {
    pipeline.signals().view().assigned_partitions
}

/// A transactional producer that sends offsets for `partition` to the
/// group and leaves its transaction open.
fn hold_offsets(settings: &Settings, topic: &str, partition: i32) -> BaseProducer {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &settings.kafka.bootstrap_servers)
        .set("transactional.id", support::unique("holder"))
        .set("transaction.timeout.ms", "60000")
        .create()
        .unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();
    producer.begin_transaction().unwrap();
    let member: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.kafka.bootstrap_servers)
        .set("group.id", &settings.kafka.group_id)
        .create()
        .unwrap();
    let metadata = member.group_metadata().unwrap();
    let mut offsets = rdkafka::TopicPartitionList::new();
    offsets
        .add_partition_offset(topic, partition, rdkafka::Offset::Offset(0))
        .unwrap();
    producer
        .send_offsets_to_transaction(&offsets, &metadata, Duration::from_secs(30))
        .unwrap();
    producer
}

#[test]
fn an_inference_failure_aborts_what_is_open_and_stops_with_the_error() {
    let mut settings = support::settings("infer-fail", Format::Avro, Format::Avro);
    // Long transactions: one is open with records when inference fails.
    settings.transactions.commit_interval = Duration::from_millis(5_000);
    support::create(&settings);
    let keyring = keyring();
    let run = start(&settings, &keyring);
    // Still streaming when the first long transaction has committed.
    let stream = support::stream(&settings, keyring.clone(), 6_000, 400, 0);
    assert!(wait(Duration::from_secs(60), || run.stats.committed() > 100));
    let committed_before = run.stats.transactions_committed();
    run.faults.fail_next_inference();
    assert!(
        wait(Duration::from_secs(30), || run.pipeline.has_stopped()),
        "the pipeline went on after an inference failure"
    );
    let committed_after = run.stats.transactions_committed();
    let aborted = run.stats.transactions_aborted();
    run.pipeline.stop();
    match run.pipeline.join() {
        Err(PipelineError::Inference(e)) => {
            assert!(e.to_string().contains("inference"), "{e}")
        }
        other => panic!("expected the inference error, got {other:?}"),
    }
    // The alert StreamscoreInferenceErrors reads this counter.
    assert_eq!(
        run.stats.inference_errors(),
        1,
        "the failed inference is counted"
    );
    assert!(
        committed_after <= committed_before + 1 && aborted == 1,
        "the open transaction must be aborted, not committed: committed {committed_before} → {committed_after}, aborted {aborted}"
    );
    // A restart takes over from the last commit: nothing lost, nothing twice.
    let published = stream.join().unwrap();
    let rerun = start(&settings, &keyring);
    let done = support::committed_so_far(&settings);
    assert!(
        wait(Duration::from_secs(90), || {
            support::committed_so_far(&settings) as u64 >= published
        }),
        "restart did not finish ({done} committed before it)"
    );
    rerun.pipeline.stop();
    rerun.pipeline.join().expect("stops cleanly");
    let report = support::verify_topics(&settings);
    assert!(report.exactly_once(), "{}", report.line());
}

#[test]
fn a_commit_that_times_out_replaces_the_producer_and_goes_on() {
    let _turn = support::exclusive();
    let broker = support::broker::OwnBroker::start_pausable("commit-timeout");
    let mut settings = broker.settings("commit-timeout");
    settings.kafka.request_timeout = Duration::from_millis(2_000);
    settings.kafka.transaction_timeout = Duration::from_millis(20_000);
    settings.kafka.session_timeout = Duration::from_millis(30_000);
    let keyring = keyring();
    let run = start(&settings, &keyring);
    let stream = support::stream(&settings, keyring.clone(), 6_000, 300, 0);
    assert!(wait(Duration::from_secs(60), || run.stats.committed() > 300));
    // Past the sink's whole retry budget (a commit is tried 4 times, each
    // for kafka.request_timeout_ms: 8 s), so the commit in flight cannot
    // land after all on the last try once the broker resumes: it must time
    // out and the producer be replaced. (Paused for exactly 8 s, the last
    // try sometimes outlived the pause, and nothing was tested.) Below the
    // transaction timeout (20 s), so the coordinator does not abort it first.
    // The hang starts while a commit waits at its start, so the commit call
    // meets it: a hang that begins during the delivery wait before the
    // commit is outlasted by the deliveries, and nothing times out.
    run.faults.hold_next_commit();
    assert!(
        run.faults.wait_for_held_commit(Duration::from_secs(30)),
        "no commit came to hold: {}",
        counts(&run.stats)
    );
    broker.act("pause");
    run.faults.release_held_commit();
    std::thread::sleep(Duration::from_secs(14));
    broker.act("resume");
    let published = stream.join().unwrap();
    let finished = wait(Duration::from_secs(120), || {
        run.stats.committed() >= published || run.pipeline.has_stopped()
    });
    assert!(
        !run.pipeline.has_stopped(),
        "the pipeline stopped after the broker came back: {:?}",
        run.pipeline.join()
    );
    assert!(
        finished,
        "no progress after the broker came back: {}",
        counts(&run.stats)
    );
    assert!(
        run.stats.producers_replaced() >= 1,
        "no transactional call timed out, so nothing was tested: {}",
        counts(&run.stats)
    );
    stop_and_verify(run, &settings, published);
}

/// A run through an armed fault, and the aborts counted before it was armed.
struct Through {
    run: Running,
    settings: Settings,
    published: u64,
    aborted_before: u64,
}

/// Streams 3,000 records, arms a fault once 200 have committed, waits until
/// it fired and every record has committed, with the pipeline still running.
fn stream_through(name: &str, arm: impl Fn(&Faults), armed: impl Fn(&Faults) -> bool) -> Through {
    let settings = support::settings(name, Format::Avro, Format::Avro);
    support::create(&settings);
    let keyring = keyring();
    let run = start(&settings, &keyring);
    let stream = support::stream(&settings, keyring.clone(), 3_000, 400, 0);
    assert!(wait(Duration::from_secs(60), || run.stats.committed() > 200));
    let aborted_before = run.stats.transactions_aborted();
    arm(&run.faults);
    assert!(
        wait(Duration::from_secs(30), || !armed(&run.faults)),
        "the armed fault never fired"
    );
    let published = stream.join().unwrap();
    assert!(
        wait(
            Duration::from_secs(90),
            || support::committed_so_far(&settings) as u64 >= published
                || run.pipeline.has_stopped()
        ),
        "{}",
        counts(&run.stats)
    );
    assert!(
        !run.pipeline.has_stopped(),
        "the pipeline stopped: {:?}",
        run.pipeline.join()
    );
    Through {
        run,
        settings,
        published,
        aborted_before,
    }
}

/// A commit whose answer never comes may have landed. The new producer
/// settles it; the sink must then find out what happened, because
/// rewinding to the last answered commit would score its records again.
#[test]
fn a_commit_whose_answer_is_lost_is_settled_without_scoring_twice() {
    let t = stream_through(
        "lost-reply",
        Faults::lose_next_commit_reply,
        Faults::commit_reply_to_lose,
    );
    stop_and_verify(t.run, &t.settings, t.published);
}

/// The same lost answer in a cluster that is failing over: a group
/// coordinator asked about it answered with the commit before, and the sink
/// rewound and scored a transaction that had landed a second time (the
/// two-nodes-down run of issue 19). The transaction's own output says.
#[test]
fn a_lost_commit_answer_is_settled_by_the_output_even_when_the_group_answers_stale() {
    let t = stream_through(
        "stale-group",
        |f| {
            f.answer_stale_from_group_next();
            f.lose_next_commit_reply();
        },
        Faults::commit_reply_to_lose,
    );
    stop_and_verify(t.run, &t.settings, t.published);
}

/// A lost answer of a commit that did not land: the output shows its
/// records aborted, and they are read again, none lost.
#[test]
fn a_lost_answer_of_a_commit_that_aborted_rewinds_and_loses_nothing() {
    let t = stream_through(
        "silent-abort",
        Faults::abort_next_commit_and_lose_its_answer,
        Faults::silent_abort_armed,
    );
    assert!(
        t.run.stats.transactions_aborted() > t.aborted_before,
        "the aborted commit was taken for one that landed: {}",
        counts(&t.run.stats)
    );
    stop_and_verify(t.run, &t.settings, t.published);
}
