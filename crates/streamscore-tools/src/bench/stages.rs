//! Reads the pipeline's own Prometheus histograms back (the text /metrics
//! serves), so the bench reports per-stage figures from exactly what an SRE
//! would scrape: snapshot before a phase, snapshot after, subtract.

use std::collections::BTreeMap;

use streamscore::telemetry::metrics::{END_TO_END_LATENCY, STAGE_DURATION};

/// One histogram series: cumulative bucket counts by upper bound, sum, count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

impl Series {
    /// The Prometheus `histogram_quantile`: linear inside the bucket that holds
    /// the rank; None without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count <= 0.0 {
            return None;
        }
        let rank = q * self.count;
        let mut lower = (0.0, 0.0);
        for &(le, cumulative) in &self.buckets {
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
        (self.count > 0.0).then(|| self.sum / self.count)
    }

    fn minus(&self, earlier: &Series) -> Series {
        Series {
            buckets: self
                .buckets
                .iter()
                .map(|&(le, c)| {
                    let before = earlier
                        .buckets
                        .iter()
                        .find(|(l, _)| *l == le)
                        .map_or(0.0, |b| b.1);
                    (le, c - before)
                })
                .collect(),
            sum: self.sum - earlier.sum,
            count: self.count - earlier.count,
        }
    }
}

/// Histograms by name: `stage:<stage>` for stage durations, `end_to_end`.
#[derive(Debug, Clone, Default)]
pub struct Snapshot(BTreeMap<String, Series>);

impl Snapshot {
    pub fn parse(text: &str) -> Snapshot {
        let mut map: BTreeMap<String, Series> = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = series
                .split_once('{')
                .map_or((series, ""), |(n, l)| (n, l.trim_end_matches('}')));
            let key = if name.starts_with(STAGE_DURATION) {
                match label(labels, "stage") {
                    Some(stage) => format!("stage:{stage}"),
                    None => continue,
                }
            } else if name.starts_with(END_TO_END_LATENCY) {
                "end_to_end".to_owned()
            } else {
                continue;
            };
            let entry = map.entry(key).or_default();
            if name.ends_with("_bucket") {
                let le = match label(labels, "le") {
                    Some("+Inf") => f64::INFINITY,
                    Some(le) => match le.parse() {
                        Ok(le) => le,
                        Err(_) => continue,
                    },
                    None => continue,
                };
                entry.buckets.push((le, value));
            } else if name.ends_with("_sum") {
                entry.sum = value;
            } else if name.ends_with("_count") {
                entry.count = value;
            }
        }
        for s in map.values_mut() {
            s.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        Snapshot(map)
    }

    /// What was observed between `earlier` and this snapshot.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot(
            self.0
                .iter()
                .map(|(k, s)| {
                    let d = earlier.0.get(k).map_or_else(|| s.clone(), |e| s.minus(e));
                    (k.clone(), d)
                })
                .collect(),
        )
    }

    pub fn stage(&self, stage: &str) -> Option<&Series> {
        self.0.get(&format!("stage:{stage}"))
    }
}

fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    labels.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = r#"# TYPE streamscore_stage_duration_seconds histogram
streamscore_stage_duration_seconds_bucket{stage="inference",le="0.001"} 10
streamscore_stage_duration_seconds_bucket{stage="inference",le="0.01"} 10
streamscore_stage_duration_seconds_bucket{stage="inference",le="+Inf"} 10
streamscore_stage_duration_seconds_sum{stage="inference"} 0.005
streamscore_stage_duration_seconds_count{stage="inference"} 10
streamscore_records_scored_total 7
"#;
    const AFTER: &str = r#"streamscore_stage_duration_seconds_bucket{stage="inference",le="0.001"} 10
streamscore_stage_duration_seconds_bucket{stage="inference",le="0.01"} 110
streamscore_stage_duration_seconds_bucket{stage="inference",le="+Inf"} 110
streamscore_stage_duration_seconds_sum{stage="inference"} 0.505
streamscore_stage_duration_seconds_count{stage="inference"} 110
streamscore_end_to_end_latency_seconds_bucket{le="0.1"} 3
streamscore_end_to_end_latency_seconds_bucket{le="+Inf"} 4
streamscore_end_to_end_latency_seconds_sum 0.5
streamscore_end_to_end_latency_seconds_count 4
"#;

    #[test]
    fn difference_of_snapshots_holds_only_the_phase() {
        let d = Snapshot::parse(AFTER).since(&Snapshot::parse(BEFORE));
        let inference = d.stage("inference").unwrap();
        assert_eq!(inference.count, 100.0);
        assert!((inference.mean().unwrap() - 0.005).abs() < 1e-12);
        // All 100 new observations lie in (1 ms, 10 ms]: p50 halfway through it.
        assert!((inference.quantile(0.5).unwrap() - 0.0055).abs() < 1e-12);
        assert!((inference.quantile(0.99).unwrap() - 0.00991).abs() < 1e-9);
        assert!(d.stage("commit").is_none());
    }

    #[test]
    fn quantile_in_the_open_bucket_is_its_lower_bound() {
        let s = Snapshot::parse(AFTER);
        let e2e = s.0.get("end_to_end").unwrap();
        assert_eq!(e2e.quantile(0.99), Some(0.1));
        assert_eq!(Series::default().quantile(0.5), None);
    }
}
