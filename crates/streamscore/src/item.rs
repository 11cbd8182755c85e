//! What flows between the stages: consumed records, their outcome, batches.

use std::sync::Arc;
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use crate::dead_letter::Rejection;
use crate::features::FeatureRows;
use crate::pipeline::model_swap::ModelRelease;

/// Identity of an event, read next to its features; the score record repeats it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventMeta {
    pub event_id: String,
    pub event_time: i64,
}

/// Where a record was read from; the unit of exactly-once bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SourceRef {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
}

/// One consumed record on its way to the sink.
#[derive(Debug)]
pub(crate) struct Item {
    pub source: SourceRef,
    pub key: Option<Vec<u8>>,
    /// Kafka record timestamp (ms), the start of end-to-end latency.
    pub timestamp_ms: i64,
    pub outcome: Outcome,
}

#[derive(Debug)]
pub(crate) enum Outcome {
    /// Its features are a row of the batch; the score arrives with the batch.
    Row(EventMeta),
    /// Goes to the dead-letter topic with the original value.
    Dead {
        rejection: Rejection,
        /// The original record value, untouched (None for a tombstone).
        value: Option<Vec<u8>>,
    },
}

/// Asks the sink to commit everything before it and then answer: used before
/// partitions are given up (rebalance) and at shutdown.
#[derive(Debug)]
pub(crate) struct Barrier {
    pub done: SyncSender<BarrierOutcome>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BarrierOutcome {
    Committed,
    /// No transaction was open: nothing read was waiting for a commit.
    NothingOpen,
    /// The sink aborted; the records will be read again from the last commit.
    Aborted,
}

/// Items in consumption order, with the feature matrix of their `Row`s.
#[derive(Debug)]
pub(crate) struct Batch {
    /// Rewind generation the items were read in; the sink drops stale ones.
    pub generation: u64,
    pub items: Vec<Item>,
    /// Row-major features, `rows × width`, and the rows' string features.
    pub features: FeatureRows,
    pub rows: usize,
    /// One per row, filled by inference.
    pub scores: Vec<f32>,
    /// One per row from the challenger, when there is one (shadow scoring).
    pub shadow_scores: Vec<f32>,
    pub opened_at: Instant,
    /// The model release that scores it, stamped when the batch opened
    /// (`None` for a barrier alone, and in tests without models).
    pub model: Option<Arc<ModelRelease>>,
    /// When the batcher closed it (full, due, or flushed); the time after
    /// this, until inference starts, is queueing behind earlier batches.
    pub closed_at: Instant,
    /// How long its inference call took (zero until it is scored): with
    /// `closed_at - opened_at`, what the adaptive batch size is tuned on.
    pub inference: Duration,
    pub barrier: Option<Barrier>,
}

impl Batch {
    pub(crate) fn barrier_only(generation: u64, barrier: Barrier) -> Self {
        Batch {
            generation,
            items: Vec::new(),
            features: FeatureRows::default(),
            rows: 0,
            scores: Vec::new(),
            shadow_scores: Vec::new(),
            opened_at: Instant::now(),
            model: None,
            closed_at: Instant::now(),
            inference: Duration::ZERO,
            barrier: Some(barrier),
        }
    }
}
