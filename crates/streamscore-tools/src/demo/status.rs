//! The live line the demo prints once a second.

use std::time::Duration;

use streamscore::telemetry::Stats;

/// Stats at the previous tick, to print rates.
#[derive(Default)]
pub(super) struct StatusLine {
    last_committed: u64,
    last_batches: u64,
    last_rows: u64,
}

impl StatusLine {
    pub(super) fn render(
        &mut self,
        stats: &Stats,
        produced: u64,
        elapsed: Duration,
        interval: Duration,
    ) -> String {
        let committed = stats.committed();
        let (batches, rows) = stats.batches();
        let rate = (committed - self.last_committed) as f64 / interval.as_secs_f64().max(1e-3);
        let mean_batch = if batches > self.last_batches {
            (rows - self.last_rows) as f64 / (batches - self.last_batches) as f64
        } else {
            0.0
        };
        let latency = stats.take_latency();
        let (p50, p99) = if latency.is_empty() {
            ("-".to_owned(), "-".to_owned())
        } else {
            (
                format!("{:.1}", latency.value_at_quantile(0.5) as f64 / 1000.0),
                format!("{:.1}", latency.value_at_quantile(0.99) as f64 / 1000.0),
            )
        };
        self.last_committed = committed;
        self.last_batches = batches;
        self.last_rows = rows;
        format!(
            "[{:>4}s] produced {:>7} | consumed {:>7} | scored {:>7} | dead-lettered {:>5} | {:>7.0} rows/s | p50 {:>6} ms p99 {:>6} ms | batch {:>5.1}",
            elapsed.as_secs(),
            produced,
            stats.consumed(),
            stats.scored(),
            stats.dead_lettered(),
            rate,
            p50,
            p99,
            mean_batch,
        )
    }
}
