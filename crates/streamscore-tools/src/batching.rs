//! `streamscore-tools batching`: the batcher and the inference workers on a
//! device, no broker. Rows from the event generator (sealed, then opened and
//! decoded by the processor's own transform) are offered at each rate asked
//! for, and the batch size is watched settling. Beside each run it prints
//! the band the adaptive size should settle in, worked out from the
//! device's per-call cost measured first in the same run:
//!
//! a batch of `b` rows offered at `R` rows/s takes `b / R` to fill and
//! `c0 + c1·b` to score (p99s), so the size grows until `b / R + c0 + c1·b` reaches
//! 80 % of the latency target and shrinks once it passes the target:
//! `b = (x·target − c0) / (1/R + c1)` for x = 0.8 and 1. A batch that closes
//! on `max_batch_delay` is not full and earns no growth, so `R × delay`
//! bounds it too. The fixed cost `c0` is what a GPU pays more of than a CPU
//! (a kernel launch and two copies per call): it is what pushes the size up
//! when the target is tight.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use streamscore::from_memory::{MemoryFeed, MemoryRun, MemoryRunError, score_from_memory};
use streamscore::telemetry::Stats;
use streamscore::{
    BatchMode, DevicePreference, FeaturePlan, FeatureRows, Format, InputDecoder, Keyring,
    ModelSession, Settings, Transform, VerifiedModel, random_key, share,
};

use crate::events::EventFactory;
use crate::inference::measure;

/// Rows generated once and offered in turn: enough variety for a tree model's
/// branches, few enough to make in a moment.
const POOL_ROWS: usize = 4096;

#[derive(Debug, Clone)]
pub struct BatchingOptions {
    pub settings: Settings,
    pub devices: Vec<DevicePreference>,
    /// Rows offered per second; 0 means as fast as they are taken.
    pub rates: Vec<f64>,
    pub per_rate: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum BatchingError {
    #[error(transparent)]
    Pipeline(#[from] streamscore::PipelineError),
    #[error(transparent)]
    Inference(#[from] streamscore::InferenceError),
    #[error(transparent)]
    Run(#[from] MemoryRunError),
    #[error(transparent)]
    Keyring(#[from] streamscore::KeyringError),
    #[error("the event generator's record {event_id} was not scorable: {reason}")]
    Generator { event_id: String, reason: String },
    #[error(transparent)]
    Measure(#[from] crate::inference::InferenceBenchError),
}

/// `seconds = c0 + c1 × rows` for one call, through the p99s at the
/// smallest and the largest batch measured: the adaptive size is tuned on a
/// p99, and a least-squares line over sizes 1 … 8192 would be all slope,
/// its intercept (the fixed cost this is about) lost in the large batches' noise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallCost {
    pub fixed: Duration,
    pub per_row: Duration,
}

impl CallCost {
    fn fit(points: &[(usize, f64)]) -> Self {
        let secs = |s: f64| Duration::from_secs_f64(s.max(0.0));
        let (Some(&(b0, s0)), Some(&(b1, s1))) = (points.first(), points.last()) else {
            return CallCost {
                fixed: Duration::ZERO,
                per_row: Duration::ZERO,
            };
        };
        let slope = if b1 > b0 {
            (s1 - s0) / (b1 - b0) as f64
        } else {
            0.0
        };
        CallCost {
            fixed: secs(s0 - slope * b0 as f64),
            per_row: secs(slope),
        }
    }

    /// The size at which fill + inference takes `budget` at `rate` rows/s.
    fn rows_within(&self, budget: Duration, rate: f64) -> f64 {
        let spare = budget.as_secs_f64() - self.fixed.as_secs_f64();
        (spare / (1.0 / rate + self.per_row.as_secs_f64())).max(0.0)
    }
}

/// One rate on one device.
#[derive(Debug, Clone)]
pub struct RateRun {
    pub device: &'static str,
    pub rate: f64,
    /// Where the size should settle, when the rate is set: (grows up to, shrinks above).
    pub expected: Option<(usize, usize)>,
    pub run: MemoryRun,
}

#[derive(Debug, Clone, Default)]
pub struct Batching {
    pub costs: Vec<(&'static str, CallCost)>,
    pub runs: Vec<RateRun>,
}

pub fn run(opts: &BatchingOptions) -> Result<Batching, BatchingError> {
    let settings = &opts.settings;
    let (model, runtime) = crate::inference::model_and_runtime(settings)?;
    let rows = generated_rows(settings, &model)?;
    // Warmed up like the pipeline's own sessions: a first call at a new
    // shape (slow on CUDA) would read as a slow batch and shrink the size.
    let warm_up = streamscore::warm_up_sizes(settings);
    let open = |preference| {
        let mut session = ModelSession::open_with(
            &runtime,
            &model,
            preference,
            settings.model.intra_op_threads as usize,
            &settings.model.cuda,
        )?;
        session.warm_up(&warm_up)?;
        Ok::<_, streamscore::InferenceError>(session)
    };
    let max = settings.batching.max_batch_size as usize;
    let mut out = Batching::default();
    for &preference in &opts.devices {
        let mut session = open(preference)?;
        let device = session.device().as_str();
        let mut points = Vec::new();
        for batch in [1, max] {
            let p = measure(
                &mut session,
                device,
                (&rows, batch),
                Duration::from_millis(300),
            )?;
            points.push((batch, p.call_p99_ms / 1e3));
        }
        let cost = CallCost::fit(&points);
        out.costs.push((device, cost));
        drop(session);
        for &rate in &opts.rates {
            let sessions = (0..settings.model.sessions.max(1))
                .map(|_| open(preference))
                .collect::<Result<Vec<_>, _>>()?;
            let feed = MemoryFeed {
                rows: &rows,
                rows_per_second: rate,
                duration: opts.per_rate,
            };
            let run = score_from_memory(settings, sessions, feed)?;
            out.runs.push(RateRun {
                device,
                rate,
                expected: expected_band(settings, cost, rate),
                run,
            });
        }
    }
    Ok(out)
}

/// The band of module doc; `None` where it does not apply (fixed mode, or
/// rows offered as fast as taken, whose rate the run finds out).
fn expected_band(settings: &Settings, cost: CallCost, rate: f64) -> Option<(usize, usize)> {
    if settings.batching.mode != BatchMode::Adaptive || rate <= 0.0 {
        return None;
    }
    let b = &settings.batching;
    let clamp = |rows: f64| {
        (rows.floor() as usize).clamp(b.min_batch_size as usize, b.max_batch_size as usize)
    };
    let grows_to = cost.rows_within(b.latency_target.mul_f64(0.8), rate);
    let shrinks_above = cost.rows_within(b.latency_target, rate);
    // Batches that close on the delay hold about `R × delay` rows, short of a
    // larger size, and are not full: the size stops at the first step past
    // that (a step is an eighth), unless the latency stops it first.
    let by_delay = rate * b.max_batch_delay.as_secs_f64();
    if by_delay < grows_to {
        let past = (by_delay * 1.125).ceil() + 1.0;
        return Some((clamp(by_delay), clamp(past.min(shrinks_above))));
    }
    Some((clamp(grows_to), clamp(shrinks_above)))
}

/// Rows from the event generator, through the processor's own open, decode
/// and feature steps: the rows `run` would batch.
fn generated_rows(
    settings: &Settings,
    model: &VerifiedModel,
) -> Result<Vec<FeatureRows>, BatchingError> {
    let keyring = Arc::new(Keyring::from_keys(
        [("batching", random_key())],
        "batching",
    )?);
    let mut events = EventFactory::new(keyring.clone(), Format::Json, "batching", 17);
    let transform = Transform::new(
        share(keyring),
        InputDecoder::json(),
        FeaturePlan::new(&model.card),
        settings.input.max_record_bytes as usize,
        Arc::new(Stats::default()),
    );
    (0..POOL_ROWS)
        .map(|_| {
            let record = events.next(None);
            let mut row = FeatureRows::default();
            transform
                .apply(record.value.as_deref(), Some(&record.key), &mut row)
                .map_err(|e| BatchingError::Generator {
                    event_id: record.event_id.clone(),
                    reason: e.to_string(),
                })?;
            Ok(row)
        })
        .collect()
}

pub fn render(settings: &Settings, out: &Batching) -> String {
    let b = &settings.batching;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "batching: {}, sizes {}..{}, latency target {} ms, max delay {} ms, {} session(s)",
        b.mode.as_str(),
        b.min_batch_size,
        b.max_batch_size,
        ms(b.latency_target),
        ms(b.max_batch_delay),
        settings.model.sessions
    );
    for (device, cost) in &out.costs {
        let _ = writeln!(
            text,
            "{device}: one call ≈ {:.1} µs + {:.3} µs per row (the line through the p99s at batch 1 and {})",
            cost.fixed.as_secs_f64() * 1e6,
            cost.per_row.as_secs_f64() * 1e6,
            b.max_batch_size
        );
    }
    let _ = writeln!(
        text,
        "\n| device | offered rows/s | scored rows/s | size settled | expected | rows/batch | fill+inference p99 (ms) | first row p99 (ms) | inference p50 / p99 (ms) |"
    );
    let _ = writeln!(text, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &out.runs {
        let s = &r.run.settled;
        let offered = if r.rate > 0.0 {
            format!("{:.0}", r.rate)
        } else {
            "as taken".into()
        };
        let expected = r
            .expected
            .map_or("—".into(), |(lo, hi)| format!("{lo}–{hi}"));
        let _ = writeln!(
            text,
            "| {} | {offered} | {:.0} | {} | {expected} | {:.1} | {:.3} | {:.3} | {:.3} / {:.3} |",
            r.device,
            s.rows_per_second,
            s.batch_size,
            s.rows_per_batch,
            ms(s.fill_and_inference_p99),
            ms(s.first_row_p99),
            ms(s.inference_p50),
            ms(s.inference_p99),
        );
    }
    let _ = writeln!(
        text,
        "\nThe batch size over each run (every 0.25 s); every row offered came back scored once, in order:"
    );
    for r in &out.runs {
        let sizes: Vec<String> = (r.run.sizes.iter().step_by(5))
            .map(|(_, size)| size.to_string())
            .collect();
        let _ = writeln!(
            text,
            "- {} at {}: {} rows in {} batches; {}",
            r.device,
            if r.rate > 0.0 {
                format!("{:.0} rows/s", r.rate)
            } else {
                "as taken".into()
            },
            r.run.rows,
            r.run.batches,
            sizes.join(" ")
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fit_goes_through_the_smallest_and_the_largest_batch() {
        // 30 µs per call and 0.01 µs per row, as a GPU might.
        let points: Vec<(usize, f64)> = [1, 16, 128, 1024, 8192]
            .iter()
            .map(|&b| (b, 30e-6 + 0.01e-6 * b as f64))
            .collect();
        let cost = CallCost::fit(&points);
        assert!((cost.fixed.as_secs_f64() - 30e-6).abs() < 1e-9, "{cost:?}");
        assert!(
            (cost.per_row.as_secs_f64() - 0.01e-6).abs() < 1e-12,
            "{cost:?}"
        );
    }

    #[test]
    fn the_band_is_where_fill_and_inference_meet_the_target() {
        let mut settings = Settings::load_with_env(None, false).expect("the defaults load");
        settings.batching.mode = BatchMode::Adaptive;
        settings.batching.latency_target = Duration::from_millis(2);
        settings.batching.max_batch_delay = Duration::from_millis(2);
        settings.batching.max_batch_size = 8192;
        let cost = CallCost {
            fixed: Duration::from_micros(30),
            per_row: Duration::from_nanos(10),
        };
        // 1 M rows/s: a row fills in 1 µs, so b·1.01 µs + 30 µs = 1.6 ms or 2 ms.
        let (lo, hi) = expected_band(&settings, cost, 1e6).expect("adaptive, rate set");
        assert_eq!((lo, hi), (1554, 1950));
        // 100 k rows/s: a row fills in 10 µs.
        assert_eq!(expected_band(&settings, cost, 100e3), Some((156, 196)));
        // A 1 ms delay closes batches at 1000 rows, before the latency stops
        // the growth at 1554: the size stops one step (an eighth) past 1000.
        settings.batching.max_batch_delay = Duration::from_millis(1);
        assert_eq!(expected_band(&settings, cost, 1e6), Some((1000, 1126)));
        settings.batching.mode = BatchMode::Fixed;
        assert_eq!(expected_band(&settings, cost, 1e6), None);
    }
}
