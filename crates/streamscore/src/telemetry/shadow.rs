//! Shadow scoring's comparison of the challenger with the model serving:
//! how far apart their scores are, and whether they decide alike. Counted
//! when the transaction holding both commits, like every other count.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use super::metrics::{SHADOW_DECISIONS, SHADOW_SCORE_DIFFERENCE};

/// Upper bounds of `shadow_score_difference`'s buckets: |served − challenger|.
const DIFFERENCE_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0];

/// One transaction's comparisons, added to [`ShadowStats`] at its commit.
#[derive(Debug, Default)]
pub(crate) struct ShadowTally {
    agree: u64,
    disagree: u64,
    buckets: [u64; DIFFERENCE_BUCKETS.len() + 1],
    sum: f64,
}

impl ShadowTally {
    pub(crate) fn compare(&mut self, served: f64, challenger: f64, agree: bool) {
        if agree {
            self.agree += 1;
        } else {
            self.disagree += 1;
        }
        let difference = (served - challenger).abs();
        // A NaN is no agreement at all: the last bucket, not the first.
        let bucket = if difference.is_nan() {
            DIFFERENCE_BUCKETS.len()
        } else {
            DIFFERENCE_BUCKETS.partition_point(|&upper| upper < difference)
        };
        self.buckets[bucket] += 1;
        if difference.is_finite() {
            self.sum += difference;
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct ShadowStats {
    agree: AtomicU64,
    disagree: AtomicU64,
    buckets: [AtomicU64; DIFFERENCE_BUCKETS.len() + 1],
    /// In millionths, to stay an integer.
    sum_micros: AtomicU64,
}

impl ShadowStats {
    pub(crate) fn add(&self, tally: &ShadowTally) {
        self.agree.fetch_add(tally.agree, Ordering::Relaxed);
        self.disagree.fetch_add(tally.disagree, Ordering::Relaxed);
        for (bucket, n) in self.buckets.iter().zip(tally.buckets) {
            bucket.fetch_add(n, Ordering::Relaxed);
        }
        self.sum_micros
            .fetch_add((tally.sum * 1e6) as u64, Ordering::Relaxed);
    }

    /// (agreeing, disagreeing) decisions so far.
    pub(crate) fn decisions(&self) -> (u64, u64) {
        (
            self.agree.load(Ordering::Relaxed),
            self.disagree.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn render(&self, out: &mut String) {
        let (agree, disagree) = self.decisions();
        let _ = writeln!(
            out,
            "# HELP {SHADOW_DECISIONS} Scored records whose challenger decided like the model serving (agree) or not, with shadow scoring.\n# TYPE {SHADOW_DECISIONS} counter\n{SHADOW_DECISIONS}{{agreement=\"agree\"}} {agree}\n{SHADOW_DECISIONS}{{agreement=\"disagree\"}} {disagree}"
        );
        let _ = writeln!(
            out,
            "# HELP {SHADOW_SCORE_DIFFERENCE} |score of the model serving − challenger's score| per scored record, with shadow scoring.\n# TYPE {SHADOW_SCORE_DIFFERENCE} histogram"
        );
        let mut cumulative = 0;
        let bounds = DIFFERENCE_BUCKETS
            .iter()
            .map(f64::to_string)
            .chain(["+Inf".to_owned()]);
        for (le, count) in bounds.zip(&self.buckets) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{SHADOW_SCORE_DIFFERENCE}_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "{SHADOW_SCORE_DIFFERENCE}_sum {sum}\n{SHADOW_SCORE_DIFFERENCE}_count {cumulative}"
        );
    }
}
