//! The sink stage: one thread that owns the transactional producer. It writes
//! each batch's results and dead letters, and every commit interval sends the
//! consumed offsets into the transaction and commits it: results, dead letters
//! and input progress become visible together or not at all.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use crate::clock::unix_ms;
use crate::codec::ScoreRecords;
use crate::codec::score::Decision;
use crate::codec::score::ModelIdentity;
use crate::dead_letter::{DeadLetter, Omitted, Reason, Rejection};
use crate::faults::Faults;
use crate::item::EventMeta;
use crate::item::{BarrierOutcome, Batch, Item, Outcome};
use crate::kafka::authorized::{self, Operation};
use crate::kafka::outcome::{self, Acknowledged, OutcomeError, Witness};
use crate::kafka::positions::CommittedPositions;
use crate::kafka::source::SourceConsumer;
use crate::pipeline::fan::FanIn;
use crate::telemetry::shadow::ShadowTally;
use crate::telemetry::signals::{PipelineSignals, Stage};
use crate::telemetry::{Stats, Step};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(
        "transactional producer failed fatally (fenced by a newer instance with the same transactional.id, or a fatal broker error): {0}"
    )]
    Fatal(KafkaError),
    #[error(
        "cannot write to topic {topic}: {error} (every one of the last {attempts} transactions failed on it; does the topic exist, does it accept records this size, and may this principal write it?)"
    )]
    Unwritable {
        topic: String,
        error: KafkaError,
        attempts: u32,
    },
    #[error(
        "the principal may not Read group {group}: the broker refused the offsets of {attempts} transaction(s) in a row ({error}); grant Read on the group, as `streamscore acls` prints"
    )]
    GroupUnauthorized {
        group: String,
        error: KafkaError,
        attempts: u32,
    },
    #[error(
        "the principal may not Write topic {topic}: the broker refused {attempts} transaction(s) in a row ({error}); grant it WRITE on the topic"
    )]
    WriteUnauthorized {
        topic: String,
        error: KafkaError,
        attempts: u32,
    },
    #[error(
        "cannot replace the transactional producer after a commit or abort that could not finish: {0}"
    )]
    ReplaceProducer(KafkaError),
    #[error(
        "the principal may not Write transactional id {id} (TRANSACTIONAL_ID_AUTHORIZATION_FAILED: {error}): grant Write on it, as `streamscore acls` prints"
    )]
    TransactionalIdUnauthorized { id: String, error: KafkaError },
    #[error("aborting the transaction failed: {0}")]
    Abort(KafkaError),
    #[error(
        "send_offsets_to_transaction did not return within {waited:?}, and the call given up {earlier:?} before, on the producer replaced then, has not returned either: this client cannot reach the group coordinator (librdkafka #5456 never times out a coordinator request); a restart looks it up afresh and resumes from the group's committed offsets"
    )]
    OffsetsInLimbo { waited: Duration, earlier: Duration },
    #[error("cannot start the thread that sends a transaction's offsets: {0}")]
    Thread(std::io::Error),
    #[error("the thread that sends a transaction's offsets panicked")]
    OffsetsPanicked,
    #[error(
        "cannot tell whether a commit that went unanswered landed: {0}; a restart resumes from the group's committed offsets"
    )]
    Outcome(#[from] OutcomeError),
    #[error("cannot encode a score result: {0}")]
    Encode(String),
    #[error("the consumer has no group metadata (not in a consumer group?)")]
    NoGroupMetadata,
    #[error("a record reached the sink with no transaction open")]
    NoTransaction,
    #[error(
        "an inference worker failed (its error follows); the open transaction was aborted, nothing after the last commit is committed"
    )]
    StageFailed,
}

/// Transactions in a row that may fail on the same topic with the same
/// permanent error (it does not exist, may not be written, refuses the
/// record) before the sink gives up: retrying cannot help, and a clear exit
/// tells the operator what to fix where an endless abort loop would not.
const UNWRITABLE_AFTER: u32 = 3;

/// The first failed delivery of the newest transaction that had one: which
/// transaction, topic and error. A failed delivery inside a transaction
/// makes its commit fail with a generic message; this says where and why.
/// Numbered, because a producer given up with a call still running in it
/// (see [`Sink::send_offsets`]) reports its own failures late, into the
/// time of its replacement's transactions.
#[derive(Debug, Default)]
pub(crate) struct DeliveryFailures(std::sync::Mutex<Option<(u64, String, KafkaError)>>);

impl DeliveryFailures {
    fn note(&self, transaction: u64, topic: &str, error: &KafkaError) {
        // Purged by an abort: the abort's doing, not a cause.
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight)
        ) {
            return;
        }
        let mut first = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if first.as_ref().is_none_or(|(t, _, _)| *t < transaction) {
            *first = Some((transaction, topic.to_owned(), error.clone()));
        }
    }

    /// The first failure of `transaction`, if any; forgets whatever is noted.
    fn take_of(&self, transaction: u64) -> Option<(String, KafkaError)> {
        let first = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        first
            .filter(|(t, _, _)| *t == transaction)
            .map(|(_, topic, error)| (topic, error))
    }

    fn clear(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// Delivery reports: inside a transaction a failed delivery makes the commit
/// fail; the context remembers the first one so the abort can name it. Each
/// record carries its transaction's number, and the first one acknowledged
/// is that transaction's witness (see [`outcome`]).
pub(crate) struct SinkContext {
    failures: Arc<DeliveryFailures>,
    witness: Arc<Witness>,
}

impl ClientContext for SinkContext {}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, transaction: usize) {
        match result {
            Ok(message) => self.witness.note(
                transaction as u64,
                message.topic(),
                message.partition(),
                message.offset(),
            ),
            Err((e, message)) => {
                tracing::debug!(error = %e, topic = message.topic(), "delivery failed; the transaction will abort");
                self.failures.note(transaction as u64, message.topic(), e);
            }
        }
    }
}

pub(crate) type SinkProducer = ThreadedProducer<SinkContext>;

type Record<'a> = BaseRecord<'a, [u8], [u8], usize>;

pub(crate) struct SinkConfig {
    /// Named when the broker refuses it.
    pub transactional_id: String,
    /// Named when the broker refuses the offsets sent to it.
    pub group_id: String,
    pub score_topic: String,
    pub dead_letter_topic: String,
    pub commit_interval: Duration,
    pub timeout: Duration,
    /// How long a replacement producer may keep trying to initialise
    /// transactions before the sink gives up (the broker has long since
    /// aborted the old transaction by then).
    pub transaction_timeout: Duration,
    /// With shadow scoring: where the challenger's results go.
    pub shadow_topic: Option<String>,
    /// The read_committed reader that settles an unanswered commit.
    pub outcome_reader: ClientConfig,
}

impl SinkError {
    /// A refused transactional id is fatal to the producer, and would read
    /// as a fence by a newer instance: say what it is.
    fn named(self, transactional_id: &str) -> SinkError {
        match self {
            SinkError::Fatal(error) | SinkError::ReplaceProducer(error)
                if error.rdkafka_error_code()
                    == Some(RDKafkaErrorCode::TransactionalIdAuthorizationFailed) =>
            {
                SinkError::TransactionalIdUnauthorized {
                    id: transactional_id.to_owned(),
                    error,
                }
            }
            other => other,
        }
    }
}

/// What the sink shares with the other stages.
pub(crate) struct SinkLinks {
    /// The consumer, for its group metadata (KIP-447) and to see a lost assignment.
    pub group: Arc<SourceConsumer>,
    /// Tells the source to read again from the last commit (new generation).
    pub rewinds: Sender<u64>,
    /// Where each commit leaves each partition, for the source's rewinds.
    pub positions: Arc<CommittedPositions>,
    /// Set by an inference worker that failed: nothing may commit after it.
    pub upstream_failed: Arc<AtomicBool>,
    pub faults: Arc<Faults>,
}

/// How to make the transactional producer again when it must be replaced.
pub(crate) struct ProducerFactory {
    pub config: ClientConfig,
    pub failures: Arc<DeliveryFailures>,
    pub witness: Arc<Witness>,
}

impl ProducerFactory {
    pub(crate) fn create(&self) -> Result<SinkProducer, KafkaError> {
        self.config.create_with_context(SinkContext {
            failures: self.failures.clone(),
            witness: self.witness.clone(),
        })
    }
}

/// The transaction being filled.
struct OpenTransaction {
    /// Its number (from 1), carried by its records' delivery reports.
    number: u64,
    /// When its oldest record was read (its batch opened): at light load the
    /// commit interval counts from there, not from when the sink first saw
    /// it, so batch wait, inference and queueing come out of the interval.
    oldest_read: Instant,
    /// When the sink began it: under load it stays open for a while of its
    /// own whatever its records' age (group commit, see [`Sink::due`]).
    began: Instant,
    /// Next offset to consume, per input partition.
    offsets: HashMap<(Arc<str>, i32), i64>,
    /// Record timestamps (ms), for end-to-end latency once committed.
    timestamps: Vec<i64>,
    scored: u64,
    dead: HashMap<Reason, u64>,
    /// The model release whose scores it holds (one per transaction).
    epoch: u64,
    /// The challenger against the model serving, counted at commit.
    shadow: ShadowTally,
}

/// One record's results as the sink writes them: its score (none for a
/// dead letter), the challenger's, when, and by which model.
struct Scored<'a> {
    score: Option<f32>,
    shadow: Option<f32>,
    at: i64,
    model: Option<&'a ModelIdentity>,
}

/// Where the sink reports to: the stats and the
/// signals behind /healthz.
pub(crate) struct Reporting {
    pub stats: Arc<Stats>,
    pub signals: Arc<PipelineSignals>,
}

/// Why a transaction ends in an abort.
#[derive(Debug)]
enum Failure {
    /// A transactional call (send offsets, commit) failed; the transaction
    /// must be aborted.
    Transaction(KafkaError),
    /// A transactional call got no answer in time (or a test took its answer
    /// away): the transaction may have committed or not.
    Unanswered(String),
    /// Sending the offsets never returned (see [`Sink::send_offsets`]): the
    /// call is still librdkafka's current one, but the commit was never
    /// asked for, so the transaction cannot have landed.
    OffsetsUnanswered(Duration),
    /// A record could not be enqueued for this topic.
    Produce { topic: String, error: KafkaError },
    /// The group took the partitions away; their offsets must not be sent.
    AssignmentLost,
    /// Armed by a test (see [`Faults`]).
    Injected,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Transaction(e) => write!(f, "{e}"),
            Failure::Unanswered(e) => write!(f, "no answer in time: {e}"),
            Failure::OffsetsUnanswered(waited) => write!(
                f,
                "send_offsets_to_transaction did not return within {waited:?} (the group coordinator is gone, and librdkafka #5456 never times out its request)"
            ),
            Failure::Produce { topic, error } => write!(f, "cannot produce to {topic}: {error}"),
            Failure::AssignmentLost => f.write_str(
                "the consumer lost its partitions (session timed out or the group fenced it)",
            ),
            Failure::Injected => f.write_str("abort injected by a test"),
        }
    }
}

pub(crate) struct Sink {
    /// Shared only with a call to send offsets that did not return, which
    /// keeps the producer it was made on alive until it does.
    producer: Arc<SinkProducer>,
    factory: ProducerFactory,
    links: SinkLinks,
    records: ScoreRecords,
    config: SinkConfig,
    stats: Arc<Stats>,
    signals: Arc<PipelineSignals>,
    generation: u64,
    open: Option<OpenTransaction>,
    /// Recent commit durations, weighted towards the slow ones.
    commit_estimate: Duration,
    /// The permanent produce error the last aborts had in common, and how
    /// many transactions in a row it has failed.
    unwritable: Option<(String, RDKafkaErrorCode, u32)>,
    /// Transactions begun, the open one included.
    transactions: u64,
    /// An earlier call to send offsets that was given up: when, and
    /// whether it has returned since.
    offsets_in_limbo: Option<(Instant, Arc<AtomicBool>)>,
}

/// How much longer than `kafka.request_timeout_ms` sending a transaction's
/// offsets may take before the sink gives up on the call.
const OFFSETS_GRACE: Duration = Duration::from_secs(5);

impl Sink {
    pub(crate) fn new(
        producer: SinkProducer,
        factory: ProducerFactory,
        links: SinkLinks,
        records: ScoreRecords,
        config: SinkConfig,
        Reporting { stats, signals }: Reporting,
    ) -> Self {
        Self {
            producer: Arc::new(producer),
            factory,
            links,
            records,
            config,
            stats,
            signals,
            generation: 0,
            open: None,
            commit_estimate: Duration::ZERO,
            unwritable: None,
            transactions: 0,
            offsets_in_limbo: None,
        }
    }

    /// Reads scored batches round-robin from the inference workers (the order
    /// the source dispatched them in) until all workers are gone, then commits
    /// (or, when a worker failed, aborts and reports it).
    pub(crate) fn run(self, results: FanIn) -> Result<(), SinkError> {
        let id = self.config.transactional_id.clone();
        self.serve(results).map_err(|e| e.named(&id))
    }

    fn serve(mut self, mut results: FanIn) -> Result<(), SinkError> {
        loop {
            self.signals.beat(Stage::Sink);
            let wait = match &self.open {
                Some(t) => self.due(t).saturating_duration_since(Instant::now()),
                None => Duration::from_millis(100),
            };
            match results.recv_timeout(wait) {
                Ok(batch) => self.handle(batch)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if self
                .open
                .as_ref()
                .is_some_and(|t| Instant::now() >= self.due(t))
            {
                self.commit()?;
            }
        }
        self.commit()?;
        Ok(())
    }

    /// When the open transaction closes: once its oldest record has waited
    /// the fill time, but never before the transaction itself has been open
    /// for half of it.
    ///
    /// The second bound is group commit. Records that queued while the
    /// previous commit ran are already old when their transaction begins; a
    /// transaction that closed on their age alone would commit after one
    /// batch, the next batches would queue behind that commit and age in
    /// turn, and a backlog would drain one batch per commit for good (the
    /// collapse after a pause, issue 14). Counted from its own start, a
    /// transaction takes everything that queued during the last commit plus
    /// what arrives in its own time: small at light load, where the first
    /// bound rules and latency stays within the interval, large under load.
    fn due(&self, txn: &OpenTransaction) -> Instant {
        let fill = self.fill_time();
        (txn.oldest_read + fill).max(txn.began + fill / 2)
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
        if !batch.items.is_empty() {
            let model = batch.model.clone();
            let epoch = model.as_ref().map_or(0, |m| m.epoch);
            if self.open.as_ref().is_some_and(|t| t.epoch != epoch) {
                // A swapped-in model's first batch: what the previous model
                // scored commits first, so a transaction holds one model's
                // scores and the swap is a transaction boundary.
                if self.commit()? == BarrierOutcome::Aborted {
                    // Everything since the last commit, this batch too, is read again.
                    if let Some(barrier) = batch.barrier {
                        let _ = barrier.done.send(BarrierOutcome::Aborted);
                    }
                    return Ok(());
                }
            }
            let started = Instant::now();
            self.begin(batch.opened_at, epoch)?;
            let scored_at = unix_ms();
            let identity = model.as_deref().map(|m| &m.identity);
            let mut scores = batch.scores.iter();
            let mut shadow_scores = batch.shadow_scores.iter();
            for item in &batch.items {
                let (score, shadow) = match item.outcome {
                    Outcome::Row(_) => (scores.next().copied(), shadow_scores.next().copied()),
                    Outcome::Dead { .. } => (None, None),
                };
                let result = Scored {
                    score,
                    shadow,
                    at: scored_at,
                    model: identity,
                };
                if let Err(failure) = self.write(item, &result)? {
                    // The rest of this batch is read again after the rewind.
                    let outcome = self.abort_and_rewind(failure)?;
                    if let Some(barrier) = batch.barrier {
                        let _ = barrier.done.send(outcome);
                    }
                    return Ok(());
                }
            }
            self.stats.timed(Step::Produce, started.elapsed());
        }
        if let Some(barrier) = batch.barrier {
            let outcome = self.commit()?;
            let _ = barrier.done.send(outcome);
        }
        Ok(())
    }

    fn begin(&mut self, read_at: Instant, epoch: u64) -> Result<(), SinkError> {
        if self.open.is_none() {
            self.producer
                .begin_transaction()
                .map_err(SinkError::Fatal)?;
            self.signals.set_transaction_open(true);
            self.transactions += 1;
            self.open = Some(OpenTransaction {
                number: self.transactions,
                oldest_read: read_at,
                began: Instant::now(),
                offsets: HashMap::new(),
                timestamps: Vec::new(),
                scored: 0,
                dead: HashMap::new(),
                epoch,
                shadow: ShadowTally::default(),
            });
        }
        Ok(())
    }

    /// Writes one record's result into the open transaction: its score, or
    /// its dead letter. `Ok(Err(_))` is a failure that aborts the transaction.
    fn write(
        &mut self,
        item: &Item,
        scored: &Scored<'_>,
    ) -> Result<Result<(), Failure>, SinkError> {
        let (score, scored_at, model) = (scored.score, scored.at, scored.model);
        if self.open.is_none() {
            return Err(SinkError::NoTransaction);
        }
        let written = match (&item.outcome, score) {
            (Outcome::Row(meta), Some(score)) => {
                let payload = (self.records)
                    .value(item, meta, score, scored_at, model)
                    .map_err(|e| SinkError::Encode(e.to_string()))?;
                match self.send_score(item, &payload) {
                    Err(e)
                        if e.rdkafka_error_code()
                            == Some(RDKafkaErrorCode::MessageSizeTooLarge) =>
                    {
                        // The score cannot be written at all (a huge key or
                        // event id): the record goes to the dead letters,
                        // where the key and value can be left out.
                        let rejection = Rejection::score_too_large(payload.len());
                        self.write_dead_letter(item, &rejection, None)
                            .map(|()| Some(Reason::TooLarge))
                            .map_err(produce_failure(&self.config.dead_letter_topic))
                    }
                    Err(error) => Err(produce_failure(&self.config.score_topic)(error)),
                    Ok(()) => self.write_shadow(item, meta, score, scored)?.map(|()| None),
                }
            }
            (Outcome::Dead { rejection, value }, _) => self
                .write_dead_letter(item, rejection, value.as_deref())
                .map(|()| Some(rejection.reason))
                .map_err(produce_failure(&self.config.dead_letter_topic)),
            (Outcome::Row(meta), None) => {
                // The inference stage returns exactly one score per row; a
                // missing one is a bug, never silently skipped.
                return Err(SinkError::Encode(format!(
                    "no score for event {}",
                    meta.event_id
                )));
            }
        };
        let dead = match written {
            Ok(dead) => dead,
            Err(failure) => return Ok(Err(failure)),
        };
        let Some(txn) = self.open.as_mut() else {
            return Err(SinkError::NoTransaction);
        };
        match dead {
            Some(reason) => *txn.dead.entry(reason).or_default() += 1,
            None => txn.scored += 1,
        }
        txn.offsets.insert(
            (item.source.topic.clone(), item.source.partition),
            item.source.offset + 1,
        );
        txn.timestamps.push(item.timestamp_ms);
        Ok(Ok(()))
    }

    /// With shadow scoring, the challenger's result for a record whose
    /// score was written: to the shadow topic, in the same transaction.
    fn write_shadow(
        &mut self,
        item: &Item,
        meta: &EventMeta,
        served: f32,
        scored: &Scored<'_>,
    ) -> Result<Result<(), Failure>, SinkError> {
        let (Some(topic), Some(challenger), Some(shadow)) = (
            self.config.shadow_topic.as_deref(),
            self.records.shadow(),
            scored.shadow,
        ) else {
            return Ok(Ok(()));
        };
        let payload = (self.records)
            .value(item, meta, shadow, scored.at, Some(challenger))
            .map_err(|e| SinkError::Encode(e.to_string()))?;
        match self.send_to(topic, item, &payload) {
            // A shadow record the broker would never take (the score fitted,
            // a longer challenger name did not) must not wedge the partition
            // by aborting for ever: it is left out, said, and not compared.
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge) => {
                tracing::warn!(
                    topic, event_id = %meta.event_id, bytes = payload.len(),
                    "a shadow result is over kafka.max_message_bytes and is left out"
                );
                return Ok(Ok(()));
            }
            Err(error) => return Ok(Err(produce_failure(topic)(error))),
            Ok(()) => {}
        }
        let serving = self.records.serving(scored.model);
        let (served, shadow) = (f64::from(served), f64::from(shadow));
        let agree =
            Decision::at(served, serving.threshold) == Decision::at(shadow, challenger.threshold);
        if let Some(txn) = self.open.as_mut() {
            txn.shadow.compare(served, shadow, agree);
        }
        Ok(Ok(()))
    }

    fn send_score(&self, item: &Item, payload: &[u8]) -> Result<(), KafkaError> {
        self.send_to(&self.config.score_topic, item, payload)
    }

    fn send_to(&self, topic: &str, item: &Item, payload: &[u8]) -> Result<(), KafkaError> {
        let mut record = self.record_to(topic).payload(payload);
        if let Some(k) = item.key.as_deref() {
            record = record.key(k);
        }
        send(&self.producer, record, self.config.timeout)
    }

    /// A record of the open transaction, numbered for its delivery report.
    fn record_to<'a>(&self, topic: &'a str) -> Record<'a> {
        let number = self.open.as_ref().map_or(0, |t| t.number);
        BaseRecord::with_opaque_to(topic, number as usize)
    }

    /// Writes a dead letter ([`DeadLetter`]). One that would be over
    /// `kafka.max_message_bytes` (librdkafka refuses it before sending) is
    /// written without its value, and if need be without its key: a dead
    /// letter that can never be written would wedge its partition forever.
    fn write_dead_letter(
        &self,
        item: &Item,
        rejection: &Rejection,
        value: Option<&[u8]>,
    ) -> Result<(), KafkaError> {
        let mut letter = DeadLetter::new(&item.source, rejection, item.key.as_deref(), value);
        loop {
            let mut record = self
                .record_to(&self.config.dead_letter_topic)
                .headers(letter.headers());
            if let Some(v) = letter.value() {
                record = record.payload(v);
            }
            if let Some(k) = letter.key() {
                record = record.key(k);
            }
            let error = match send(&self.producer, record, self.config.timeout) {
                Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge) => {
                    e
                }
                other => return other,
            };
            let Some(omitted) = letter.shrink() else {
                return Err(error);
            };
            if omitted == Omitted::Value {
                self.stats.value_omitted();
            }
            tracing::warn!(
                source_topic = %item.source.topic,
                source_partition = item.source.partition,
                source_offset = item.source.offset,
                value_bytes = value.map_or(0, <[u8]>::len),
                key_bytes = item.key.as_deref().map_or(0, <[u8]>::len),
                omitted = omitted.as_str(),
                "a dead letter would be over kafka.max_message_bytes; writing it without the original {}",
                omitted.as_str()
            );
        }
    }

    /// Sends the offsets into the transaction and commits it. A retriable
    /// failure is retried; one that needs an abort aborts and asks the source
    /// to rewind; a fatal one (fencing) stops the process.
    fn commit(&mut self) -> Result<BarrierOutcome, SinkError> {
        if self.links.upstream_failed.load(Ordering::SeqCst) {
            return Err(self.abort_after_stage_failure());
        }
        let Some(txn) = self.open.as_ref() else {
            return Ok(BarrierOutcome::NothingOpen);
        };
        if self.links.faults.take_commit_abort() {
            return self.abort_and_rewind(Failure::Injected);
        }
        let started = Instant::now();
        let mut offsets = TopicPartitionList::with_capacity(txn.offsets.len());
        for ((topic, partition), next) in &txn.offsets {
            offsets
                .add_partition_offset(topic, *partition, Offset::Offset(*next))
                .map_err(SinkError::Fatal)?;
        }
        let group = self
            .links
            .group
            .group_metadata()
            .ok_or(SinkError::NoGroupMetadata)?;
        // Offsets sent after the assignment is lost would go with an empty
        // member id and generation -1, which the coordinator accepts without
        // any fencing while another member may own the partitions. Checked
        // after taking the metadata, so a loss in between is seen.
        if self.links.group.assignment_lost() {
            return self.abort_and_rewind(Failure::AssignmentLost);
        }
        let silent_abort = self.links.faults.take_silent_abort();
        let Some(sent) = self.send_offsets(offsets, group)? else {
            let waited = self.config.timeout + OFFSETS_GRACE;
            return self.abort_and_rewind(Failure::OffsetsUnanswered(waited));
        };
        let result = sent.and_then(|()| {
            await_deliveries(&*self.producer, self.config.timeout);
            self.links.faults.pause_if_commit_held();
            if silent_abort {
                return self.producer.abort_transaction(self.config.timeout);
            }
            self.commit_with_retries()
        });
        let result = match result {
            Ok(()) if silent_abort || self.links.faults.take_lost_commit_reply() => Err(
                Failure::Unanswered("the commit's answer was lost (injected by a test)".into()),
            ),
            Ok(()) => Ok(()),
            Err(e) if fatal(&e) => return Err(SinkError::Fatal(e)),
            // Timed out: librdkafka still holds the call as current.
            Err(e) if txn_error(&e).is_some_and(|t| !t.txn_requires_abort()) => {
                Err(Failure::Unanswered(e.to_string()))
            }
            Err(e) => Err(Failure::Transaction(e)),
        };
        match result {
            Ok(()) => {
                if let Some(txn) = self.open.take() {
                    self.finish_commit(txn, started);
                }
                Ok(BarrierOutcome::Committed)
            }
            Err(failure) => self.abort_and_rewind(failure),
        }
    }

    /// A send refused because the transaction is already in error (`_STATE`)
    /// says nothing of why, and names the topic of whatever record came next.
    /// librdkafka keeps the transaction's own error: `begin_transaction` in
    /// that state returns it and changes nothing.
    fn why_in_error(&self, failure: Failure) -> Failure {
        match failure {
            Failure::Produce { topic, error }
                if error.rdkafka_error_code() == Some(RDKafkaErrorCode::State) =>
            {
                match self.producer.begin_transaction() {
                    Err(e) if e.rdkafka_error_code() != Some(RDKafkaErrorCode::State) => {
                        Failure::Transaction(e)
                    }
                    // Not in error after all (begun now, or in another
                    // state): the abort that follows settles it.
                    _ => Failure::Produce { topic, error },
                }
            }
            other => other,
        }
    }

    /// Ends the open transaction without committing it and asks the source
    /// to read again from the last commit; batches read before that are
    /// dropped by generation.
    ///
    /// A transactional call that timed out is still librdkafka's current
    /// call, so an abort after it conflicts with it; and without KIP-890
    /// (librdkafka #5423) a request of that transaction could still land
    /// later. Both are settled by a new producer: its `init_transactions`
    /// bumps the epoch, which fences the old one and makes the coordinator
    /// abort what it left open.
    fn abort_and_rewind(&mut self, failure: Failure) -> Result<BarrierOutcome, SinkError> {
        let failure = self.why_in_error(failure);
        if let Failure::Transaction(e) = &failure
            && fatal(e)
        {
            return Err(SinkError::Fatal(e.clone()));
        }
        let started = Instant::now();
        let txn = self.open.take();
        self.signals.set_transaction_open(false);
        let records = txn.as_ref().map_or(0, |t| t.timestamps.len());
        tracing::warn!(error = %failure, records, "transaction failed; aborting and rewinding to the last commit");
        self.signals.transaction_trouble(failure.to_string());
        // A failed delivery is the cause; a send refused after it only
        // says that the transaction is already in error.
        let number = txn.as_ref().map_or(0, |t| t.number);
        let culprit = self.factory.failures.take_of(number).or(match &failure {
            Failure::Produce { topic, error } => Some((topic.clone(), error.clone())),
            // TxnOffsetCommit refused: the group, not a topic. The consumer
            // may go on fetching (its heartbeats fail only later), so the
            // sink must not retry it for ever.
            Failure::Transaction(e)
                if e.rdkafka_error_code() == Some(RDKafkaErrorCode::GroupAuthorizationFailed) =>
            {
                Some((self.config.group_id.clone(), e.clone()))
            }
            // A partition refused as it joined the transaction
            // (AddPartitionsToTxn: Describe without Write, say) fails the
            // transaction without naming its topic, and its records are
            // purged, not failed: lay it on the output topics the broker
            // says may not be written. (A refused offset commit also names
            // no topic; it is not an output topic's, and the source names
            // the input topic it may not read.)
            Failure::Transaction(e) => txn
                .as_ref()
                .filter(|_| {
                    e.rdkafka_error_code().is_some_and(permanent)
                        && e.to_string().contains("add partition")
                })
                .map(|t| (self.suspects(t), e.clone())),
            _ => None,
        });
        if let Failure::Unanswered(_) | Failure::OffsetsUnanswered(_) = &failure {
            self.replace_producer(&failure)?;
            // The old transaction is settled now, one way or the other
            // (aborted, if its commit was never asked for).
            if let Failure::Unanswered(_) = &failure
                && let Some(txn) = txn
                && self.landed(&txn)?
            {
                tracing::info!(
                    records,
                    "the unanswered commit had landed; going on from it"
                );
                self.finish_commit(txn, started);
                return Ok(BarrierOutcome::Committed);
            }
        } else if txn.is_some() {
            match self.abort_with_retries() {
                Ok(()) => {}
                // An abort after a refused partition can itself be refused
                // (INVALID_TXN_STATE when nothing of the transaction was
                // registered), fatal for the producer: the refusal is the
                // cause, and the restart would meet it again.
                Err(SinkError::Fatal(e)) => {
                    return Err(culprit
                        .and_then(|(topic, error)| refused(topic, error, 1))
                        .unwrap_or(SinkError::Fatal(e)));
                }
                Err(_) => self.replace_producer(&failure)?,
            }
        }
        // Purged by the abort: these reports say nothing about the cause.
        self.factory.failures.clear();
        self.generation += 1;
        // The source may already be gone (shutdown); then nothing needs rewinding.
        let _ = self.links.rewinds.send(self.generation);
        if records > 0 {
            self.count_abort();
        }
        self.check_writable(culprit)?;
        Ok(BarrierOutcome::Aborted)
    }

    /// Whether a transaction whose commit went unanswered committed after
    /// all, once a new producer has settled it (its `init_transactions`
    /// returns only then), read from the transaction's own output (see
    /// [`outcome`]). Local positions cannot say: they move only on an
    /// answered commit, and rewinding to them after a commit that landed
    /// would score its records twice.
    fn landed(&self, txn: &OpenTransaction) -> Result<bool, SinkError> {
        let witness = match self.factory.witness.of(txn.number) {
            Acknowledged::Witness(witness) => witness,
            // None of its records was acknowledged, and the producer asks
            // for a commit only once all of them are: it cannot have landed.
            Acknowledged::Nothing => return Ok(false),
            // Nothing to read back: the group is all there is to ask.
            Acknowledged::WithoutOffset => {
                tracing::warn!(
                    "the unanswered transaction's records were acknowledged without offsets; asking the group coordinator whether it landed"
                );
                return (self.group_says_landed(txn, self.config.timeout))
                    .ok_or(SinkError::Outcome(OutcomeError::NoWitness));
            }
        };
        let patience = self.config.transaction_timeout + self.config.timeout * 2;
        let landed = outcome::committed(
            &self.config.outcome_reader,
            &witness,
            self.config.timeout,
            patience,
        )?;
        // For the log only, so briefly: the sink is not turning meanwhile.
        let brief = self.config.timeout.min(Duration::from_secs(5));
        if let Some(group) = self.group_says_landed(txn, brief)
            && group != landed
        {
            tracing::warn!(
                output_shows_committed = landed,
                group_shows_committed = group,
                topic = %witness.topic,
                partition = witness.partition,
                offset = witness.offset,
                "the group coordinator's offsets disagree with the transaction's output about an unanswered commit; going by the output (a coordinator failing over can answer stale)"
            );
        }
        Ok(landed)
    }

    /// What the group coordinator's committed offsets say of `txn`: in a
    /// cluster failing over it has answered with the commit before one that
    /// landed, so it decides only when the output cannot. None when it does
    /// not answer within `wait`, or answers a mix (a transaction commits all
    /// its offsets or none).
    fn group_says_landed(&self, txn: &OpenTransaction, wait: Duration) -> Option<bool> {
        let mut partitions = TopicPartitionList::with_capacity(txn.offsets.len());
        for (topic, partition) in txn.offsets.keys() {
            partitions.add_partition(topic, *partition);
        }
        let committed = self.links.group.committed_offsets(partitions, wait).ok()?;
        if self.links.faults.take_stale_group_answer() {
            return Some(false);
        }
        let (mut reached, mut short) = (0, 0);
        for e in committed.elements() {
            e.error().ok()?;
            let want = txn
                .offsets
                .get(&(Arc::from(e.topic()), e.partition()))
                .copied()
                .unwrap_or(i64::MAX);
            match e.offset() {
                Offset::Offset(o) if o >= want => reached += 1,
                _ => short += 1,
            }
        }
        match (reached, short) {
            (_, 0) => Some(true),
            (0, _) => Some(false),
            _ => None,
        }
    }

    fn count_abort(&self) {
        self.stats.aborted_transaction();
        self.signals.aborted();
    }

    /// Counts aborts in a row caused by the same permanent error on the same
    /// topic; past [`UNWRITABLE_AFTER`] the sink stops with that topic and error.
    fn check_writable(&mut self, culprit: Option<(String, KafkaError)>) -> Result<(), SinkError> {
        let Some((topic, error)) = culprit else {
            self.unwritable = None;
            return Ok(());
        };
        let Some(code) = error.rdkafka_error_code().filter(|c| permanent(*c)) else {
            self.unwritable = None;
            return Ok(());
        };
        let attempts = match &self.unwritable {
            Some((t, c, n)) if *t == topic && *c == code => n + 1,
            _ => 1,
        };
        self.unwritable = Some((topic.clone(), code, attempts));
        if attempts >= UNWRITABLE_AFTER
            && let Some(stop) = refused(topic, error, attempts)
        {
            return Err(stop);
        }
        Ok(())
    }

    /// An inference worker failed: abort what is open (its offsets must not
    /// be committed: the batch that failed, and the partitions the source
    /// may have given up without a barrier, are in it) and stop.
    fn abort_after_stage_failure(&mut self) -> SinkError {
        if self.open.take().is_some() {
            self.signals.set_transaction_open(false);
            if let Err(e) = self.abort_with_retries() {
                // The process exits next; init_transactions at the next start aborts it.
                tracing::warn!(error = %e, "aborting after the inference failure failed too");
            }
            self.count_abort();
        }
        SinkError::StageFailed
    }

    /// Makes a new transactional producer with the same transactional.id and
    /// initialises it, which fences the old one; then drops the old one.
    fn replace_producer(&mut self, why: &Failure) -> Result<(), SinkError> {
        tracing::warn!(
            cause = %why,
            "replacing the transactional producer: the new one fences the old, and the broker aborts what the old one left open"
        );
        let producer = self.factory.create().map_err(SinkError::ReplaceProducer)?;
        let started = Instant::now();
        let patience = self.config.transaction_timeout.max(self.config.timeout * 2);
        let mut attempts = 0u32;
        // No beat in this loop: a sink waiting for a broker to take a new
        // producer is not turning, and liveness should see it (the loop ends
        // within the transaction timeout either way).
        loop {
            attempts += 1;
            match producer.init_transactions(self.config.timeout) {
                Ok(()) => break,
                Err(e) if fatal(&e) => return Err(SinkError::Fatal(e)),
                Err(e) if started.elapsed() < patience => {
                    tracing::warn!(error = %e, attempts, "the new producer cannot initialise transactions yet; retrying");
                }
                Err(e) => return Err(SinkError::ReplaceProducer(e)),
            }
        }
        // Fenced now: what the old one still had in flight fails at once
        // (or, held by a call to send offsets that was given up, when that
        // call returns: its late reports carry their transaction's number).
        drop(std::mem::replace(&mut self.producer, Arc::new(producer)));
        // Failures of the old producer belong to the transaction just ended.
        self.factory.failures.clear();
        self.stats.producer_replaced();
        tracing::info!(attempts, "transactional producer replaced");
        Ok(())
    }

    /// Sends the offsets into the transaction on a thread of its own and
    /// waits for it `kafka.request_timeout_ms` and [`OFFSETS_GRACE`]; None
    /// if it did not return by then.
    ///
    /// Why a thread: librdkafka can keep this call past its timeout for ever
    /// once the group coordinator has gone away (#5456: a coordinator
    /// request is never timed out; #5511: a coordinator that left the
    /// metadata is never looked up again). On the sink's own thread that
    /// parked the sink, and every partition, until the liveness probes
    /// restarted the processor (a silent minute in the three-node cluster's
    /// single-node kills). Given up, the call keeps its producer alive until
    /// it returns; a second one given up while the first still has not
    /// returned stops the sink, so at most one producer is left behind.
    fn send_offsets(
        &mut self,
        offsets: TopicPartitionList,
        group: rdkafka::consumer::ConsumerGroupMetadata,
    ) -> Result<Option<rdkafka::error::KafkaResult<()>>, SinkError> {
        let producer = self.producer.clone();
        let timeout = self.config.timeout;
        let returned = Arc::new(AtomicBool::new(false));
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        let call = std::thread::Builder::new()
            .name("sink-offsets".into())
            .spawn({
                let returned = returned.clone();
                move || {
                    let result = producer.send_offsets_to_transaction(&offsets, &group, timeout);
                    // Before the producer is let go, which can take a
                    // while when this was its last reference.
                    returned.store(true, Ordering::SeqCst);
                    let _ = answer.send(result);
                }
            })
            .map_err(SinkError::Thread)?;
        let waited = timeout + OFFSETS_GRACE;
        match answered.recv_timeout(waited) {
            Ok(result) => {
                // It ends right after answering; joined, its reference to
                // the producer is gone before the sink may replace it.
                let _ = call.join();
                Ok(Some(result))
            }
            Err(RecvTimeoutError::Disconnected) => Err(SinkError::OffsetsPanicked),
            Err(RecvTimeoutError::Timeout) => {
                if let Some((given_up, earlier)) = &self.offsets_in_limbo
                    && !earlier.load(Ordering::SeqCst)
                {
                    return Err(SinkError::OffsetsInLimbo {
                        waited,
                        earlier: given_up.elapsed(),
                    });
                }
                tracing::warn!(
                    waited_ms = waited.as_millis() as u64,
                    "send_offsets_to_transaction did not return (librdkafka #5456: the group coordinator is gone); giving it up"
                );
                self.offsets_in_limbo = Some((Instant::now(), returned));
                Ok(None)
            }
        }
    }

    fn commit_with_retries(&self) -> rdkafka::error::KafkaResult<()> {
        let mut attempts = 0;
        loop {
            match self.producer.commit_transaction(self.config.timeout) {
                Err(e) if retriable(&e) && attempts < 3 => {
                    attempts += 1;
                    tracing::warn!(error = %e, attempts, "retrying the transaction commit");
                    self.signals
                        .transaction_trouble(format!("retrying the commit: {e}"));
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

    /// The output topics `txn` wrote that the broker says this principal
    /// may not write (its authorized operations, KIP-430); every topic it
    /// wrote when the broker will not say. As one name or "a or b".
    fn suspects(&self, txn: &OpenTransaction) -> String {
        let written = self.topics_written(txn);
        let names: Vec<&str> = written.iter().map(String::as_str).collect();
        let refused: Vec<&str> =
            authorized::topic_operations(self.producer.client(), &names, self.config.timeout)
                .map(|granted| {
                    names
                        .iter()
                        .copied()
                        .filter(|t| {
                            granted
                                .get(*t)
                                .is_some_and(|ops| !ops.contains(&Operation::WRITE))
                        })
                        .collect()
                })
                .unwrap_or_default();
        if refused.is_empty() {
            names.join(" or ")
        } else {
            refused.join(" or ")
        }
    }

    fn topics_written(&self, txn: &OpenTransaction) -> Vec<String> {
        let mut topics = Vec::new();
        if txn.scored > 0 {
            topics.push(self.config.score_topic.clone());
            topics.extend(self.config.shadow_topic.clone());
        }
        if txn.dead.values().any(|n| *n > 0) {
            topics.push(self.config.dead_letter_topic.clone());
        }
        topics
    }

    /// Everything that follows a commit that landed.
    fn finish_commit(&mut self, txn: OpenTransaction, started: Instant) {
        self.committed(&txn, started);
        self.signals.lag.committed(
            txn.offsets
                .iter()
                .map(|((topic, partition), next)| (&**topic, *partition, *next)),
        );
        self.links.positions.record(txn.offsets);
        self.unwritable = None;
        // Up quickly, down slowly: the estimate follows the slow
        // commits (the tail) more than the typical one.
        let took = started.elapsed();
        self.commit_estimate = if took > self.commit_estimate {
            (self.commit_estimate + took) / 2
        } else {
            (self.commit_estimate * 9 + took) / 10
        };
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
        self.signals.set_transaction_open(false);
        self.signals.committed();
        self.stats.timed(Step::Commit, took);
        (self.stats).committed_transaction(txn.scored, txn.dead.iter().map(|(r, n)| (*r, *n)));
        self.stats.shadow_compared(&txn.shadow);
        let now = unix_ms();
        self.stats.end_to_end(
            (txn.timestamps.iter()).map(|&ts| Duration::from_millis((now - ts).max(0) as u64)),
        );
    }
}

/// Sends every record that lingers and waits until each is acknowledged (the
/// producer's own thread serves the delivery reports), or until `patience`
/// runs out.
///
/// Why librdkafka's own flush, called here: it marks the producer as
/// flushing, so the broker threads send what `linger.ms` holds at once, and
/// it waits on the message count's condition variable rather than polling.
/// A commit is the moment a transaction's records must go, so the producer
/// can linger long between commits (fewer, larger produce requests: the CPU
/// a light load costs) without adding the linger to any commit.
///
/// Why not leave it to `commit_transaction`: rust-rdkafka's flush inside it
/// calls librdkafka's with no wait and then polls the event queue in 100 ms
/// steps, and with a `ThreadedProducer` the background thread takes the
/// delivery events first, so every commit with records in flight slept a
/// whole 100 ms step. Flushing here first makes that flush a no-op.
pub fn await_deliveries<C: ProducerContext + 'static>(
    producer: &ThreadedProducer<C>,
    patience: Duration,
) {
    let millis = i32::try_from(patience.as_millis()).unwrap_or(i32::MAX);
    let rk = producer.client().native_ptr();
    // SAFETY: `rk` is the live handle of `producer`, borrowed for this call.
    // rd_kafka_flush is thread safe; the producer delivers reports as events
    // (rust-rdkafka sets RD_KAFKA_EVENT_DR), so it only waits for the
    // message count to reach zero while `producer`'s own thread serves the
    // events, and never polls the queue that thread owns. A timeout is not
    // an error here: the commit that follows reports what did not arrive.
    unsafe {
        rdkafka::bindings::rd_kafka_flush(rk, millis);
    }
}

/// Enqueues a record, waiting while librdkafka's queue is full, but not
/// forever: a queue that does not drain within `patience` means the producer
/// cannot deliver, and the transaction had better abort than hang.
fn send(
    producer: &SinkProducer,
    mut record: Record<'_>,
    patience: Duration,
) -> Result<(), KafkaError> {
    let started = Instant::now();
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                if started.elapsed() > patience {
                    return Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull));
                }
                record = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

fn produce_failure(topic: &str) -> impl FnOnce(KafkaError) -> Failure + '_ {
    move |error| Failure::Produce {
        topic: topic.to_owned(),
        error,
    }
}

/// Errors that retrying the same record cannot cure: the topic does not
/// exist, may not be written, or refuses the record.
fn permanent(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::PolicyViolation
    )
}

/// The stop a permanent refusal of `resource` (a topic, or the group)
/// calls for, in the words of what is missing; None for an error that is
/// not permanent.
fn refused(resource: String, error: KafkaError, attempts: u32) -> Option<SinkError> {
    let code = error.rdkafka_error_code().filter(|c| permanent(*c))?;
    Some(match code {
        RDKafkaErrorCode::GroupAuthorizationFailed => SinkError::GroupUnauthorized {
            group: resource,
            error,
            attempts,
        },
        RDKafkaErrorCode::TopicAuthorizationFailed => SinkError::WriteUnauthorized {
            topic: resource,
            error,
            attempts,
        },
        _ => SinkError::Unwritable {
            topic: resource,
            error,
            attempts,
        },
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purged_deliveries_are_not_taken_for_the_cause_of_an_abort() {
        let failures = DeliveryFailures::default();
        let purged = KafkaError::MessageProduction(RDKafkaErrorCode::PurgeInflight);
        failures.note(1, "scores", &purged);
        assert!(
            failures.take_of(1).is_none(),
            "a purge is the abort's doing"
        );
        let refused = KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed);
        failures.note(1, "dlq", &refused);
        failures.note(1, "scores", &purged);
        let (topic, error) = failures.take_of(1).expect("the first real failure is kept");
        assert_eq!(topic, "dlq");
        assert_eq!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::TopicAuthorizationFailed)
        );
    }

    #[test]
    fn a_late_failure_of_an_earlier_transaction_is_never_a_later_ones_cause() {
        let failures = DeliveryFailures::default();
        let fenced = KafkaError::MessageProduction(RDKafkaErrorCode::InvalidProducerEpoch);
        let refused = KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed);
        failures.note(2, "dlq", &refused);
        failures.note(1, "scores", &fenced);
        let (topic, _) = failures.take_of(2).expect("transaction 2's own failure");
        assert_eq!(topic, "dlq");
        failures.note(1, "scores", &fenced);
        assert!(failures.take_of(2).is_none(), "only a late report of 1");
    }
}
