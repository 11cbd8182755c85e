//! Output topics the broker would refuse stop `streamscore run` at start,
//! with one line naming the topic, instead of a processor that aborts every
//! transaction and scores nothing; and what the producer may write at most
//! lands on a topic with Kafka's default limit.

use crate::support;

use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use streamscore::Keyring;
use streamscore::clients::producer_config;
use streamscore::{Format, Settings};
use streamscore_tools::admin::{TopicSpec, create_topics_with_configs};

fn create(settings: &Settings, topics: &[TopicSpec<'_>]) {
    support::block_on(create_topics_with_configs(settings, topics)).expect("topics can be created");
}

/// Runs `streamscore run` on `settings` and returns its log once it exits;
/// fails if it is still running after `within`.
fn run_until_refused(settings: &Settings, within: Duration) -> String {
    let _turn = support::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let config = support::process::config_file(dir.path(), "preflight", settings, "");
    let log = dir.path().join("preflight.log");
    let (_, keyring) = Keyring::generate("k").unwrap();
    let mut processor = support::process::Processor::start(&config, &keyring, log.clone());
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = processor.exited() {
            break status;
        }
        if Instant::now() > deadline {
            processor.kill9();
            panic!(
                "still running after {within:?}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "{status}: {text}");
    text
}

fn error_line(log: &str) -> &str {
    log.lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in:\n{log}"))
}

#[test]
fn a_missing_dead_letter_topic_stops_the_start_naming_it() {
    let settings = support::settings("pre-missing", Format::Avro, Format::Avro);
    create(
        &settings,
        &[
            (settings.input.topics[0].as_str(), 1, &[]),
            (settings.output.topic.as_str(), 1, &[]),
        ],
    );
    let log = run_until_refused(&settings, Duration::from_secs(60));
    assert_eq!(
        error_line(&log),
        format!(
            "error: output.dead_letter_topic \"{}\" does not exist at {}: create it before starting",
            settings.output.dead_letter_topic, settings.kafka.bootstrap_servers
        )
    );
}

#[test]
fn a_dead_letter_topic_with_a_smaller_record_limit_stops_the_start_naming_both_values() {
    let settings = support::settings("pre-small", Format::Avro, Format::Avro);
    create(
        &settings,
        &[
            (settings.input.topics[0].as_str(), 1, &[]),
            (settings.output.topic.as_str(), 1, &[]),
            (
                settings.output.dead_letter_topic.as_str(),
                1,
                &[("max.message.bytes", "1000")],
            ),
        ],
    );
    let log = run_until_refused(&settings, Duration::from_secs(60));
    assert_eq!(
        error_line(&log),
        format!(
            "error: output.dead_letter_topic \"{}\" has max.message.bytes = 1000 but kafka.max_message_bytes = 1048576: \
             raise the topic's max.message.bytes to at least 1048576 (kafka.max_message_bytes cannot go below 1061)",
            settings.output.dead_letter_topic
        )
    );
}

/// The preflight passes a default topic (max.message.bytes = 1048588) with
/// the default kafka.max_message_bytes (1048576); so the largest record the
/// transactional producer admits must land there, or a transaction holding
/// it would abort on every retry.
#[test]
fn the_largest_record_the_producer_admits_lands_on_a_default_topic() {
    let settings = support::settings("pre-largest", Format::Avro, Format::Avro);
    create(&settings, &[(settings.output.topic.as_str(), 1, &[])]);
    let config = producer_config(&settings);
    let limit: usize = config.get("message.max.bytes").unwrap().parse().unwrap();
    let producer: BaseProducer = config.create().unwrap();
    let timeout = Duration::from_secs(30);
    producer.init_transactions(timeout).unwrap();
    // librdkafka counts a record as its key, value and headers plus at most
    // 36 bytes of record overhead; no key and no headers: all value.
    let largest = vec![b'x'; limit - 36];
    let topic = settings.output.topic.as_str();
    let too_large = vec![b'x'; limit - 35];
    producer.begin_transaction().unwrap();
    match producer.send(BaseRecord::<[u8], [u8]>::to(topic).payload(&too_large[..])) {
        Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _)) => {}
        other => panic!(
            "one byte more should be refused locally: {:?}",
            other.map_err(|e| e.0)
        ),
    }
    producer
        .send(BaseRecord::<[u8], [u8]>::to(topic).payload(&largest[..]))
        .map_err(|e| e.0)
        .unwrap();
    producer
        .commit_transaction(timeout)
        .expect("the broker takes the largest record the producer admits");
    // The commit marker is written after commit returns; the record before it.
    let deadline = Instant::now() + timeout;
    loop {
        let (_, end) = producer
            .client()
            .fetch_watermarks(topic, 0, timeout)
            .unwrap();
        if end == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "end offset {end}: the record did not land"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
