//! The source stage: one thread that polls the consumer, turns each record
//! into an [`Item`] (transform), groups items into batches and hands them on
//! in order. It also answers the sink's rewinds and, before partitions are
//! revoked, makes the sink commit everything read from them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::batcher::Batcher;
use crate::clock::unix_ms;
use crate::item::{Barrier, BarrierOutcome, Batch, Item, Outcome, SourceRef};
use crate::kafka::positions::{CommittedPositions, ReadSpans};
use crate::pipeline::fan::{Closed, FanOut};
use crate::telemetry::lag::Read;
use crate::telemetry::signals::{PipelineSignals, Stage};
use crate::telemetry::{self, Stats};
use crate::transform::Transform;

/// The consumer this stage polls; shared with the sink for group metadata.
pub(crate) type SourceConsumer = BaseConsumer<SourceContext>;

/// Longest the loop sleeps in `poll` before checking for stop and rewinds.
const IDLE_POLL: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("Kafka consumer failed fatally: {0}")]
    Fatal(KafkaError),
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
    row: Vec<f32>,
    stats: Arc<Stats>,
    signals: Arc<PipelineSignals>,
    timeout: Duration,
    /// What has been read since the last rewind, and what the sink has
    /// committed: together they say what a rewind must seek, and where.
    spans: ReadSpans,
    positions: Arc<CommittedPositions>,
}

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
            row: Vec::with_capacity(transform.width()),
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
        }
    }

    fn on_message(&mut self, m: &BorrowedMessage<'_>) -> Result<(), Closed> {
        let source = SourceRef {
            topic: self.spans.read(m.topic(), m.partition(), m.offset()),
            partition: m.partition(),
            offset: m.offset(),
        };
        let now = Instant::now();
        self.signals.record_read(now);
        let timestamp_ms = m.timestamp().to_millis().unwrap_or_else(unix_ms);
        // Each record is consumed once; what a rewind reads again is a re-read.
        let read =
            (self.signals.lag).read(&source.topic, source.partition, source.offset, timestamp_ms);
        self.stats.read(read == Read::First);
        self.row.clear();
        let (outcome, has_row) = match self.transform.apply(m.payload(), m.key(), &mut self.row) {
            Ok(meta) => (Outcome::Row(meta), true),
            Err(rejection) => (
                Outcome::Dead {
                    rejection,
                    value: m.payload().map(<[u8]>::to_vec),
                },
                false,
            ),
        };
        let item = Item {
            source,
            key: m.key().map(<[u8]>::to_vec),
            timestamp_ms,
            outcome,
        };
        let features = has_row.then_some(self.row.as_slice());
        match self.batcher.push(item, features, self.generation, now) {
            Some(batch) => self.dispatch.send(batch),
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
        match self.batcher.deadline() {
            Some(due) => due.saturating_duration_since(Instant::now()).min(IDLE_POLL),
            None => IDLE_POLL,
        }
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
}

impl SourceContext {
    pub(crate) fn new(stage: SourceStage, signals: Arc<PipelineSignals>) -> Self {
        Self {
            stats: stage.stats.clone(),
            stage: Mutex::new(stage),
            signals,
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
            let message = consumer.poll(wait);
            let mut stage = context.lock();
            let sent = match message {
                None => Ok(()),
                Some(Ok(m)) => stage.on_message(&m),
                Some(Err(e)) => {
                    report_poll_error(&consumer, &e)?;
                    Ok(())
                }
            };
            if sent.is_err() {
                tracing::warn!("downstream stages stopped; the source stops too");
                return Ok(());
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

fn report_poll_error(consumer: &SourceConsumer, e: &KafkaError) -> Result<(), SourceError> {
    // Some fatal errors arrive with their own code (e.g. FencedInstanceId when
    // another instance took our group.instance.id); the client knows it is dead.
    if let Some((code, reason)) = consumer.client().fatal_error() {
        tracing::error!(%code, %reason, "the consumer failed fatally; stopping");
        return Err(SourceError::Fatal(e.clone()));
    }
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::Fatal) => Err(SourceError::Fatal(e.clone())),
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
