//! The sink stage: one thread that owns the transactional producer. It writes
//! each batch's results and dead letters, and every commit interval sends the
//! consumed offsets into the transaction and commits it: results, dead letters
//! and input progress become visible together or not at all.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::codec::{Decision, ScoreEncoder, ScoreResult};
use crate::dead_letter::{self, Reason};
use crate::item::{BarrierOutcome, Batch, Item, Outcome};
use crate::kafka::source::SourceConsumer;
use crate::telemetry::LiveStats;
use crate::telemetry::metrics::{
    DEAD_LETTERED, END_TO_END_LATENCY, SCORED, STAGE_DURATION, TRANSACTIONS, stage,
};
use crate::telemetry::signals::{PipelineSignals, Stage};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(
        "transactional producer failed fatally (fenced by a newer instance with the same transactional.id, or a fatal broker error): {0}"
    )]
    Fatal(KafkaError),
    #[error("aborting the transaction failed: {0}")]
    Abort(KafkaError),
    #[error("cannot produce a record: {0}")]
    Produce(KafkaError),
    #[error("cannot encode a score result: {0}")]
    Encode(String),
    #[error("the consumer has no group metadata (not in a consumer group?)")]
    NoGroupMetadata,
    #[error("a record reached the sink with no transaction open")]
    NoTransaction,
}

/// Delivery reports: inside a transaction a failed delivery makes the commit
/// fail, so this only logs.
pub struct SinkContext;

impl ClientContext for SinkContext {}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            tracing::debug!(error = %e, "delivery failed; the transaction will abort");
        }
    }
}

pub type SinkProducer = ThreadedProducer<SinkContext>;

/// What a score result says about the model.
#[derive(Debug, Clone)]
pub struct ModelIdentity {
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub threshold: f64,
}

pub struct SinkConfig {
    pub score_topic: String,
    pub dead_letter_topic: String,
    pub commit_interval: Duration,
    pub timeout: Duration,
}

/// The transaction being filled.
struct OpenTransaction {
    /// When its oldest record was read (its batch opened): the commit
    /// interval counts from there, not from when the sink first saw it, so
    /// batch wait, inference and queueing come out of the interval.
    oldest_read: Instant,
    /// Next offset to consume, per input partition.
    offsets: HashMap<(Arc<str>, i32), i64>,
    /// Record timestamps (ms), for end-to-end latency once committed.
    timestamps: Vec<i64>,
    scored: u64,
    dead: HashMap<Reason, u64>,
}

/// Metric handles looked up once, not per batch or per commit.
struct SinkMetrics {
    produce_seconds: metrics::Histogram,
    commit_seconds: metrics::Histogram,
    end_to_end_seconds: metrics::Histogram,
    committed: metrics::Counter,
    aborted: metrics::Counter,
    scored: metrics::Counter,
}

impl SinkMetrics {
    fn new() -> Self {
        Self {
            produce_seconds: metrics::histogram!(STAGE_DURATION, "stage" => stage::PRODUCE),
            commit_seconds: metrics::histogram!(STAGE_DURATION, "stage" => stage::COMMIT),
            end_to_end_seconds: metrics::histogram!(END_TO_END_LATENCY),
            committed: metrics::counter!(TRANSACTIONS, "outcome" => "committed"),
            aborted: metrics::counter!(TRANSACTIONS, "outcome" => "aborted"),
            scored: metrics::counter!(SCORED),
        }
    }
}

/// Where the sink reports to besides Prometheus: the live counters and the
/// signals behind /healthz.
pub struct Reporting {
    pub stats: Arc<LiveStats>,
    pub signals: Arc<PipelineSignals>,
}

pub struct Sink {
    metrics: SinkMetrics,
    producer: SinkProducer,
    group: Arc<SourceConsumer>,
    rewinds: Sender<u64>,
    encoder: ScoreEncoder,
    model: ModelIdentity,
    config: SinkConfig,
    stats: Arc<LiveStats>,
    signals: Arc<PipelineSignals>,
    generation: u64,
    open: Option<OpenTransaction>,
    /// Recent commit durations, weighted towards the slow ones.
    commit_estimate: Duration,
}

impl Sink {
    pub fn new(
        producer: SinkProducer,
        group: Arc<SourceConsumer>,
        rewinds: Sender<u64>,
        encoder: ScoreEncoder,
        model: ModelIdentity,
        config: SinkConfig,
        Reporting { stats, signals }: Reporting,
    ) -> Self {
        Self {
            metrics: SinkMetrics::new(),
            producer,
            group,
            rewinds,
            encoder,
            model,
            config,
            stats,
            signals,
            generation: 0,
            open: None,
            commit_estimate: Duration::ZERO,
        }
    }

    /// Reads scored batches round-robin from the inference workers (the order
    /// the source dispatched them in) until all workers are gone, then commits.
    pub fn run(mut self, results: Vec<Receiver<Batch>>) -> Result<(), SinkError> {
        let mut next = 0;
        loop {
            self.signals.beat(Stage::Sink);
            let wait = match &self.open {
                Some(t) => {
                    (t.oldest_read + self.fill_time()).saturating_duration_since(Instant::now())
                }
                None => Duration::from_millis(100),
            };
            match results[next].recv_timeout(wait) {
                Ok(batch) => {
                    next = (next + 1) % results.len();
                    self.handle(batch)?;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if self
                .open
                .as_ref()
                .is_some_and(|t| t.oldest_read.elapsed() >= self.fill_time())
            {
                self.commit()?;
            }
        }
        self.commit()?;
        Ok(())
    }

    /// How long a transaction takes records, counted from its oldest record's
    /// read: the commit interval less what commits have recently taken, so a
    /// record's wait from read to commit (batching, inference, filling,
    /// committing) stays within the interval; never under half of it.
    fn fill_time(&self) -> Duration {
        let interval = self.config.commit_interval;
        interval
            .saturating_sub(self.commit_estimate)
            .max(interval / 2)
    }

    fn handle(&mut self, batch: Batch) -> Result<(), SinkError> {
        if batch.generation != self.generation {
            // Read before the last abort; the source has rewound and will read these again.
            if let Some(barrier) = batch.barrier {
                let _ = barrier.done.send(BarrierOutcome::Aborted);
            }
            return Ok(());
        }
        if batch.rows > 0 {
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
            self.stats
                .batch_rows
                .fetch_add(batch.rows as u64, Ordering::Relaxed);
        }
        if !batch.items.is_empty() {
            let started = Instant::now();
            self.begin(batch.opened_at)?;
            let scored_at = now_ms();
            let mut scores = batch.scores.iter();
            for item in &batch.items {
                let score = match item.outcome {
                    Outcome::Row(_) => scores.next().copied(),
                    Outcome::Dead { .. } => None,
                };
                match self.write(item, score, scored_at) {
                    Ok(()) => {}
                    // A failed delivery puts the transaction in an abortable
                    // state and later sends fail; the rest of this batch is
                    // read again after the rewind.
                    Err(SinkError::Produce(e)) => {
                        let outcome = self.abort_and_rewind(&e)?;
                        if let Some(barrier) = batch.barrier {
                            let _ = barrier.done.send(outcome);
                        }
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                }
            }
            self.metrics.produce_seconds.record(started.elapsed());
        }
        if let Some(barrier) = batch.barrier {
            let outcome = self.commit()?;
            let _ = barrier.done.send(outcome);
        }
        Ok(())
    }

    fn begin(&mut self, read_at: Instant) -> Result<(), SinkError> {
        if self.open.is_none() {
            self.producer
                .begin_transaction()
                .map_err(SinkError::Fatal)?;
            self.open = Some(OpenTransaction {
                oldest_read: read_at,
                offsets: HashMap::new(),
                timestamps: Vec::new(),
                scored: 0,
                dead: HashMap::new(),
            });
        }
        Ok(())
    }

    fn write(&mut self, item: &Item, score: Option<f32>, scored_at: i64) -> Result<(), SinkError> {
        let Some(txn) = self.open.as_mut() else {
            return Err(SinkError::NoTransaction);
        };
        let key = item.key.as_deref();
        match (&item.outcome, score) {
            (Outcome::Row(meta), Some(score)) => {
                let score = f64::from(score);
                let result = ScoreResult {
                    event_id: meta.event_id.clone(),
                    record_key: key.map(|k| String::from_utf8_lossy(k).into_owned()),
                    score,
                    decision: if score >= self.model.threshold {
                        Decision::Flag
                    } else {
                        Decision::Pass
                    },
                    threshold: self.model.threshold,
                    model_name: self.model.name.clone(),
                    model_version: self.model.version.clone(),
                    model_sha256: self.model.sha256.clone(),
                    source_topic: item.source.topic.to_string(),
                    source_partition: item.source.partition,
                    source_offset: item.source.offset,
                    event_time: meta.event_time,
                    scored_at,
                };
                let payload = self
                    .encoder
                    .encode(&result)
                    .map_err(|e| SinkError::Encode(e.to_string()))?;
                let mut record: BaseRecord<'_, [u8], [u8]> =
                    BaseRecord::to(&self.config.score_topic).payload(payload.as_slice());
                if let Some(k) = key {
                    record = record.key(k);
                }
                send(&self.producer, record, self.config.timeout)?;
                txn.scored += 1;
            }
            (Outcome::Dead { rejection, value }, _) => {
                let partition = item.source.partition.to_string();
                let offset = item.source.offset.to_string();
                let headers = OwnedHeaders::new_with_capacity(5)
                    .insert(header(
                        dead_letter::HEADER_REASON,
                        rejection.reason.as_str(),
                    ))
                    .insert(header(dead_letter::HEADER_MESSAGE, &rejection.message))
                    .insert(header(dead_letter::HEADER_SOURCE_TOPIC, &item.source.topic))
                    .insert(header(dead_letter::HEADER_SOURCE_PARTITION, &partition))
                    .insert(header(dead_letter::HEADER_SOURCE_OFFSET, &offset));
                let mut record: BaseRecord<'_, [u8], [u8]> =
                    BaseRecord::to(&self.config.dead_letter_topic).headers(headers);
                if let Some(v) = value.as_deref() {
                    record = record.payload(v);
                }
                if let Some(k) = key {
                    record = record.key(k);
                }
                send(&self.producer, record, self.config.timeout)?;
                *txn.dead.entry(rejection.reason).or_default() += 1;
            }
            (Outcome::Row(meta), None) => {
                // The inference stage returns exactly one score per row; a
                // missing one is a bug, never silently skipped.
                return Err(SinkError::Encode(format!(
                    "no score for event {}",
                    meta.event_id
                )));
            }
        }
        txn.offsets.insert(
            (item.source.topic.clone(), item.source.partition),
            item.source.offset + 1,
        );
        txn.timestamps.push(item.timestamp_ms);
        Ok(())
    }

    /// Sends the offsets into the transaction and commits it. A retriable
    /// failure is retried; one that needs an abort aborts and asks the source
    /// to rewind; a fatal one (fencing) stops the process.
    fn commit(&mut self) -> Result<BarrierOutcome, SinkError> {
        let Some(txn) = self.open.as_ref() else {
            return Ok(BarrierOutcome::Committed);
        };
        let started = Instant::now();
        let mut offsets = TopicPartitionList::with_capacity(txn.offsets.len());
        for ((topic, partition), next) in &txn.offsets {
            offsets
                .add_partition_offset(topic, *partition, Offset::Offset(*next))
                .map_err(SinkError::Fatal)?;
        }
        let group = self
            .group
            .group_metadata()
            .ok_or(SinkError::NoGroupMetadata)?;
        let result = self
            .producer
            .send_offsets_to_transaction(&offsets, &group, self.config.timeout)
            .and_then(|()| {
                await_deliveries(&self.producer, self.config.timeout);
                self.commit_with_retries()
            });
        match result {
            Ok(()) => {
                if let Some(txn) = self.open.take() {
                    self.committed(&txn, started);
                }
                // Up quickly, down slowly: the estimate follows the slow
                // commits (the tail) more than the typical one.
                let took = started.elapsed();
                self.commit_estimate = if took > self.commit_estimate {
                    (self.commit_estimate + took) / 2
                } else {
                    (self.commit_estimate * 9 + took) / 10
                };
                Ok(BarrierOutcome::Committed)
            }
            Err(e) => self.abort_and_rewind(&e),
        }
    }

    /// Aborts the open transaction and asks the source to read again from
    /// the last commit; batches read before that are dropped by generation.
    fn abort_and_rewind(&mut self, cause: &KafkaError) -> Result<BarrierOutcome, SinkError> {
        if fatal(cause) {
            return Err(SinkError::Fatal(cause.clone()));
        }
        let records = self.open.take().map_or(0, |t| t.timestamps.len());
        tracing::warn!(error = %cause, records, "transaction failed; aborting and rewinding to the last commit");
        self.abort_with_retries()?;
        self.generation += 1;
        // The source may already be gone (shutdown); then nothing needs rewinding.
        let _ = self.rewinds.send(self.generation);
        self.metrics.aborted.increment(1);
        self.stats
            .transactions_aborted
            .fetch_add(1, Ordering::Relaxed);
        Ok(BarrierOutcome::Aborted)
    }

    fn commit_with_retries(&self) -> rdkafka::error::KafkaResult<()> {
        let mut attempts = 0;
        loop {
            match self.producer.commit_transaction(self.config.timeout) {
                Err(e) if retriable(&e) && attempts < 3 => {
                    attempts += 1;
                    tracing::warn!(error = %e, attempts, "retrying the transaction commit");
                }
                other => return other,
            }
        }
    }

    /// Aborts; librdkafka asks for a retry when an abort times out mid-way.
    fn abort_with_retries(&self) -> Result<(), SinkError> {
        let mut attempts = 0;
        loop {
            match self.producer.abort_transaction(self.config.timeout) {
                Ok(()) => return Ok(()),
                Err(e) if fatal(&e) => return Err(SinkError::Fatal(e)),
                Err(e) if retriable(&e) && attempts < 3 => {
                    attempts += 1;
                    tracing::warn!(error = %e, attempts, "retrying the transaction abort");
                }
                Err(e) => return Err(SinkError::Abort(e)),
            }
        }
    }

    fn committed(&self, txn: &OpenTransaction, started: Instant) {
        let took = started.elapsed();
        tracing::debug!(
            records = txn.timestamps.len(),
            scored = txn.scored,
            dead_lettered = txn.dead.values().sum::<u64>(),
            partitions = txn.offsets.len(),
            since_oldest_read_ms = txn.oldest_read.elapsed().as_millis() as u64,
            commit_ms = took.as_millis() as u64,
            "transaction committed"
        );
        self.metrics.commit_seconds.record(took);
        self.metrics.committed.increment(1);
        self.metrics.scored.increment(txn.scored);
        self.stats.scored.fetch_add(txn.scored, Ordering::Relaxed);
        let mut dead_total = 0;
        for (reason, n) in &txn.dead {
            metrics::counter!(DEAD_LETTERED, "reason" => reason.as_str()).increment(*n);
            dead_total += n;
        }
        self.stats
            .dead_lettered
            .fetch_add(dead_total, Ordering::Relaxed);
        self.stats
            .transactions_committed
            .fetch_add(1, Ordering::Relaxed);
        let now = now_ms();
        let latency = &self.metrics.end_to_end_seconds;
        for &ts in &txn.timestamps {
            latency.record((now - ts).max(0) as f64 / 1000.0);
        }
        self.stats.record_latencies_us(
            txn.timestamps
                .iter()
                .map(|&ts| ((now - ts).max(0) as u64) * 1000),
        );
    }
}

/// Waits until every record sent is acknowledged (the producer's own thread
/// serves the delivery reports), or until `patience` runs out.
///
/// Why not leave it to `commit_transaction`: rust-rdkafka's flush inside it
/// polls the event queue in 100 ms steps, and with a `ThreadedProducer` the
/// background thread takes the delivery events first, so every commit with
/// records in flight slept a whole 100 ms step. Waiting here first makes
/// that flush a no-op.
pub fn await_deliveries<C: ProducerContext + 'static>(
    producer: &ThreadedProducer<C>,
    patience: Duration,
) {
    let started = Instant::now();
    while producer.in_flight_count() > 0 && started.elapsed() < patience {
        std::thread::sleep(Duration::from_micros(500));
    }
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}

/// Enqueues a record, waiting while librdkafka's queue is full, but not
/// forever: a queue that does not drain within `patience` means the producer
/// cannot deliver, and the process had better restart than hang.
fn send(
    producer: &SinkProducer,
    mut record: BaseRecord<'_, [u8], [u8]>,
    patience: Duration,
) -> Result<(), SinkError> {
    let started = Instant::now();
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                if started.elapsed() > patience {
                    return Err(SinkError::Produce(KafkaError::MessageProduction(
                        RDKafkaErrorCode::QueueFull,
                    )));
                }
                record = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) if fatal(&e) => return Err(SinkError::Fatal(e)),
            Err((e, _)) => return Err(SinkError::Produce(e)),
        }
    }
}

fn txn_error(e: &KafkaError) -> Option<&rdkafka::error::RDKafkaError> {
    match e {
        KafkaError::Transaction(t) => Some(t),
        _ => None,
    }
}

fn retriable(e: &KafkaError) -> bool {
    txn_error(e).is_some_and(|t| t.is_retriable() && !t.txn_requires_abort() && !t.is_fatal())
}

fn fatal(e: &KafkaError) -> bool {
    match txn_error(e) {
        Some(t) => t.is_fatal(),
        None => matches!(
            e.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::Fatal
                    | RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
            )
        ),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
