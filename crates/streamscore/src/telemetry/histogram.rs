//! Latency histograms kept in atomics, with Prometheus's buckets: recorded
//! by the stages, rendered by /metrics and read back, as numbers, by the
//! bench (a snapshot before a phase, one after, subtracted).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of every latency histogram: 10 µs .. 10 s.
pub(crate) const LATENCY_BUCKETS: [f64; 19] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Bucket counts (not cumulative; the last is over every bound), count, sum.
#[derive(Debug, Default)]
pub(crate) struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl LatencyHistogram {
    pub(crate) fn record(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = LATENCY_BUCKETS.partition_point(|&upper| upper < seconds);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
        let bounds = LATENCY_BUCKETS.iter().copied().chain([f64::INFINITY]);
        for (upper, count) in bounds.zip(&self.buckets) {
            cumulative += count.load(Ordering::Relaxed);
            buckets.push((upper, cumulative));
        }
        HistogramSnapshot {
            count: cumulative,
            buckets,
            sum: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }

    /// The `_bucket`, `_sum` and `_count` lines, with `labels` (`k="v"`,
    /// comma-separated, or empty) on each.
    pub(crate) fn render(&self, out: &mut String, name: &str, labels: &str) {
        let snapshot = self.snapshot();
        let sep = if labels.is_empty() { "" } else { "," };
        for (upper, cumulative) in &snapshot.buckets {
            let le = if upper.is_infinite() {
                "+Inf".to_owned()
            } else {
                upper.to_string()
            };
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", snapshot.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", snapshot.count);
    }
}

/// A histogram's figures at one moment: cumulative counts by upper bound
/// (seconds, the last infinite), the sum of the observations (seconds) and
/// their count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

impl HistogramSnapshot {
    /// What was observed between `earlier` and this snapshot.
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        let before = |i: usize| earlier.buckets.get(i).map_or(0, |b| b.1);
        HistogramSnapshot {
            buckets: (self.buckets.iter().enumerate())
                .map(|(i, &(le, c))| (le, c.saturating_sub(before(i))))
                .collect(),
            sum: self.sum - earlier.sum,
            count: self.count.saturating_sub(earlier.count),
        }
    }

    /// Prometheus's `histogram_quantile`: linear inside the bucket that holds
    /// the rank; None without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = q * self.count as f64;
        let mut lower = (0.0, 0.0);
        for &(le, cumulative) in &self.buckets {
            let cumulative = cumulative as f64;
            if cumulative >= rank {
                if le.is_infinite() {
                    return Some(lower.0);
                }
                let in_bucket = cumulative - lower.1;
                let share = if in_bucket > 0.0 {
                    (rank - lower.1) / in_bucket
                } else {
                    1.0
                };
                return Some(lower.0 + (le - lower.0) * share);
            }
            lower = (le, cumulative);
        }
        Some(lower.0)
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_render_and_read_back_alike() {
        let h = LatencyHistogram::default();
        for ms in [1, 2, 2, 40] {
            h.record(Duration::from_millis(ms));
        }
        let before = h.snapshot();
        h.record(Duration::from_secs(30));
        let snapshot = h.snapshot();
        assert_eq!(snapshot.count, 5);
        assert!((snapshot.sum - 30.045).abs() < 1e-9, "{}", snapshot.sum);
        // 1 ms sits in the bucket up to 0.001 (le is inclusive); 2 ms up to 0.0025.
        assert_eq!(snapshot.buckets[6], (0.001, 1));
        assert_eq!(snapshot.buckets[7], (0.0025, 3));
        assert_eq!(snapshot.buckets.last(), Some(&(f64::INFINITY, 5)));
        let last = snapshot.since(&before);
        assert_eq!(
            (last.count, last.buckets[18].1, last.buckets[19].1),
            (1, 0, 1)
        );
        // The median of 1, 2, 2, 40 ms: inside the 1..2.5 ms bucket.
        let median = before.quantile(0.5).unwrap();
        assert!(median > 0.001 && median <= 0.0025, "{median}");
        assert_eq!(HistogramSnapshot::default().quantile(0.5), None);
        let mut text = String::new();
        h.render(&mut text, "x_seconds", "stage=\"commit\"");
        assert!(
            text.contains("x_seconds_bucket{stage=\"commit\",le=\"0.001\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("x_seconds_bucket{stage=\"commit\",le=\"+Inf\"} 5\n"));
        assert!(text.contains("x_seconds_count{stage=\"commit\"} 5\n"));
        let mut bare = String::new();
        h.render(&mut bare, "y_seconds", "");
        assert!(bare.contains("y_seconds_bucket{le=\"10\"} 4\n"), "{bare}");
        assert!(bare.contains("y_seconds_sum 30.045"));
    }
}
