//! The once-a-minute info line: what an operator tailing the logs wants to
//! know without a dashboard (throughput, dead letters, aborts, latency).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Stats;

pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Totals {
    consumed: u64,
    scored: u64,
    dead_lettered: u64,
    committed: u64,
    aborted: u64,
}

impl Totals {
    fn read(stats: &Stats) -> Self {
        Self {
            consumed: stats.consumed(),
            scored: stats.scored(),
            dead_lettered: stats.dead_lettered(),
            committed: stats.transactions_committed(),
            aborted: stats.transactions_aborted(),
        }
    }
}

/// The figures of one summary line: counts since the previous line.
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    pub seconds: f64,
    pub consumed: u64,
    pub scored: u64,
    pub dead_lettered: u64,
    pub transactions_committed: u64,
    pub transactions_aborted: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

pub struct Summary {
    stats: Arc<Stats>,
    last: Totals,
    at: Instant,
}

impl Summary {
    pub fn new(stats: Arc<Stats>) -> Self {
        let last = Totals::read(&stats);
        // Start the latency window now, not at process start.
        let _ = stats.take_latency();
        Self {
            stats,
            last,
            at: Instant::now(),
        }
    }

    /// Takes the figures since the previous call.
    pub fn take(&mut self) -> Interval {
        let now = Totals::read(&self.stats);
        let latency = self.stats.take_latency();
        let seconds = self.at.elapsed().as_secs_f64();
        let interval = Interval {
            seconds,
            consumed: now.consumed - self.last.consumed,
            scored: now.scored - self.last.scored,
            dead_lettered: now.dead_lettered - self.last.dead_lettered,
            transactions_committed: now.committed - self.last.committed,
            transactions_aborted: now.aborted - self.last.aborted,
            p50_ms: latency.value_at_quantile(0.5) as f64 / 1000.0,
            p99_ms: latency.value_at_quantile(0.99) as f64 / 1000.0,
        };
        self.last = now;
        self.at = Instant::now();
        interval
    }

    pub fn log(&mut self) {
        let i = self.take();
        let rate = |n: u64| n as f64 / i.seconds.max(f64::EPSILON);
        tracing::info!(
            consumed = i.consumed,
            scored = i.scored,
            dead_lettered = i.dead_lettered,
            transactions_committed = i.transactions_committed,
            transactions_aborted = i.transactions_aborted,
            scored_per_second = format!("{:.1}", rate(i.scored)),
            latency_p50_ms = i.p50_ms,
            latency_p99_ms = i.p99_ms,
            "summary of the last {:.0} s",
            i.seconds
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dead_letter::Reason;

    #[test]
    fn counts_are_since_the_previous_line() {
        let stats = Arc::new(Stats::default());
        stats.committed_transaction(5, []);
        let mut s = Summary::new(stats.clone());
        stats.committed_transaction(7, [(Reason::UnknownKey, 1)]);
        stats.aborted_transaction();
        stats.aborted_transaction();
        stats.end_to_end([10, 20, 30].map(Duration::from_millis));
        let first = s.take();
        assert_eq!(
            (
                first.scored,
                first.dead_lettered,
                first.transactions_committed,
                first.transactions_aborted
            ),
            (7, 1, 1, 2)
        );
        assert!((first.p50_ms - 20.0).abs() < 0.1, "{first:?}");
        stats.committed_transaction(3, []);
        let second = s.take();
        assert_eq!((second.scored, second.dead_lettered), (3, 0));
        assert_eq!(second.p99_ms, 0.0, "no latencies in the second interval");
    }
}
