//! Latency as a downstream service sees it: a read_committed consumer on the
//! score topic, each score's latency the moment it is read less its event's
//! time (the bench's events carry the time they were made, just before they
//! are published). This counts what the service's own histogram cannot: the
//! fetch after the commit, on the reader's side.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use streamscore::clients::{Role, client_config};
use streamscore::{ScoreEncoder, Settings, load_schema};

use crate::bench::BenchError;

/// A reader on its own thread, from the score topic's end as it was at start.
pub(super) struct LatencyReader {
    seen: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<Histogram<u64>, BenchError>>,
}

fn kafka(e: impl std::fmt::Display) -> BenchError {
    BenchError::Kafka(e.to_string())
}

impl LatencyReader {
    /// Counts the scores of events made at `since_ms` or later.
    pub(super) fn start(settings: &Settings, since_ms: i64) -> Result<Self, BenchError> {
        let schema = load_schema(&settings.output.avro_schema).map_err(kafka)?;
        let scores = ScoreEncoder::new(
            settings.output.format,
            schema,
            settings.output.avro_schema_id,
        );
        let consumer = at_end(settings)?;
        let (seen, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("latency-reader".into())
            .spawn(move || read(&consumer, &scores, since_ms, &seen2, &stop2))
            .map_err(kafka)?;
        Ok(Self { seen, stop, thread })
    }

    /// Waits until `expected` scores have been read (no progress for
    /// `stall` is an error) and returns their latencies in µs.
    pub(super) fn finish(
        self,
        expected: u64,
        stall: Duration,
    ) -> Result<Histogram<u64>, BenchError> {
        let mut last = (self.seen.load(Ordering::Relaxed), Instant::now());
        while last.0 < expected && last.1.elapsed() < stall && !self.thread.is_finished() {
            std::thread::sleep(Duration::from_millis(20));
            let now = self.seen.load(Ordering::Relaxed);
            if now != last.0 {
                last = (now, Instant::now());
            }
        }
        self.stop.store(true, Ordering::Relaxed);
        let histogram = self
            .thread
            .join()
            .map_err(|_| kafka("the latency reader panicked"))??;
        if histogram.len() < expected {
            return Err(BenchError::Stalled {
                phase: "latency reader",
                done: histogram.len(),
                expected,
            });
        }
        Ok(histogram)
    }
}

/// A consumer assigned to every partition of the score topic at its current
/// end, so that it reads only what comes after.
fn at_end(settings: &Settings) -> Result<BaseConsumer, BenchError> {
    let topic = &settings.output.topic;
    let group_id = format!("{}-latency", settings.kafka.group_id);
    let consumer: BaseConsumer = client_config(
        settings,
        Role::ToolReader {
            group_id: &group_id,
        },
    )
    // It reads on until stopped; the end of a partition is no event here.
    .set("enable.partition.eof", "false")
    .create()
    .map_err(kafka)?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(kafka)?;
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            let (_, high) = consumer
                .fetch_watermarks(topic, p.id(), timeout)
                .map_err(kafka)?;
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(high))
                .map_err(kafka)?;
        }
    }
    if tpl.count() == 0 {
        return Err(kafka(format!("score topic {topic} has no partitions")));
    }
    consumer.assign(&tpl).map_err(kafka)?;
    Ok(consumer)
}

fn read(
    consumer: &BaseConsumer,
    scores: &ScoreEncoder,
    since_ms: i64,
    seen: &AtomicU64,
    stop: &AtomicBool,
) -> Result<Histogram<u64>, BenchError> {
    // Bounded, so that saturating_record clamps at an hour rather than at
    // an auto-resizing histogram's current (tiny) top.
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).map_err(kafka)?;
    while !stop.load(Ordering::Relaxed) {
        let Some(message) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let message = match message {
            Ok(m) => m,
            // The reader config asks for end-of-partition events; not errors here.
            Err(rdkafka::error::KafkaError::PartitionEOF(_)) => continue,
            Err(e) => return Err(kafka(e)),
        };
        let now = now_ms();
        let Some(result) = message.payload().and_then(|p| scores.decode(p).ok()) else {
            continue;
        };
        if result.event_time >= since_ms {
            let micros = (now - result.event_time).max(0) as u64 * 1000;
            histogram.saturating_record(micros);
            seen.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(histogram)
}

pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
