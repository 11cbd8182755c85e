//! Counters and a latency histogram that a terminal line can read once a
//! second, next to the Prometheus metrics (which are for scraping, not reading back).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;

#[derive(Debug)]
pub struct LiveStats {
    pub consumed: AtomicU64,
    /// Committed to the score topic.
    pub scored: AtomicU64,
    /// Committed to the dead-letter topic.
    pub dead_lettered: AtomicU64,
    pub batches: AtomicU64,
    pub batch_rows: AtomicU64,
    pub transactions_committed: AtomicU64,
    pub transactions_aborted: AtomicU64,
    /// Transactional producers replaced after a call that went unanswered.
    pub producers_replaced: AtomicU64,
    /// End-to-end latency in microseconds since the last `take_latency`.
    latency_us: Mutex<Histogram<u64>>,
}

impl Default for LiveStats {
    fn default() -> Self {
        Self {
            consumed: AtomicU64::new(0),
            scored: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batch_rows: AtomicU64::new(0),
            transactions_committed: AtomicU64::new(0),
            transactions_aborted: AtomicU64::new(0),
            producers_replaced: AtomicU64::new(0),
            latency_us: Mutex::new(new_histogram()),
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 1 h at 3 significant digits: fixed bounds, so creation cannot fail.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant histogram bounds are valid")
}

impl LiveStats {
    pub fn record_latencies_us(&self, values: impl IntoIterator<Item = u64>) {
        let mut h = self.latency_us.lock().unwrap_or_else(|p| p.into_inner());
        for v in values {
            h.saturating_record(v.max(1));
        }
    }

    /// Returns the latencies recorded since the previous call and starts afresh.
    pub fn take_latency(&self) -> Histogram<u64> {
        let mut h = self.latency_us.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *h, new_histogram())
    }

    pub fn committed(&self) -> u64 {
        self.scored.load(Ordering::Relaxed) + self.dead_lettered.load(Ordering::Relaxed)
    }
}
