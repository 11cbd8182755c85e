//! An inference worker: one thread, one session, batches in and out in order.

use std::sync::mpsc::{Receiver, SyncSender};
use std::time::Instant;

use crate::inference::{InferenceError, ModelSession};
use crate::item::Batch;
use crate::telemetry::metrics::{BATCH_SIZE, STAGE_DURATION, stage};

/// Scores every batch it receives and passes it on; returns when either side hangs up.
pub fn run(
    mut session: ModelSession,
    input: Receiver<Batch>,
    output: SyncSender<Batch>,
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
            inference.record(started.elapsed());
            batch_size.record(batch.rows as f64);
        }
        if output.send(batch).is_err() {
            break;
        }
    }
    Ok(())
}
