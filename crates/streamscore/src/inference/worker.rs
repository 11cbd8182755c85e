//! An inference worker: one thread, one session, batches in and out in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::Instant;

use crate::batcher::AdaptiveSize;
use crate::faults::Faults;
use crate::inference::{InferenceError, ModelSession};
use crate::item::Batch;
use crate::telemetry::{Stats, Step};

/// What a worker shares with the other stages.
#[derive(Clone)]
pub(crate) struct WorkerLinks {
    pub adaptive: Option<Arc<AdaptiveSize>>,
    /// Set before a failed worker hangs up, so the sink aborts rather than
    /// commits: a hang-up alone reads like a clean shutdown.
    pub failed: Arc<AtomicBool>,
    pub faults: Arc<Faults>,
    pub stats: Arc<Stats>,
}

/// Scores every batch it receives and passes it on; returns when either side
/// hangs up. An inference error ends it, and with it the pipeline: a batch
/// that cannot be scored must not be skipped, and a device that fails once
/// (a GPU fault) is not trusted again in this process.
pub(crate) fn run(
    session: ModelSession,
    shadow: Option<ModelSession>,
    input: Receiver<Batch>,
    output: SyncSender<Batch>,
    links: WorkerLinks,
) -> Result<(), InferenceError> {
    // The channels are dropped only after the flag is set (by the error, or
    // by the guard while a panic unwinds): the sink must never see the
    // hang-up before it can tell a failure from a shutdown.
    let guard = FailOnPanic(&links.failed);
    let result = score_batches(session, shadow, &input, &output, &links);
    if let Err(e) = &result {
        links.stats.inference_failed();
        tracing::error!(error = %e, "inference failed; the pipeline stops without committing what is open");
        links.failed.store(true, Ordering::SeqCst);
    }
    drop(guard);
    result
}

/// Marks the worker failed if it is dropped while its thread panics.
struct FailOnPanic<'a>(&'a AtomicBool);

impl Drop for FailOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

/// In adaptive mode it reports each batch's fill + inference time, which is
/// what the batch size is tuned on.
fn score_batches(
    mut session: ModelSession,
    mut shadow: Option<ModelSession>,
    input: &Receiver<Batch>,
    output: &SyncSender<Batch>,
    links: &WorkerLinks,
) -> Result<(), InferenceError> {
    // The release this worker's session belongs to: the one it started with.
    let mut epoch = 0;
    while let Ok(mut batch) = input.recv() {
        if let Some(release) = batch.model.as_ref().filter(|r| r.epoch > epoch) {
            // The first batch of a swapped-in model: its warm session takes
            // over here, and the old one is dropped.
            session = release.take_session().ok_or_else(|| InferenceError::Run {
                rows: batch.rows,
                message: format!(
                    "model {} {} has no session left for this worker",
                    release.identity.name, release.identity.version
                ),
            })?;
            epoch = release.epoch;
        }
        if batch.rows > 0 {
            let started = Instant::now();
            links
                .stats
                .timed(Step::BatchWait, started - batch.opened_at);
            batch.scores.reserve_exact(batch.rows);
            if links.faults.take_inference_failure() {
                return Err(InferenceError::Run {
                    rows: batch.rows,
                    message: "inference failure injected by a test".into(),
                });
            }
            session.score_rows(&batch.features, batch.rows, &mut batch.scores)?;
            // The challenger scores the same rows; its results ride in the
            // same transaction, so a failure of it stops the pipeline too.
            if let Some(challenger) = &mut shadow {
                batch.shadow_scores.reserve_exact(batch.rows);
                challenger.score_rows(&batch.features, batch.rows, &mut batch.shadow_scores)?;
            }
            batch.inference = started.elapsed();
            links.stats.timed(Step::Inference, batch.inference);
            links.stats.batch_scored(batch.rows);
            if let Some(a) = &links.adaptive {
                // Filling + inference, not queueing: a queue means the stages
                // after the batcher are behind, and smaller batches would
                // only make that worse (fewer rows per call, same overheads).
                a.observe(
                    batch.rows,
                    (batch.closed_at - batch.opened_at) + batch.inference,
                );
            }
        }
        if output.send(batch).is_err() {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_that_panics_is_marked_failed_before_it_hangs_up() {
        let failed = Arc::new(AtomicBool::new(false));
        let flag = failed.clone();
        let joined = std::thread::spawn(move || {
            let _guard = FailOnPanic(&flag);
            panic!("a worker bug");
        })
        .join();
        assert!(joined.is_err());
        assert!(failed.load(Ordering::SeqCst));
        // A clean return leaves it alone.
        let ok = Arc::new(AtomicBool::new(false));
        drop(FailOnPanic(&ok));
        assert!(!ok.load(Ordering::SeqCst));
    }
}
