//! `input.topics` is a list: every topic in it, whatever its partition count,
//! and every partition added to one while the processor runs, is scored
//! exactly once (checked by the independent reader in src/verify.rs, which
//! reads every input topic).

use crate::support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use streamscore::Pipeline;
use streamscore::telemetry::Stats;
use streamscore::{Format, Settings};
use streamscore_tools::events::{BadKind, EventFactory, OutRecord};
use streamscore_tools::verify::Report;

use support::keyring;

/// `n` records, one in ten bad (every bad kind in turn).
fn records(factory: &mut EventFactory, n: usize) -> Vec<OutRecord> {
    (0..n)
        .map(|i| {
            let bad = (i % 10 == 9).then(|| BadKind::ALL[(i / 10) % BadKind::ALL.len()]);
            factory.next(bad)
        })
        .collect()
}

fn assert_exactly_once_to_the_end(report: &Report, produced: u64) {
    println!("{}", report.line());
    assert_eq!(report.produced, produced, "{}", report.line());
    assert!(report.exactly_once(), "{}", report.line());
    assert!(
        report.offsets_committed_to_end(),
        "{:?}",
        report.committed_vs_end
    );
}

/// Input partitions (topic, partition) the report saw records of.
fn partitions(report: &Report) -> BTreeSet<(String, i32)> {
    report.committed_vs_end.keys().cloned().collect()
}

#[test]
fn two_input_topics_with_different_partition_counts_are_each_scored_exactly_once() {
    let mut settings = support::settings("two-topics", Format::Avro, Format::Avro);
    let second = format!("{}.second", settings.input.topics[0]);
    settings.input.topics.push(second.clone());
    support::create_inputs(&settings, &[3, 1]);
    let keys = keyring();
    let mut factory = EventFactory::new(keys.clone(), Format::Avro, "two", 7);
    let first = records(&mut factory, 900);
    let other = records(&mut factory, 400);
    support::publish_all(&settings, &first);
    support::publish_to(&settings, &second, None, &other);

    let total = (first.len() + other.len()) as u64;
    let report = support::run_and_verify(&settings, keys, total);

    assert_exactly_once_to_the_end(&report, total);
    assert_eq!(report.dead_lettered, total / 10, "{}", report.line());
    let expected: BTreeSet<(String, i32)> = (0..3)
        .map(|p| (settings.input.topics[0].clone(), p))
        .chain([(second.clone(), 0)])
        .collect();
    assert_eq!(partitions(&report), expected);
    let scored_from_second = report
        .scores
        .iter()
        .filter(|s| s.source_topic == second)
        .count() as u64;
    assert_eq!(scored_from_second, 400 - 40, "{}", report.line());
}

/// librdkafka sees a topic's new partitions only on a metadata refresh; the
/// processor must refresh often enough that they are read within a minute or
/// so, not only after librdkafka's default five minutes.
#[test]
fn partitions_added_while_running_are_scored_exactly_once() {
    let settings: Settings = support::settings("grow", Format::Avro, Format::Avro);
    let topic = settings.input.topics[0].clone();
    support::create_inputs(&settings, &[1]);
    let keys = keyring();
    let mut factory = EventFactory::new(keys.clone(), Format::Avro, "grow", 9);
    let before = records(&mut factory, 300);
    support::publish_all(&settings, &before);

    let stats = Arc::new(Stats::default());
    let pipeline = Pipeline::start(&settings, streamscore::share(keys), stats.clone())
        .expect("pipeline starts");
    let wait = |n: u64, within: Duration| {
        let deadline = Instant::now() + within;
        while stats.committed() < n && Instant::now() < deadline && !pipeline.has_stopped() {
            std::thread::sleep(Duration::from_millis(100));
        }
        stats.committed() >= n
    };
    assert!(
        wait(before.len() as u64, Duration::from_secs(60)),
        "the first partition's records were not committed"
    );

    support::add_partitions(&settings, &topic, 3);
    let added = Instant::now();
    let mut after = Vec::new();
    for partition in [1, 2] {
        let batch = records(&mut factory, 200);
        support::publish_to(&settings, &topic, Some(partition), &batch);
        after.extend(batch);
    }
    let total = (before.len() + after.len()) as u64;
    // Bounded well under librdkafka's default refresh of 300 s, above ours.
    let picked_up = wait(total, Duration::from_secs(90));
    let took = added.elapsed();
    pipeline.stop();
    pipeline.join().expect("pipeline stops cleanly");
    assert!(
        picked_up,
        "records on the added partitions were not committed within 90 s of adding them \
         ({} of {total} committed): the consumer never refreshed its metadata",
        stats.committed()
    );
    println!("records on the added partitions committed {took:?} after adding them");

    let report = support::verify_topics(&settings);
    assert_exactly_once_to_the_end(&report, total);
    let expected: BTreeSet<(String, i32)> = (0..3).map(|p| (topic.clone(), p)).collect();
    assert_eq!(partitions(&report), expected);
}
