//! The schema registry goes away under load. A record whose writer schema is
//! not cached waits for it (never dead-lettered: only the registry saying an
//! id does not exist does that), /readyz says 503 meanwhile and /healthz
//! stays 200; when it answers again everything is scored exactly once. A
//! registry silent past `input.schema_registry.max_wait_ms` stops the
//! processor without committing past the waiting record, and the restart
//! scores it.

use crate::support;
use crate::support::registry::OwnRegistry;

use std::sync::Arc;
use std::time::{Duration, Instant};

use streamscore::telemetry::{Health, Stats};
use streamscore::{Format, Keyring, Pipeline, PipelineError, Settings};
use streamscore_tools::events::{EventFactory, OutRecord};

/// Settings on a fresh registry with v1 and v2 of the input schema
/// registered; (registry, settings, v1 id, v2 id).
fn registry_settings(name: &str) -> (OwnRegistry, Settings, u32, u32) {
    let registry = OwnRegistry::start(name);
    let mut settings = support::settings(name, Format::Avro, Format::Avro);
    registry.attach(&mut settings);
    support::create(&settings);
    let subject = format!("{}-value", settings.input.topics[0]);
    let v1 = registry.register(&subject, "card_transaction.v1.avsc");
    let v2 = registry.register(&subject, "card_transaction.v2.avsc");
    (registry, settings, v1, v2)
}

fn records(
    keyring: &Arc<Keyring>,
    run: &str,
    v2: Option<u32>,
    v1: u32,
    n: usize,
) -> Vec<OutRecord> {
    let factory = EventFactory::new(keyring.clone(), Format::Avro, run, 5);
    let mut factory = match v2 {
        Some(id) => factory.writing_v2(id),
        None => factory.with_schema_id(v1),
    };
    (0..n).map(|_| factory.next(None)).collect()
}

/// A pipeline on `settings`, and the stats it counts into.
fn start(settings: &Settings, keyring: &Arc<Keyring>) -> (Pipeline, Arc<Stats>) {
    let stats = Arc::new(Stats::default());
    let pipeline = Pipeline::start(settings, streamscore::share(keyring.clone()), stats.clone())
        .expect("pipeline starts");
    (pipeline, stats)
}

/// Until a record waits on the registry and the registry is seen not to
/// answer (waiting starts as the request goes out; unreachable once it fails).
fn wait_until_held_by_the_registry(pipeline: &Pipeline) {
    wait_for(
        "a record waiting on the registry",
        Duration::from_secs(30),
        || {
            let view = pipeline.signals().view();
            view.schema_registry_waiting && view.schema_registry_reachable == Some(false)
        },
    );
}

fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_registry_outage_under_load_dead_letters_nothing_and_loses_nothing() {
    let (registry, settings, v1, v2) = registry_settings("sr-outage");
    let keyring = support::keyring();
    let (pipeline, stats) = start(&settings, &keyring);
    let health = Health::new(Duration::from_secs(10));
    health.attach(pipeline.signals());
    health
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);

    // v1 is fetched and cached while the registry answers.
    support::publish_all(&settings, &records(&keyring, "before", None, v1, 200));
    wait_for("the first 200 committed", Duration::from_secs(60), || {
        stats.committed() >= 200
    });
    assert!(health.readiness().0);

    registry.act("crash");
    // Under load: v2 records (not cached: they must wait) and v1 records
    // (cached) keep arriving while the registry is gone.
    let streamer = {
        let (settings, keyring) = (settings.clone(), keyring.clone());
        std::thread::spawn(move || {
            for round in 0..6 {
                let v2_batch = records(&keyring, &format!("out2-{round}"), Some(v2), v1, 50);
                let v1_batch = records(&keyring, &format!("out1-{round}"), None, v1, 50);
                support::publish_all(&settings, &v2_batch);
                support::publish_all(&settings, &v1_batch);
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    wait_until_held_by_the_registry(&pipeline);
    let (ready, body) = health.readiness();
    assert!(
        !ready,
        "/readyz must say 503 while the registry is down: {body}"
    );
    assert_eq!(body["schema_registry_reachable"], false, "{body}");
    std::thread::sleep(Duration::from_secs(12));
    let (alive, body) = health.liveness();
    assert!(alive, "waiting on the registry is not a wedge: {body}");
    assert_eq!(stats.dead_lettered(), 0, "{}", support::counts(&stats));
    assert!(!pipeline.has_stopped());

    registry.act("restart");
    streamer.join().unwrap();
    let total = 200 + 6 * 100;
    wait_for("every record committed", Duration::from_secs(120), || {
        stats.committed() >= total
    });
    assert!(
        health.readiness().0,
        "ready again: {}",
        health.readiness().1
    );
    pipeline.stop();
    pipeline.join().expect("pipeline stops cleanly");

    let report = support::verify_topics(&settings);
    assert!(report.exactly_once(), "{}", report.line());
    assert_eq!(report.scored, total, "{:?}", report.dead_letter_reasons);
    assert_eq!(report.dead_lettered, 0, "{:?}", report.dead_letter_reasons);
    assert!(
        report.offsets_committed_to_end(),
        "{:?}",
        report.committed_vs_end
    );
}

#[test]
fn a_registry_silent_past_max_wait_stops_the_processor_and_the_restart_scores_everything() {
    let (registry, mut settings, v1, v2) = registry_settings("sr-maxwait");
    settings.input.schema_registry.max_wait = Duration::from_secs(3);
    settings.input.schema_registry.request_timeout = Duration::from_millis(500);
    let keyring = support::keyring();
    support::publish_all(&settings, &records(&keyring, "first", None, v1, 60));
    let (pipeline, stats) = start(&settings, &keyring);
    wait_for("the v1 records committed", Duration::from_secs(60), || {
        stats.committed() >= 60
    });

    registry.act("crash");
    support::publish_all(&settings, &records(&keyring, "second", Some(v2), v1, 40));
    support::publish_all(&settings, &records(&keyring, "third", None, v1, 40));
    wait_for("the processor to stop", Duration::from_secs(60), || {
        pipeline.has_stopped()
    });
    match pipeline.join() {
        Err(PipelineError::Source(e)) => {
            let e = e.to_string();
            assert!(e.contains("max_wait_ms"), "{e}");
            assert!(e.contains(&format!("schema id {v2}")), "{e}");
        }
        Err(other) => panic!("expected the registry's wait to stop it, got: {other}"),
        Ok(()) => panic!("the processor stopped without saying why"),
    }
    assert_eq!(stats.dead_lettered(), 0, "{}", support::counts(&stats));
    // Nothing past the waiting record was committed.
    assert_eq!(support::committed_so_far(&settings), 60);

    registry.act("restart");
    // The restart commits the 80 left (the stats count this run's commits).
    let report = support::run_and_verify(&settings, keyring, 80);
    assert!(report.exactly_once(), "{}", report.line());
    assert_eq!(report.scored, 140, "{:?}", report.dead_letter_reasons);
    assert_eq!(report.dead_lettered, 0);
    assert!(
        report.offsets_committed_to_end(),
        "{:?}",
        report.committed_vs_end
    );
}

/// A stop (SIGTERM) while a record waits on the registry is a clean stop:
/// the wait ends at once, what was read before the record is committed, and
/// the record is read again at the next start.
#[test]
fn a_stop_while_a_record_waits_on_the_registry_is_clean() {
    let (registry, settings, v1, v2) = registry_settings("sr-stop");
    let keyring = support::keyring();
    support::publish_all(&settings, &records(&keyring, "first", None, v1, 30));
    let (pipeline, stats) = start(&settings, &keyring);
    wait_for("the v1 records committed", Duration::from_secs(60), || {
        stats.committed() >= 30
    });
    registry.act("crash");
    support::publish_all(&settings, &records(&keyring, "second", Some(v2), v1, 20));
    wait_until_held_by_the_registry(&pipeline);
    let asked = Instant::now();
    pipeline.stop();
    pipeline
        .join()
        .expect("a stop while waiting is a clean stop");
    assert!(
        asked.elapsed() < Duration::from_secs(30),
        "the wait ended with the stop ({:?})",
        asked.elapsed()
    );
    assert_eq!(support::committed_so_far(&settings), 30);

    registry.act("restart");
    let report = support::run_and_verify(&settings, keyring, 20);
    assert!(report.exactly_once(), "{}", report.line());
    assert_eq!(report.scored, 50, "{:?}", report.dead_letter_reasons);
}

/// A URL that is not the Confluent API (the base path forgotten) answers
/// 404 without the API's "no such schema" code (40403): that says nothing
/// about the id, so records wait (and /readyz says 503) instead of going to
/// the dead-letter topic as unknown_schema.
#[test]
fn a_404_that_is_not_the_apis_no_such_schema_dead_letters_nothing() {
    let (registry, mut settings, v1, _) = registry_settings("sr-wrongpath");
    let base = registry.url.trim_end_matches("/apis/ccompat/v7").to_owned();
    settings.input.schema_registry.urls = vec![format!("{base}/apis/wrong")];
    settings.output.schema_registry.mode = streamscore::RegistryMode::Off;
    let keyring = support::keyring();
    support::publish_all(&settings, &records(&keyring, "lost-path", None, v1, 20));
    let (pipeline, stats) = start(&settings, &keyring);
    let health = Health::new(Duration::from_secs(10));
    health.attach(pipeline.signals());
    health
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);
    wait_until_held_by_the_registry(&pipeline);
    assert!(!health.readiness().0, "{}", health.readiness().1);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(stats.dead_lettered(), 0, "{}", support::counts(&stats));
    assert_eq!(stats.committed(), 0);
    pipeline.stop();
    pipeline
        .join()
        .expect("a stop while waiting is a clean stop");

    // The right base path: every record scored, none dead-lettered.
    settings.input.schema_registry.urls = vec![registry.url.clone()];
    let report = support::run_and_verify(&settings, keyring, 20);
    assert!(report.exactly_once(), "{}", report.line());
    assert_eq!(report.scored, 20, "{:?}", report.dead_letter_reasons);
}
