//! Downstream teams: the Python example consumer in docs/examples, written
//! from docs/wire-format.md alone, reads the score topic of a real run
//! (read_committed), decodes Avro (schema id 101) and JSON output, and prints
//! every score exactly once, with the event ids, scores and sources the
//! processor wrote.

use crate::support;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;

use streamscore::Faults;
use streamscore::Format;
use streamscore_tools::events::{BadKind, EventFactory};

fn consumer_prints_every_score_once(output: Format, format_arg: &str) {
    let settings = support::settings(
        &format!("example-consumer-{format_arg}"),
        Format::Avro,
        output,
    );
    support::create(&settings);
    let keyring = support::keyring();
    let mut factory = EventFactory::new(keyring.clone(), Format::Avro, "ex", 4);
    // Dead letters go to their own topic: the consumer must not see them.
    let mut records: Vec<_> = (0..30).map(|_| factory.next(None)).collect();
    records.extend(BadKind::ALL.iter().map(|k| factory.next(Some(*k))));
    support::publish_all(&settings, &records);
    // Two aborted transactions leave their scores in the topic, invisible
    // only to a read_committed reader: the consumer must not print them.
    let faults = Arc::new(Faults::default());
    faults.abort_next_commits(2);
    let report = support::run_with_faults_and_verify(
        &settings,
        keyring,
        records.len() as u64,
        faults.clone(),
    );
    assert!(report.exactly_once(), "{}", report.line());
    assert_eq!(report.scored, 30, "{:?}", report.dead_letter_reasons);
    assert_eq!(faults.commits_to_abort(), 0, "both aborts happened");
    let uncommitted = read_topic(&settings, &settings.output.topic, "read_uncommitted");
    assert!(
        uncommitted.iter().filter(|r| r.payload.is_some()).count() > 30,
        "the aborted scores are in the topic for a reader that would see them \
         ({} records read uncommitted)",
        uncommitted.len()
    );
    if output == Format::Json {
        output_timestamps_are_when_the_score_was_produced(&settings);
    }

    let out = Command::new(support::python(
        "the example consumer needs confluent-kafka and fastavro",
    ))
    .arg(support::root().join("docs/examples/consumer.py"))
    .args([
        "--bootstrap",
        &settings.kafka.bootstrap_servers,
        "--topic",
        &settings.output.topic,
        "--group",
        &format!("{}-example", settings.kafka.group_id),
        "--format",
        format_arg,
        "--idle-timeout",
        "10",
    ])
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    let mut printed: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for line in stdout.lines() {
        let score: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        let id = score["event_id"].as_str().expect("event_id").to_owned();
        printed.entry(id).or_default().push(score);
    }
    let good: Vec<&str> = records
        .iter()
        .filter(|r| r.bad.is_none())
        .map(|r| r.event_id.as_str())
        .collect();
    assert_eq!(
        printed.keys().map(String::as_str).collect::<Vec<_>>(),
        {
            let mut g = good.clone();
            g.sort_unstable();
            g
        },
        "every good event, and nothing else"
    );
    for written in &report.scores {
        let seen = &printed[&written.event_id];
        assert_eq!(
            seen.len(),
            1,
            "{} printed {} times",
            written.event_id,
            seen.len()
        );
        let s = &seen[0];
        assert!(same(&s["score"], written.score), "{s} vs {}", written.score);
        assert!(same(&s["threshold"], written.threshold), "{s}");
        let decision = serde_json::to_value(written.decision).unwrap();
        assert_eq!(s["decision"], decision);
        assert_eq!(
            s["source_topic"].as_str(),
            Some(written.source_topic.as_str())
        );
        assert_eq!(
            s["source_partition"].as_i64(),
            Some(i64::from(written.source_partition))
        );
        assert_eq!(s["source_offset"].as_i64(), Some(written.source_offset));
        assert_eq!(s["event_time"].as_i64(), Some(written.event_time));
        assert_eq!(s["scored_at"].as_i64(), Some(written.scored_at));
        assert_eq!(s["record_key"].as_str(), written.record_key.as_deref());
        assert_eq!(
            s["model_sha256"].as_str(),
            Some(written.model_sha256.as_str())
        );
    }
}

/// The same double: Python prints the shortest text that reads back exactly,
/// and serde_json's default float parser may land one ulp away from it.
fn same(printed: &serde_json::Value, written: f64) -> bool {
    printed
        .as_f64()
        .is_some_and(|p| (p - written).abs() <= f64::EPSILON * written.abs())
}

#[test]
fn example_consumer_prints_every_avro_score_once() {
    consumer_prints_every_score_once(Format::Avro, "avro");
}

#[test]
fn example_consumer_prints_every_json_score_once() {
    consumer_prints_every_score_once(Format::Json, "json");
}

/// One record as read back: its header names, timestamp and value.
struct ReadBack {
    headers: Vec<String>,
    timestamp: rdkafka::Timestamp,
    payload: Option<Vec<u8>>,
}

/// Every record of `topic` from the beginning, at `isolation` (the tool
/// reader's read_committed unless told otherwise).
fn read_topic(settings: &streamscore::Settings, topic: &str, isolation: &str) -> Vec<ReadBack> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    use streamscore::clients::{Role, client_config};
    let group = support::unique(&format!("{}-read", settings.kafka.group_id));
    let consumer: BaseConsumer = client_config(settings, Role::ToolReader { group_id: &group })
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", isolation)
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let mut idle_since = std::time::Instant::now();
    while idle_since.elapsed() < std::time::Duration::from_secs(8) {
        if let Some(Ok(m)) = consumer.poll(std::time::Duration::from_millis(200)) {
            idle_since = std::time::Instant::now();
            out.push(ReadBack {
                headers: m
                    .headers()
                    .map(|h| h.iter().map(|h| h.key.to_owned()).collect())
                    .unwrap_or_default(),
                timestamp: m.timestamp(),
                payload: m.payload().map(<[u8]>::to_vec),
            });
        }
    }
    out
}

/// Every committed record of `topic`: its header names, each record's list.
fn header_names(settings: &streamscore::Settings, topic: &str) -> Vec<Vec<String>> {
    read_topic(settings, topic, "read_committed")
        .into_iter()
        .map(|r| r.headers)
        .collect()
}

/// docs/wire-format.md: a score's timestamp is CreateTime, set when the
/// processor produced it, so it is never before `scored_at` and close after.
fn output_timestamps_are_when_the_score_was_produced(settings: &streamscore::Settings) {
    let scores = read_topic(settings, &settings.output.topic, "read_committed");
    assert_eq!(scores.len(), 30);
    for r in scores {
        let score: serde_json::Value =
            serde_json::from_slice(r.payload.as_deref().expect("a score value")).unwrap();
        let scored_at = score["scored_at"].as_i64().expect("scored_at");
        let rdkafka::Timestamp::CreateTime(created) = r.timestamp else {
            panic!("{:?} is not CreateTime", r.timestamp);
        };
        // Generous: the bound says "produced after scoring, in this run",
        // not how fast.
        assert!(
            (scored_at..scored_at + 30_000).contains(&created),
            "timestamp {created} vs scored_at {scored_at}"
        );
    }
}

/// Input headers reach neither output: a score has no headers, and a dead
/// letter has only the processor's own, even when the input forged one.
#[test]
fn input_headers_never_reach_the_outputs() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::BaseRecord;
    let settings = support::settings("example-headers", Format::Avro, Format::Avro);
    support::create(&settings);
    let keyring = support::keyring();
    let mut factory = EventFactory::new(keyring.clone(), Format::Avro, "hdr", 6);
    let good = factory.next(None);
    let bad = factory.next(Some(BadKind::ALL[0]));
    let producer = streamscore_tools::publish::publisher(&settings).unwrap();
    for r in [&good, &bad] {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "x-trace",
                value: Some("abc"),
            })
            .insert(Header {
                key: "streamscore.reason",
                value: Some("forged"),
            });
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&settings.input.topics[0])
            .key(r.key.as_slice())
            .headers(headers);
        if let Some(v) = r.value.as_deref() {
            record = record.payload(v);
        }
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    streamscore_tools::publish::flush(&producer).unwrap();
    let report = support::run_and_verify(&settings, keyring, 2);
    assert!(report.exactly_once(), "{}", report.line());
    assert_eq!((report.scored, report.dead_lettered), (1, 1));
    assert!(
        !report.dead_letter_reasons.contains_key("forged"),
        "{:?}",
        report.dead_letter_reasons
    );

    assert_eq!(
        header_names(&settings, &settings.output.topic),
        vec![Vec::<String>::new()]
    );
    let dead = header_names(&settings, &settings.output.dead_letter_topic);
    assert_eq!(dead.len(), 1);
    assert!(!dead[0].iter().any(|h| h == "x-trace"), "{:?}", dead[0]);
    assert_eq!(
        dead[0]
            .iter()
            .filter(|h| *h == "streamscore.reason")
            .count(),
        1,
        "{:?}",
        dead[0]
    );
}
