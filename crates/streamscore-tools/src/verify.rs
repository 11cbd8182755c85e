//! The independent reader: after a run, reads the input, score and
//! dead-letter topics from the beginning with a plain read_committed consumer
//! (no group, no shared code path with the pipeline's consumer) and checks
//! that every input record appears exactly once across the two outputs.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use streamscore::ScoreEncoder;
use streamscore::Settings;
use streamscore::clients::{Role, client_config};
use streamscore::dead_letters;
use streamscore::load_schema;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// librdkafka's error is in the message, not a `source` (a printed
    /// chain would say it twice).
    #[error("verifier Kafka error: {0}")]
    Kafka(KafkaError),
    #[error("topic {0} not found")]
    NoTopic(String),
    #[error("reading {topic} did not reach its end within {seconds} s")]
    Timeout { topic: String, seconds: u64 },
    #[error("cannot set up the score decoder: {0}")]
    Setup(String),
}

impl From<KafkaError> for VerifyError {
    fn from(e: KafkaError) -> Self {
        VerifyError::Kafka(e)
    }
}

/// Where a record came from: (topic, partition, offset).
pub type Coordinates = (String, i32, i64);

#[derive(Debug, Default, Clone)]
pub struct Report {
    pub produced: u64,
    pub scored: u64,
    pub dead_lettered: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// Output records that name an input record that does not exist.
    pub unexpected: u64,
    pub dead_letter_reasons: BTreeMap<String, u64>,
    /// Scored records whose score could not be decoded.
    pub undecodable_scores: u64,
    /// Per input partition: (group's committed offset, last record offset + 1).
    pub committed_vs_end: BTreeMap<(String, i32), (i64, i64)>,
    /// Decoded score results, for tests that check their content.
    pub scores: Vec<streamscore::ScoreResult>,
}

impl Report {
    pub fn exactly_once(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.unexpected == 0
            && self.undecodable_scores == 0
    }

    pub fn offsets_committed_to_end(&self) -> bool {
        self.committed_vs_end
            .values()
            .all(|(committed, end)| committed == end)
    }

    pub fn line(&self) -> String {
        format!(
            "verified: {} produced, {} scored, {} dead-lettered, {} lost, {} duplicated",
            self.produced,
            self.scored,
            self.dead_lettered,
            self.lost,
            self.duplicated + self.unexpected
        )
    }
}

pub struct Topics<'a> {
    pub input: &'a [String],
    pub scores: &'a str,
    pub dead_letters: &'a str,
    pub group_id: &'a str,
}

/// Verifies the topics that a pipeline with these settings reads and writes.
pub fn verify_settings(settings: &Settings, timeout: Duration) -> Result<Report, VerifyError> {
    let format = settings.output.format;
    let schema =
        load_schema(&settings.output.avro_schema).map_err(|e| VerifyError::Setup(e.to_string()))?;
    // With a registry, the id the scores carry is the one it holds for
    // the score schema under the score topic's subject.
    let registry = &settings.input.schema_registry;
    let client = registry
        .enabled()
        .then(|| streamscore::schema_registry::RegistryClient::new(registry))
        .transpose()
        .map_err(|e| VerifyError::Setup(e.to_string()))?;
    let id = streamscore::schema_registry::score_schema_id(settings, client.as_ref(), true)
        .map_err(|e| VerifyError::Setup(e.to_string()))?;
    let encoder = ScoreEncoder::new(format, schema, id);
    verify(
        settings,
        &Topics {
            input: &settings.input.topics,
            scores: &settings.output.topic,
            dead_letters: &settings.output.dead_letter_topic,
            group_id: &settings.kafka.group_id,
        },
        &encoder,
        timeout,
    )
}

/// Reads everything and builds the report, reaching the cluster as the
/// settings say (bootstrap and `kafka.properties`).
pub fn verify(
    settings: &Settings,
    topics: &Topics<'_>,
    scores: &ScoreEncoder,
    timeout: Duration,
) -> Result<Report, VerifyError> {
    let mut report = Report::default();
    let mut seen: HashMap<Coordinates, u32> = HashMap::new();
    let mut input_end: BTreeMap<(String, i32), i64> = BTreeMap::new();

    for topic in topics.input {
        read_topic(settings, topic, timeout, |m| {
            report.produced += 1;
            seen.entry((topic.clone(), m.partition(), m.offset()))
                .or_insert(0);
            let end = input_end.entry((topic.clone(), m.partition())).or_insert(0);
            *end = (*end).max(m.offset() + 1);
        })?;
    }
    let mut count = |coords: Coordinates, report: &mut Report| match seen.get_mut(&coords) {
        Some(n) => {
            *n += 1;
            if *n > 1 {
                report.duplicated += 1;
            }
        }
        None => report.unexpected += 1,
    };

    read_topic(settings, topics.scores, timeout, |m| {
        report.scored += 1;
        match m.payload().map(|p| scores.decode(p)) {
            Some(Ok(result)) => {
                count(
                    (
                        result.source_topic.clone(),
                        result.source_partition,
                        result.source_offset,
                    ),
                    &mut report,
                );
                report.scores.push(result);
            }
            _ => report.undecodable_scores += 1,
        }
    })?;
    read_topic(settings, topics.dead_letters, timeout, |m| {
        report.dead_lettered += 1;
        let mut reason = String::from("(none)");
        let (mut topic, mut partition, mut offset) = (None, None, None);
        if let Some(headers) = m.headers() {
            for h in headers.iter() {
                let value = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                match h.key {
                    dead_letters::HEADER_REASON => reason = value.unwrap_or_default(),
                    dead_letters::HEADER_SOURCE_TOPIC => topic = value,
                    dead_letters::HEADER_SOURCE_PARTITION => {
                        partition = value.and_then(|v| v.parse().ok())
                    }
                    dead_letters::HEADER_SOURCE_OFFSET => {
                        offset = value.and_then(|v| v.parse().ok())
                    }
                    _ => {}
                }
            }
        }
        *report.dead_letter_reasons.entry(reason).or_default() += 1;
        match (topic, partition, offset) {
            (Some(t), Some(p), Some(o)) => count((t, p, o), &mut report),
            _ => report.unexpected += 1,
        }
    })?;
    report.lost = seen.values().filter(|&&n| n == 0).count() as u64;

    let committed = committed_offsets(settings, topics.group_id, &input_end)?;
    for (tp, end) in input_end {
        let c = committed.get(&tp).copied().unwrap_or(-1);
        report.committed_vs_end.insert(tp, (c, end));
    }
    Ok(report)
}

/// End-of-partition is how the reader knows it is done, not an error worth a log line.
struct QuietEof;

impl rdkafka::ClientContext for QuietEof {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(rdkafka::error::RDKafkaErrorCode::PartitionEOF) {
            tracing::warn!(%error, reason, "verifier consumer error");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for QuietEof {}

fn reader(settings: &Settings) -> Result<BaseConsumer<QuietEof>, KafkaError> {
    client_config(
        settings,
        Role::ToolReader {
            group_id: "streamscore-verifier",
        },
    )
    .create_with_context(QuietEof)
}

/// Reads a whole topic (every partition to its end) and calls `each` per record.
fn read_topic(
    settings: &Settings,
    topic: &str,
    timeout: Duration,
    mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) -> Result<(), VerifyError> {
    let consumer = reader(settings)?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if partitions.is_empty() {
        return Err(VerifyError::NoTopic(topic.to_owned()));
    }
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut at_end = vec![false; partitions.len()];
    let deadline = Instant::now() + timeout;
    while at_end.iter().any(|e| !e) {
        if Instant::now() > deadline {
            return Err(VerifyError::Timeout {
                topic: topic.to_owned(),
                seconds: timeout.as_secs(),
            });
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                if let Some(i) = partitions.iter().position(|&p| p == m.partition()) {
                    at_end[i] = false;
                }
                each(&m);
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                if let Some(i) = partitions.iter().position(|&q| q == p) {
                    at_end[i] = true;
                }
            }
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    Ok(())
}

fn committed_offsets(
    settings: &Settings,
    group_id: &str,
    partitions: &BTreeMap<(String, i32), i64>,
) -> Result<HashMap<(String, i32), i64>, KafkaError> {
    let consumer: BaseConsumer = client_config(settings, Role::ToolReader { group_id }).create()?;
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in partitions.keys() {
        tpl.add_partition(topic, *partition);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok(committed
        .elements()
        .iter()
        .map(|e| {
            let offset = match e.offset() {
                Offset::Offset(o) => o,
                _ => -1,
            };
            ((e.topic().to_owned(), e.partition()), offset)
        })
        .collect())
}

/// Sum over the input partitions of (group's committed offset, end offset):
/// a cheap "is everything committed yet?" that reads no records.
pub fn committed_progress(
    settings: &Settings,
    input: &[String],
    group_id: &str,
) -> Result<(i64, i64), VerifyError> {
    let consumer = reader(settings)?;
    let mut ends = BTreeMap::new();
    for topic in input {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map(|t| t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>())
            .unwrap_or_default();
        for p in partitions {
            let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
            ends.insert((topic.clone(), p), high);
        }
    }
    let committed = committed_offsets(settings, group_id, &ends)?;
    let end: i64 = ends.values().sum();
    let done: i64 = ends
        .keys()
        .map(|tp| committed.get(tp).copied().unwrap_or(0).max(0))
        .sum();
    Ok((done, end))
}
