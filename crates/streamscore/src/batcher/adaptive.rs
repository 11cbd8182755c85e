//! The adaptive batch size: AIMD on the measured p99 of (batch fill +
//! inference). While the p99 of the last window of batches is well under the
//! target and batches fill up, the size grows a little; as soon as the p99
//! passes the target, it shrinks by a quarter. Small batches when the load is
//! light (nobody waits for a batch to fill), large ones under pressure (more
//! rows per inference call), always inside the latency budget.
//!
//! Queueing after the batcher is left out on purpose: it means a later stage
//! is behind, and shrinking batches then lowers throughput and deepens the
//! queue (a spiral the first version of this fell into in `streamscore-tools bench`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::telemetry::metrics::BATCH_TARGET_SIZE;

/// Batches per decision: enough for a p99 that means something, few enough
/// to react within a fraction of a second under load.
pub(crate) const WINDOW: usize = 50;

/// Grow only while the p99 stays under this share of the target, so the size
/// settles below the target rather than oscillating across it.
const HEADROOM: f64 = 0.8;

/// The batch size shared by the source (which closes batches at it) and the
/// inference workers (which measure how long batches took and report here).
#[derive(Debug)]
pub(crate) struct AdaptiveSize {
    rows: AtomicUsize,
    min: usize,
    max: usize,
    target: Duration,
    window: Mutex<Window>,
    gauge: metrics::Gauge,
}

#[derive(Debug, Default)]
struct Window {
    latencies: Vec<Duration>,
    /// Batches that closed because they were full, not because of the delay.
    full: usize,
}

/// What one decision did, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Grew(usize),
    Shrank(usize),
    Held(usize),
}

impl AdaptiveSize {
    /// Starts at the smallest size: the first batches are fast, and the size
    /// earns its growth from measurements.
    pub(crate) fn new(min: usize, max: usize, target: Duration) -> Self {
        let min = min.max(1);
        let max = max.max(min);
        let gauge = metrics::gauge!(BATCH_TARGET_SIZE);
        gauge.set(min as f64);
        Self {
            rows: AtomicUsize::new(min),
            min,
            max,
            target,
            window: Mutex::new(Window::default()),
            gauge,
        }
    }

    /// Rows at which the source closes the next batch.
    pub(crate) fn rows(&self) -> usize {
        self.rows.load(Ordering::Relaxed)
    }

    /// Reports one scored batch: its rows and its fill + inference time.
    /// Every [`WINDOW`] batches the size is decided again.
    pub(crate) fn observe(&self, rows: usize, latency: Duration) -> Option<Step> {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        w.latencies.push(latency);
        if rows >= self.rows() {
            w.full += 1;
        }
        if w.latencies.len() < WINDOW {
            return None;
        }
        let p99 = p99(&mut w.latencies);
        let mostly_full = w.full * 2 >= w.latencies.len();
        w.latencies.clear();
        w.full = 0;
        drop(w);
        Some(self.decide(p99, mostly_full))
    }

    fn decide(&self, p99: Duration, mostly_full: bool) -> Step {
        let now = self.rows();
        let step = if p99 > self.target {
            Step::Shrank((now - now / 4).max(self.min))
        } else if mostly_full && p99.as_secs_f64() < self.target.as_secs_f64() * HEADROOM {
            // Additive increase, at least one row, a little faster when large.
            Step::Grew((now + (now / 8).max(1)).min(self.max))
        } else {
            Step::Held(now)
        };
        let (Step::Grew(rows) | Step::Shrank(rows) | Step::Held(rows)) = step;
        if rows != now {
            self.rows.store(rows, Ordering::Relaxed);
            self.gauge.set(rows as f64);
            tracing::trace!(
                rows,
                p99_ms = p99.as_secs_f64() * 1e3,
                "adaptive batch size"
            );
        }
        step
    }
}

/// Nearest-rank p99; sorts in place.
fn p99(latencies: &mut [Duration]) -> Duration {
    latencies.sort_unstable();
    let rank = (latencies.len() * 99).div_ceil(100).max(1);
    latencies[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(size: &AdaptiveSize, rows: usize, latency_ms: u64) -> Step {
        let mut last = None;
        for _ in 0..WINDOW {
            last = size.observe(rows, Duration::from_millis(latency_ms));
        }
        last.expect("a full window decides")
    }

    #[test]
    fn grows_while_full_batches_stay_under_the_target() {
        let size = AdaptiveSize::new(1, 64, Duration::from_millis(20));
        let mut seen = vec![size.rows()];
        for _ in 0..40 {
            window(&size, size.rows(), 5);
            seen.push(size.rows());
        }
        assert!(seen.windows(2).all(|w| w[1] >= w[0]), "{seen:?}");
        assert_eq!(size.rows(), 64, "{seen:?}");
    }

    #[test]
    fn shrinks_when_the_p99_passes_the_target_but_not_below_min() {
        let size = AdaptiveSize::new(8, 256, Duration::from_millis(20));
        size.rows.store(200, Ordering::Relaxed);
        assert_eq!(window(&size, 200, 30), Step::Shrank(150));
        for _ in 0..30 {
            window(&size, size.rows(), 30);
        }
        assert_eq!(size.rows(), 8);
    }

    #[test]
    fn one_slow_batch_in_a_hundred_is_the_p99() {
        let size = AdaptiveSize::new(1, 256, Duration::from_millis(20));
        size.rows.store(100, Ordering::Relaxed);
        // 49 fast batches and one at 25 ms: nearest-rank p99 of 50 is the slowest.
        for _ in 0..WINDOW - 1 {
            assert_eq!(size.observe(100, Duration::from_millis(2)), None);
        }
        assert_eq!(
            size.observe(100, Duration::from_millis(25)),
            Some(Step::Shrank(75))
        );
    }

    #[test]
    fn does_not_grow_when_batches_close_on_the_delay() {
        let size = AdaptiveSize::new(1, 256, Duration::from_millis(20));
        size.rows.store(32, Ordering::Relaxed);
        assert_eq!(window(&size, 3, 6), Step::Held(32));
        // Close to the target but not over it: hold, do not creep across it.
        assert_eq!(window(&size, 32, 18), Step::Held(32));
    }

    #[test]
    fn settles_where_the_latency_meets_the_target() {
        // A made-up device: 0.1 ms per row plus 1 ms per call.
        let size = AdaptiveSize::new(1, 4096, Duration::from_millis(20));
        for _ in 0..400 {
            let rows = size.rows();
            let ms = 1 + rows as u64 / 10;
            window(&size, rows, ms);
        }
        let rows = size.rows();
        assert!((120..=200).contains(&rows), "settled at {rows}");
    }
}
