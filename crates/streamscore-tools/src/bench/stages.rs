//! The pipeline's own stage histograms, read from its `Stats` (the same
//! figures /metrics serves): a snapshot before a phase, one after, subtracted.

use std::collections::BTreeMap;

use streamscore::telemetry::{HistogramSnapshot, Stats, Step};

/// Each stage's duration histogram, by its `stage` label.
#[derive(Debug, Clone, Default)]
pub struct Snapshot(BTreeMap<&'static str, HistogramSnapshot>);

impl Snapshot {
    pub fn take(stats: &Stats) -> Snapshot {
        Snapshot(
            (Step::ALL.iter())
                .map(|&step| (step.as_str(), stats.step(step)))
                .collect(),
        )
    }

    /// What was observed between `earlier` and this snapshot.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot(
            (self.0.iter())
                .map(|(&k, s)| {
                    (
                        k,
                        earlier.0.get(k).map_or_else(|| s.clone(), |e| s.since(e)),
                    )
                })
                .collect(),
        )
    }

    /// A stage that saw something in the interval.
    pub fn stage(&self, stage: &str) -> Option<&HistogramSnapshot> {
        self.0.get(stage).filter(|s| s.count > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_holds_every_step_and_shows_only_those_that_saw_something() {
        let snapshot = Snapshot::take(&Stats::default());
        assert_eq!(snapshot.0.len(), Step::ALL.len());
        assert!(
            Step::ALL
                .iter()
                .all(|s| snapshot.0.contains_key(s.as_str()))
        );
        assert!(snapshot.since(&snapshot).stage("commit").is_none());
    }
}
