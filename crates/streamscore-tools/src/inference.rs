//! `streamscore-tools inference`: ONNX Runtime alone, no broker (the GPU
//! machine has no Kafka and no Java). For each device asked for, the fixture
//! rows scored against Python onnxruntime's scores, then per-call latency
//! and throughput at each batch size, with the CPU's figures beside them.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use streamscore::{
    Device, DevicePreference, FeaturePlan, FeatureRows, Fields, ModelSession, Settings,
    VerifiedModel,
};

/// Scores may differ from Python onnxruntime's by at most this much.
pub const FIXTURE_TOLERANCE: f64 = 1e-5;

#[derive(Debug, Clone)]
pub struct InferenceOptions {
    pub settings: Settings,
    pub devices: Vec<DevicePreference>,
    pub batches: Vec<usize>,
    /// Time spent calling at each batch size, after one warm-up call.
    pub per_batch: Duration,
    /// Rows with Python onnxruntime's scores (models/make_fixtures.py).
    pub fixtures: PathBuf,
    /// Each device again with batches staged in its host memory through an
    /// IoBinding (page-locked on CUDA): rows `cuda+pinned`, `cpu+bound`.
    pub pinned: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum InferenceBenchError {
    #[error(transparent)]
    Pipeline(#[from] streamscore::PipelineError),
    #[error(transparent)]
    Inference(#[from] streamscore::InferenceError),
    #[error("cannot read the fixtures {path}: {message}")]
    Fixtures { path: String, message: String },
    #[error(
        "{device}: fixture row {row} scored {got}, Python onnxruntime {want} (more than {FIXTURE_TOLERANCE} apart)"
    )]
    Mismatch {
        device: &'static str,
        row: String,
        got: f32,
        want: f64,
    },
}

/// One batch size on one device.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub device: &'static str,
    pub batch: usize,
    pub rows_per_second: f64,
    pub call_p50_ms: f64,
    pub call_p99_ms: f64,
}

#[derive(Debug, Clone, Default)]
pub struct Sweep {
    /// Per device: rows compared and the largest difference from Python's score.
    pub fixtures: Vec<(&'static str, usize, f64)>,
    pub points: Vec<Point>,
    /// Variants that could not be measured, and why (the rest of the sweep stands).
    pub not_measured: Vec<(&'static str, String)>,
}

/// Runs the sweep. A device that does not open (no CUDA) is an error: a
/// proof that quietly ran on the CPU would prove nothing.
pub fn run(opts: &InferenceOptions) -> Result<Sweep, InferenceBenchError> {
    let settings = &opts.settings;
    let (model, runtime) = model_and_runtime(settings)?;
    let (rows, want) = fixture_rows(opts, &model)?;
    let mut sweep = Sweep::default();
    for &preference in &opts.devices {
        let threads = settings.model.intra_op_threads as usize;
        let cuda = &settings.model.cuda;
        let mut session = ModelSession::open_with(&runtime, &model, preference, threads, cuda)?;
        let device = session.device().as_str();
        sweep_one(&mut sweep, &mut session, device, opts, (&rows, &want))?;
        if opts.pinned {
            let bound = match session.device() {
                Device::Cuda => "cuda+pinned",
                Device::Cpu => "cpu+bound",
            };
            // A variant under trial: its failure is reported beside the
            // sweep, which stands (the device's time is not to be lost).
            let kept = (sweep.fixtures.len(), sweep.points.len());
            let staged = (session.stage_in_host_memory())
                .map_err(InferenceBenchError::from)
                .and_then(|()| sweep_one(&mut sweep, &mut session, bound, opts, (&rows, &want)));
            if let Err(e) = staged {
                sweep.fixtures.truncate(kept.0);
                sweep.points.truncate(kept.1);
                sweep.not_measured.push((bound, e.to_string()));
            }
        }
    }
    Ok(sweep)
}

/// The fixtures, then every batch size, on one session as it is set up.
fn sweep_one(
    sweep: &mut Sweep,
    session: &mut ModelSession,
    device: &'static str,
    opts: &InferenceOptions,
    (rows, want): (&[FeatureRows], &Expected),
) -> Result<(), InferenceBenchError> {
    let worst = compare(session, device, rows, want)?;
    sweep.fixtures.push((device, want.len(), worst));
    for &batch in &opts.batches {
        let point = measure(session, device, (rows, batch.max(1)), opts.per_batch)?;
        sweep.points.push(point);
    }
    Ok(())
}

/// What a broker-free measurement starts from, checked as `run` checks it:
/// the settings, the card's verified model, and ONNX Runtime loaded.
pub(crate) fn model_and_runtime(
    settings: &Settings,
) -> Result<(VerifiedModel, streamscore::Runtime), InferenceBenchError> {
    settings
        .validate()
        .map_err(streamscore::PipelineError::from)?;
    let model =
        VerifiedModel::load(&settings.model.card).map_err(streamscore::PipelineError::from)?;
    let runtime = streamscore::init_runtime(&settings.onnxruntime_library())?;
    Ok((model, runtime))
}

/// Each fixture row's event id and Python onnxruntime's score of it.
type Expected = Vec<(String, f64)>;

/// The fixture a model's card has: `fixtures/<name>.expected.json` beside the
/// card `<name>.card.json` (models/fixtures/fraud_gbm.expected.json for the
/// default model).
pub fn fixtures_of(card: &std::path::Path) -> PathBuf {
    let file = card
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = file.strip_suffix(".card.json").unwrap_or(&file);
    card.with_file_name("fixtures")
        .join(format!("{name}.expected.json"))
}

/// The fixture rows, one `FeatureRows` each, and what Python scored them.
fn fixture_rows(
    opts: &InferenceOptions,
    model: &VerifiedModel,
) -> Result<(Vec<FeatureRows>, Expected), InferenceBenchError> {
    let path = opts.fixtures.display().to_string();
    let fail = |message: String| InferenceBenchError::Fixtures {
        path: path.clone(),
        message,
    };
    let text = std::fs::read_to_string(&opts.fixtures).map_err(|e| fail(e.to_string()))?;
    let fixture: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?;
    if fixture["model_sha256"] != model.card.sha256.as_str() {
        return Err(fail(
            "made for another model: rerun the script that wrote it (models/make_fixtures.py, models/train_default.py, models/zoo.py)".into(),
        ));
    }
    let plan = FeaturePlan::new(&model.card);
    let (mut pool, mut want) = (Vec::new(), Vec::new());
    for row in fixture["rows"].as_array().into_iter().flatten() {
        let mut features = FeatureRows::default();
        let event = row["event"].as_object().cloned().unwrap_or_default();
        let id = event
            .get("event_id")
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_owned();
        plan.extract(&Fields::Json(event), &mut features)
            .map_err(|e| fail(format!("{id}: {e}")))?;
        pool.push(features);
        let score = row["score"]
            .as_f64()
            .ok_or_else(|| fail(format!("{id}: no score")))?;
        want.push((id, score));
    }
    if want.is_empty() {
        return Err(fail("no rows".into()));
    }
    Ok((pool, want))
}

/// Scores the fixture rows in one batch; the largest difference from Python's.
fn compare(
    session: &mut ModelSession,
    device: &'static str,
    pool: &[FeatureRows],
    want: &[(String, f64)],
) -> Result<f64, InferenceBenchError> {
    let mut scores = Vec::with_capacity(want.len());
    session.score_rows(&batch_of(pool, pool.len()), want.len(), &mut scores)?;
    let mut worst = 0.0f64;
    for ((row, want), &got) in want.iter().zip(&scores) {
        let diff = (f64::from(got) - want).abs();
        if diff > FIXTURE_TOLERANCE {
            return Err(InferenceBenchError::Mismatch {
                device,
                row: row.clone(),
                got,
                want: *want,
            });
        }
        worst = worst.max(diff);
    }
    Ok(worst)
}

/// A batch of `rows` rows taken in turn from `pool` (one row each).
pub(crate) fn batch_of(pool: &[FeatureRows], rows: usize) -> FeatureRows {
    let mut batch = FeatureRows::default();
    for row in pool.iter().cycle().take(rows) {
        batch.extend_from(row);
    }
    batch
}

/// Calls the session on a batch of `pool`'s rows (real events, string
/// features too) for `duration` (at least ten calls), after a warm-up call
/// that lets ONNX Runtime plan the shape.
pub(crate) fn measure(
    session: &mut ModelSession,
    device: &'static str,
    (pool, batch): (&[FeatureRows], usize),
    duration: Duration,
) -> Result<Point, InferenceBenchError> {
    let features = batch_of(pool, batch);
    let mut scores = Vec::with_capacity(batch);
    session.score_rows(&features, batch, &mut scores)?;
    let mut calls = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
        .expect("constant histogram bounds are valid");
    let (started, mut n) = (Instant::now(), 0u64);
    while n < 10 || started.elapsed() < duration {
        scores.clear();
        let t = Instant::now();
        session.score_rows(&features, batch, &mut scores)?;
        calls.saturating_record(t.elapsed().as_micros() as u64);
        n += 1;
    }
    Ok(Point {
        device,
        batch,
        rows_per_second: (n * batch as u64) as f64 / started.elapsed().as_secs_f64(),
        call_p50_ms: calls.value_at_quantile(0.5) as f64 / 1000.0,
        call_p99_ms: calls.value_at_quantile(0.99) as f64 / 1000.0,
    })
}

/// The fixture lines and a Markdown table; `× cpu` is each point's
/// throughput over the CPU's at the same batch size, when the CPU was run.
pub fn render(sweep: &Sweep) -> String {
    let mut out = String::new();
    for (device, rows, worst) in &sweep.fixtures {
        let _ = writeln!(
            out,
            "fixtures: {device}: {rows} rows, largest difference from Python onnxruntime {worst:.1e} (≤ {FIXTURE_TOLERANCE:.0e})"
        );
    }
    for (device, why) in &sweep.not_measured {
        let _ = writeln!(out, "not measured: {device}: {why}");
    }
    let _ = writeln!(
        out,
        "\n| device | batch | rows/s | call p50 (ms) | call p99 (ms) | × cpu |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    for p in &sweep.points {
        let cpu = (sweep.points.iter())
            .find(|c| c.device == "cpu" && c.batch == p.batch)
            .map_or(String::new(), |c| {
                format!("{:.2}", p.rows_per_second / c.rows_per_second)
            });
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.3} | {:.3} | {cpu} |",
            p.device, p.batch, p.rows_per_second, p.call_p50_ms, p.call_p99_ms
        );
    }
    out
}
