//! Ceiling (b): ONNX Runtime alone, the same model, sessions, threads and
//! batch size as the pipeline, fed from memory as fast as it takes rows.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};

use streamscore::{InferenceError, ModelSession};

#[derive(Debug, Clone, Copy)]
pub struct InferenceCeiling {
    pub rows_per_second: f64,
    pub batch: usize,
    /// p99 of one `score` call at that batch size (ms).
    pub call_p99_ms: f64,
}

/// Runs every session on its own thread for `duration`, like the pipeline's
/// workers do, and adds up their rows.
pub(super) fn standalone(
    sessions: Vec<ModelSession>,
    batch: usize,
    duration: Duration,
) -> Result<InferenceCeiling, InferenceError> {
    let batch = batch.max(1);
    type Outcome = Result<(u64, Histogram<u64>, Duration), InferenceError>;
    let results: Vec<Outcome> = std::thread::scope(|s| {
        let handles: Vec<_> = sessions
            .into_iter()
            .enumerate()
            .map(|(i, mut session)| {
                s.spawn(move || {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(i as u64);
                    let features: Vec<f32> = (0..batch * session.width())
                        .map(|_| rng.random_range(-2.0..2.0))
                        .collect();
                    let mut calls = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                        .expect("constant histogram bounds are valid");
                    let mut scores = Vec::with_capacity(batch);
                    let mut rows = 0u64;
                    let started = Instant::now();
                    while started.elapsed() < duration {
                        let t = Instant::now();
                        scores.clear();
                        session.score(&features, batch, &mut scores)?;
                        calls.saturating_record(t.elapsed().as_micros() as u64);
                        rows += batch as u64;
                    }
                    Ok((rows, calls, started.elapsed()))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(InferenceError::Run {
                        rows: batch,
                        message: "the benchmark thread panicked".into(),
                    })
                })
            })
            .collect()
    });
    let (mut rows, mut elapsed) = (0, duration);
    let mut calls = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .expect("constant histogram bounds are valid");
    for r in results {
        let (n, h, e) = r?;
        rows += n;
        elapsed = elapsed.max(e);
        calls.add(&h).ok();
    }
    Ok(InferenceCeiling {
        rows_per_second: rows as f64 / elapsed.as_secs_f64(),
        batch,
        call_p99_ms: calls.value_at_quantile(0.99) as f64 / 1000.0,
    })
}
