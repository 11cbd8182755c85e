//! An inference worker: one thread, one session, batches in and out in order.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::Instant;

use crate::batcher::AdaptiveSize;
use crate::inference::{InferenceError, ModelSession};
use crate::item::Batch;
use crate::telemetry::metrics::{BATCH_SIZE, STAGE_DURATION, stage};

/// Scores every batch it receives and passes it on; returns when either side
/// hangs up. In adaptive mode it reports each batch's fill + inference time,
/// which is what the batch size is tuned on.
pub fn run(
    mut session: ModelSession,
    input: Receiver<Batch>,
    output: SyncSender<Batch>,
    adaptive: Option<Arc<AdaptiveSize>>,
) -> Result<(), InferenceError> {
    let batch_wait = metrics::histogram!(STAGE_DURATION, "stage" => stage::BATCH_WAIT);
    let inference = metrics::histogram!(STAGE_DURATION, "stage" => stage::INFERENCE);
    let batch_size = metrics::histogram!(BATCH_SIZE);
    while let Ok(mut batch) = input.recv() {
        if batch.rows > 0 {
            let started = Instant::now();
            batch_wait.record(started - batch.opened_at);
            batch.scores.reserve_exact(batch.rows);
            session.score(&batch.features, batch.rows, &mut batch.scores)?;
            let done = Instant::now();
            inference.record(done - started);
            batch_size.record(batch.rows as f64);
            if let Some(a) = &adaptive {
                // Filling + inference, not queueing: a queue means the stages
                // after the batcher are behind, and smaller batches would
                // only make that worse (fewer rows per call, same overheads).
                a.observe(
                    batch.rows,
                    (batch.closed_at - batch.opened_at) + (done - started),
                );
            }
        }
        if output.send(batch).is_err() {
            break;
        }
    }
    Ok(())
}
