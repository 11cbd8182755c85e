//! The source stage: one thread that polls the consumer, turns each record
//! into an [`Item`] (transform), groups items into batches and hands them on
//! in order. It also answers the sink's rewinds and, before partitions are
//! revoked, makes the sink commit everything read from them.
//!
//! Each wake drains what the consumer holds (up to [`DRAIN_MAX`] records)
//! before transforming any of it, so that opening and decoding a large
//! drain can be spread over the machine's cores (a rayon pool) while the
//! records keep their order: the batcher takes them one by one, in the
//! order read. A rebalance callback runs inside `poll`, in the middle of a
//! drain; it transforms what was drained so far before its barrier, so the
//! barrier still covers every record read.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::batcher::Batcher;
use crate::clock::unix_ms;
use crate::codec::registry_writers::WriterError;
use crate::features::FeatureRows;
use crate::item::{Barrier, BarrierOutcome, Batch, EventMeta, Item, Outcome, SourceRef};
use crate::kafka::positions::{CommittedPositions, ReadSpans};
use crate::pipeline::fan::{Closed, FanOut};
use crate::telemetry::lag::Read;
use crate::telemetry::signals::{PipelineSignals, Stage};
use crate::telemetry::{self, Stats};
use crate::transform::{Transform, Unscored};

/// The consumer this stage polls; shared with the sink for group metadata.
pub(crate) type SourceConsumer = BaseConsumer<SourceContext>;

/// Longest the loop sleeps in `poll` before checking for stop and rewinds.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// Most records taken from the consumer in one wake before they are
/// transformed and batched.
const DRAIN_MAX: usize = 512;

/// Fewest drained records worth handing to the worker pool: below this,
/// waking the pool costs more than it saves.
const PARALLEL_FROM: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("Kafka consumer failed fatally: {0}")]
    Fatal(KafkaError),
    /// A record's writer schema could not be had: it was not read past,
    /// and the restart reads it again.
    #[error("{0}; stopping so that the restart reads the record again")]
    Schema(Box<WriterError>),
    /// The principal lacks an ACL the consumer needs: retrying cannot help.
    #[error("{0}")]
    Unauthorized(String),
    #[error("cannot rewind to the last committed offsets: {0}")]
    Rewind(KafkaError),
    #[error("cannot rewind {topic} [{partition}] to offset {offset}: {error}")]
    Seek {
        topic: String,
        partition: i32,
        offset: i64,
        error: KafkaError,
    },
}

/// State of the source stage, reachable from the loop and from the rebalance callback.
pub(crate) struct SourceStage {
    transform: Transform,
    batcher: Batcher,
    dispatch: FanOut,
    generation: u64,
    rewinds: Receiver<u64>,
    row: FeatureRows,
    stats: Arc<Stats>,
    signals: Arc<PipelineSignals>,
    timeout: Duration,
    /// What has been read since the last rewind, and what the sink has
    /// committed: together they say what a rewind must seek, and where.
    spans: ReadSpans,
    positions: Arc<CommittedPositions>,
    /// Records read in this wake, not yet transformed.
    drained: Vec<Drained>,
    /// Opens and decodes large drains on every core; `None` on one core.
    workers: Option<rayon::ThreadPool>,
    /// Set when a record's writer schema could not be had: nothing after
    /// it may be batched (its offset would commit past the record), and
    /// the loop stops.
    halted: Option<WriterError>,
}

/// Why the source stage hands nothing more on.
enum Halt {
    /// A downstream stage is gone.
    Closed,
    /// A record's writer schema could not be had.
    Schema,
}

impl From<Closed> for Halt {
    fn from(_: Closed) -> Self {
        Self::Closed
    }
}

/// A record taken from the consumer, owned: the consumer's own message is
/// borrowed from the poll, and the next poll may run a rebalance callback
/// that must transform this record before its barrier.
struct Drained {
    source: SourceRef,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    timestamp_ms: i64,
    read_at: Instant,
}

/// What the transform made of a drained record: its identity, or why it
/// goes to the dead-letter topic (or cannot be decided now); the row is in
/// the caller's buffer.
type Transformed = Result<EventMeta, Unscored>;

/// What the source stage shares with the rest of the pipeline.
pub(crate) struct SourceLinks {
    pub rewinds: Receiver<u64>,
    pub positions: Arc<CommittedPositions>,
    pub stats: Arc<Stats>,
    pub signals: Arc<PipelineSignals>,
}

impl SourceStage {
    pub(crate) fn new(
        batcher: Batcher,
        transform: Transform,
        dispatch: FanOut,
        links: SourceLinks,
        timeout: Duration,
    ) -> Self {
        Self {
            row: FeatureRows {
                numbers: Vec::with_capacity(transform.width()),
                texts: Vec::new(),
            },
            transform,
            batcher,
            dispatch,
            generation: 0,
            rewinds: links.rewinds,
            stats: links.stats,
            signals: links.signals,
            timeout,
            spans: ReadSpans::default(),
            positions: links.positions,
            drained: Vec::with_capacity(DRAIN_MAX),
            workers: transform_workers(),
            halted: None,
        }
    }

    /// Takes a record from the consumer: counted as read now, transformed
    /// with the rest of the drain by [`Self::transform_drained`].
    fn take(&mut self, m: &BorrowedMessage<'_>) {
        let source = SourceRef {
            topic: self.spans.read(m.topic(), m.partition(), m.offset()),
            partition: m.partition(),
            offset: m.offset(),
        };
        let read_at = Instant::now();
        self.signals.record_read(read_at);
        let timestamp_ms = m.timestamp().to_millis().unwrap_or_else(unix_ms);
        // Each record is consumed once; what a rewind reads again is a re-read.
        let read =
            (self.signals.lag).read(&source.topic, source.partition, source.offset, timestamp_ms);
        self.stats.read(read == Read::First);
        self.drained.push(Drained {
            source,
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            timestamp_ms,
            read_at,
        });
    }

    /// Opens and decodes the drained records (on the worker pool when
    /// there are enough of them) and batches them in the order read.
    fn transform_drained(&mut self) -> Result<(), Halt> {
        if self.halted.is_some() {
            // Read after the record that halted the stage: read again at the restart.
            self.drained.clear();
            return Err(Halt::Schema);
        }
        if self.drained.is_empty() {
            return Ok(());
        }
        let mut drained = std::mem::take(&mut self.drained);
        let result = match &self.workers {
            Some(pool) if drained.len() >= PARALLEL_FROM => {
                let transform = &self.transform;
                let width = transform.width();
                let done: Vec<(Transformed, FeatureRows)> = pool.install(|| {
                    drained
                        .par_iter()
                        // A share under this is not worth waking a thread for.
                        .with_min_len(PARALLEL_FROM / 2)
                        .map(|d| {
                            let mut row = FeatureRows {
                                numbers: Vec::with_capacity(width),
                                texts: Vec::new(),
                            };
                            let meta =
                                transform.apply(d.payload.as_deref(), d.key.as_deref(), &mut row);
                            (meta, row)
                        })
                        .collect()
                });
                drained
                    .drain(..)
                    .zip(done)
                    .try_for_each(|(d, (meta, row))| self.push(d, meta, &row))
            }
            _ => drained.drain(..).try_for_each(|d| {
                let mut row = std::mem::take(&mut self.row);
                row.clear();
                let meta = self
                    .transform
                    .apply(d.payload.as_deref(), d.key.as_deref(), &mut row);
                let pushed = self.push(d, meta, &row);
                self.row = row;
                pushed
            }),
        };
        // Keep the buffer's capacity for the next drain.
        drained.clear();
        self.drained = drained;
        result
    }

    fn push(&mut self, d: Drained, meta: Transformed, row: &FeatureRows) -> Result<(), Halt> {
        let (outcome, features) = match meta {
            Ok(meta) => (Outcome::Row(meta), Some(row)),
            Err(Unscored::SchemaUnavailable(e)) => {
                tracing::error!(
                    topic = %d.source.topic,
                    partition = d.source.partition,
                    offset = d.source.offset,
                    "{e}"
                );
                self.halted = Some(e);
                return Err(Halt::Schema);
            }
            Err(Unscored::Rejected(rejection)) => (
                Outcome::Dead {
                    rejection,
                    value: d.payload,
                },
                None,
            ),
        };
        let item = Item {
            source: d.source,
            key: d.key,
            timestamp_ms: d.timestamp_ms,
            outcome,
        };
        match self
            .batcher
            .push(item, features, self.generation, d.read_at)
        {
            Some(batch) => Ok(self.dispatch.send(batch)?),
            None => Ok(()),
        }
    }

    fn on_tick(&mut self, now: Instant) -> Result<(), Closed> {
        match self.batcher.poll(now) {
            Some(batch) => self.dispatch.send(batch),
            None => Ok(()),
        }
    }

    fn poll_timeout(&self) -> Duration {
        poll_wait(self.batcher.deadline(), Instant::now())
    }

    /// After the sink aborted: drop what is batched, adopt the new generation
    /// and seek back the partitions read from since the last rewind, each to
    /// the offset after its last commit (see [`ReadSpans::rewind_targets`]).
    /// Partitions with nothing uncommitted are left alone: a partition just
    /// assigned may still be fetching its committed offset, and librdkafka
    /// refuses to seek it.
    fn apply_rewinds(&mut self, consumer: &SourceConsumer) -> Result<(), SourceError> {
        let Some(generation) = self.rewinds.try_iter().last() else {
            return Ok(());
        };
        self.batcher.discard();
        self.generation = generation;
        let targets = self.spans.rewind_targets(&self.positions);
        if targets.is_empty() {
            // What was waiting for a commit is gone (revoked with the
            // abort): nothing waits now.
            self.signals.reads_dropped();
            tracing::info!(
                generation,
                "nothing read since the last commit; no rewind needed"
            );
            return Ok(());
        }
        let mut positions = TopicPartitionList::new();
        for ((topic, partition), offset) in &targets {
            positions
                .add_partition_offset(topic, *partition, Offset::Offset(*offset))
                .map_err(SourceError::Rewind)?;
        }
        let result = consumer
            .seek_partitions(positions, self.timeout)
            .map_err(SourceError::Rewind)?;
        for e in result.elements() {
            if let Err(error) = e.error() {
                return Err(SourceError::Seek {
                    topic: e.topic().to_owned(),
                    partition: e.partition(),
                    offset: e.offset().to_raw().unwrap_or(-1),
                    error,
                });
            }
        }
        tracing::info!(
            generation,
            partitions = targets.len(),
            "rewound to the last committed offsets after an abort"
        );
        Ok(())
    }

    /// Partitions given up: their reads are the next owner's to repeat.
    fn forget(&mut self, revoked: &TopicPartitionList) {
        self.spans.forget(revoked);
        self.positions.forget(revoked);
    }
}

/// Consumer callbacks: rebalances commit before partitions go and say at
/// once what is owned; statistics feed reachability and the lag table.
pub(crate) struct SourceContext {
    stage: Mutex<SourceStage>,
    signals: Arc<PipelineSignals>,
    stats: Arc<Stats>,
    /// For a refusal that names the group.
    group_id: String,
}

impl SourceContext {
    pub(crate) fn new(stage: SourceStage, signals: Arc<PipelineSignals>, group_id: String) -> Self {
        Self {
            stats: stage.stats.clone(),
            stage: Mutex::new(stage),
            signals,
            group_id,
        }
    }

    fn lock(&self) -> MutexGuard<'_, SourceStage> {
        // Only the source thread takes this lock; poisoning would mean it panicked already.
        self.stage.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Flushes the open batch and waits until the sink has committed (or
    /// aborted) everything handed on so far. None when the sink is gone.
    fn commit_barrier(&self) -> Option<BarrierOutcome> {
        let done = {
            let mut stage = self.lock();
            if stage.dispatch.is_closed() {
                return None;
            }
            // Called inside a poll, mid-drain: what was drained is read, so
            // it must be in this barrier's transaction. After a record whose
            // schema could not be had, what was batched before it (in order,
            // so no partition's offset passes it) is still committed here:
            // the partitions may be leaving, and their open records with them.
            match stage.transform_drained() {
                Ok(()) | Err(Halt::Schema) => {}
                Err(Halt::Closed) => return None,
            }
            if let Some(batch) = stage.batcher.flush() {
                stage.dispatch.send(batch).ok()?;
            }
            let (tx, rx) = sync_channel(1);
            let generation = stage.generation;
            stage
                .dispatch
                .send(Batch::barrier_only(generation, Barrier { done: tx }))
                .ok()?;
            rx
        };
        done.recv().ok()
    }
}

impl ClientContext for SourceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.signals.set_broker_reachable(false);
        }
        tracing::error!("librdkafka: {error}: {reason}");
    }

    fn stats(&self, statistics: Statistics) {
        // Reachability, group state, and the lag table's offsets.
        self.signals.observe(&statistics);
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                // Lost (the session timed out, or the group fenced us): the
                // partitions may be another member's already, so the sink
                // aborts what was read from them (it checks the same flag).
                let lost = consumer.assignment_lost();
                let outcome = self.commit_barrier();
                self.lock().forget(tpl);
                self.signals.lag.revoke(tpl);
                self.stats.rebalanced(if lost {
                    telemetry::Rebalance::Lost
                } else {
                    telemetry::Rebalance::Revoked
                });
                self.signals
                    .assignment_changed(self.signals.lag.assigned(), false);
                // Say what really happened: committed, aborted (to be read
                // again by the next owner), or no sink left to ask.
                match outcome {
                    Some(BarrierOutcome::Committed) => tracing::info!(
                        partitions = tpl.count(),
                        "partitions revoked after committing what was read from them"
                    ),
                    Some(BarrierOutcome::NothingOpen)
                        if self.signals.view().consecutive_aborts > 0 =>
                    {
                        tracing::warn!(
                            partitions = tpl.count(),
                            "partitions revoked; the last transaction aborted and nothing was read since: the next owner reads them again"
                        )
                    }
                    Some(BarrierOutcome::NothingOpen) => tracing::info!(
                        partitions = tpl.count(),
                        "partitions revoked after committing what was read from them (all of it was committed already)"
                    ),
                    Some(BarrierOutcome::Aborted) if lost => tracing::warn!(
                        partitions = tpl.count(),
                        "partitions lost; aborted what was read from them, the next owner reads it again"
                    ),
                    Some(BarrierOutcome::Aborted) => tracing::warn!(
                        partitions = tpl.count(),
                        "partitions revoked after aborting the open transaction; the next owner reads them again"
                    ),
                    // The pipeline has stopped (shutdown, or a stage failed):
                    // the sink commits nothing more once it is gone.
                    None => tracing::info!(
                        partitions = tpl.count(),
                        "partitions revoked after the pipeline stopped"
                    ),
                }
            }
            Rebalance::Assign(tpl) => {
                self.signals.lag.assign(tpl);
                self.stats.rebalanced(telemetry::Rebalance::Assigned);
                let owned = self.signals.lag.assigned();
                self.signals.assignment_changed(owned, true);
                tracing::info!(partitions = tpl.count(), owned, "partitions assigned")
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}

/// Runs the source loop until `stop` is set or a downstream stage is gone,
/// then commits what was read (shutdown barrier).
pub(crate) fn run(consumer: Arc<SourceConsumer>, stop: Arc<AtomicBool>) -> Result<(), SourceError> {
    let context = consumer.context();
    let result = (|| {
        while !stop.load(Ordering::Relaxed) {
            context.signals.beat(Stage::Source);
            let wait = context.lock().poll_timeout();
            let mut message = consumer.poll(wait);
            // Drain what the consumer already holds before transforming it.
            let mut taken = 0;
            while let Some(polled) = message {
                match polled {
                    Ok(m) => {
                        context.lock().take(&m);
                        taken += 1;
                    }
                    Err(e) => report_poll_error(&consumer, &e)?,
                }
                if taken >= DRAIN_MAX {
                    break;
                }
                message = consumer.poll(Duration::ZERO);
            }
            let mut stage = context.lock();
            match stage.transform_drained() {
                Ok(()) => {}
                Err(Halt::Closed) => {
                    tracing::warn!("downstream stages stopped; the source stops too");
                    return Ok(());
                }
                Err(Halt::Schema) => {
                    return match stage.halted.clone() {
                        // Asked to stop while a record waited: a clean stop;
                        // the record and those after it are read again.
                        Some(WriterError::Stopped(id)) => {
                            tracing::warn!(
                                schema_id = id,
                                "stopping while a record waits for the schema registry; the next start reads it again"
                            );
                            Ok(())
                        }
                        halted => Err(SourceError::Schema(Box::new(
                            halted.unwrap_or(WriterError::Stopped(0)),
                        ))),
                    };
                }
            }
            stage.apply_rewinds(&consumer)?;
            if stage.on_tick(Instant::now()).is_err() {
                return Ok(());
            }
        }
        Ok(())
    })();
    match context.commit_barrier() {
        Some(BarrierOutcome::Committed) => {
            tracing::info!("source stopped after a final commit")
        }
        Some(BarrierOutcome::NothingOpen) if context.signals.view().consecutive_aborts > 0 => {
            tracing::warn!(
                "source stopped; nothing was open, and the last transaction aborted: the next start reads it again"
            )
        }
        Some(BarrierOutcome::NothingOpen) => {
            tracing::info!("source stopped; nothing was waiting for a commit")
        }
        Some(BarrierOutcome::Aborted) => tracing::warn!(
            "source stopped; the final transaction aborted, the next start reads it again"
        ),
        None => tracing::info!("source stopped; the sink had already stopped"),
    }
    // The consumer (and this context) lives on until the pipeline is joined;
    // the workers must not wait for it.
    context.lock().dispatch.close();
    result
}

/// How long to wait in `poll` for the open batch's deadline: in whole
/// milliseconds, rounded up. librdkafka counts waits in milliseconds and
/// rdkafka truncates, so a wait of 0.7 ms was a poll of 0 ms in a loop until
/// the deadline: a core spinning for the last millisecond of every batch,
/// most of the CPU a record cost at light load.
fn poll_wait(deadline: Option<Instant>, now: Instant) -> Duration {
    let Some(due) = deadline else {
        return IDLE_POLL;
    };
    let left = due.saturating_duration_since(now);
    let ms = left.as_nanos().div_ceil(1_000_000);
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX)).min(IDLE_POLL)
}

/// The pool that opens and decodes large drains: one thread a core the
/// process may use, none where that is one.
fn transform_workers() -> Option<rayon::ThreadPool> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    if cores < 2 {
        return None;
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(cores)
        .thread_name(|i| format!("transform-{i}"))
        .build()
        .inspect_err(
            |e| tracing::warn!(error = %e, "no transform pool; the source thread transforms alone"),
        )
        .ok()
}

fn report_poll_error(consumer: &SourceConsumer, e: &KafkaError) -> Result<(), SourceError> {
    // Some fatal errors arrive with their own code (e.g. FencedInstanceId when
    // another instance took our group.instance.id); the client knows it is dead.
    if let Some((code, reason)) = consumer.client().fatal_error() {
        tracing::error!(%code, %reason, "the consumer failed fatally; stopping");
        return Err(SourceError::Fatal(e.clone()));
    }
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::Fatal) => Err(SourceError::Fatal(e.clone())),
        // Without its ACLs the consumer would retry for ever, scoring
        // nothing while every loop turns: say which one, and stop.
        Some(RDKafkaErrorCode::TopicAuthorizationFailed) => {
            let topics = consumer
                .subscription()
                .map(|s| {
                    s.elements()
                        .iter()
                        .map(|e| e.topic().to_owned())
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            Err(SourceError::Unauthorized(format!(
                "the principal may not Read input topic(s) {topics} (TOPIC_AUTHORIZATION_FAILED: {e}): grant Read on each, as `streamscore acls` prints"
            )))
        }
        Some(RDKafkaErrorCode::GroupAuthorizationFailed) => {
            Err(SourceError::Unauthorized(format!(
                "the principal may not Read group {} (GROUP_AUTHORIZATION_FAILED: {e}): grant Read on the group, as `streamscore acls` prints",
                consumer.context().group_id
            )))
        }
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
            tracing::error!(error = %e, "an input topic does not exist: create it, or fix input.topics");
            Ok(())
        }
        _ => {
            tracing::warn!(error = %e, "consumer error (librdkafka retries)");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_for_a_deadline_is_whole_milliseconds_rounded_up() {
        let now = Instant::now();
        let at = |us: u64| poll_wait(Some(now + Duration::from_micros(us)), now);
        // A fraction of a millisecond left: wait one, never zero (a spin).
        assert_eq!(at(300), Duration::from_millis(1));
        assert_eq!(at(1_700), Duration::from_millis(2));
        assert_eq!(at(5_000), Duration::from_millis(5));
        // Due already: poll without waiting, the batch goes out now.
        assert_eq!(poll_wait(Some(now), now), Duration::ZERO);
        assert_eq!(
            poll_wait(Some(now), now + Duration::from_millis(3)),
            Duration::ZERO
        );
        // Far off or nothing open: the idle wait.
        assert_eq!(at(3_000_000), IDLE_POLL);
        assert_eq!(poll_wait(None, now), IDLE_POLL);
    }
}
