//! `streamscore-tools bench`: the end-to-end benchmark on a real broker, with
//! exactly-once on. In one run, on the same broker and model, it measures
//!
//! 1. ceiling (a), the raw Kafka path (consume → transactional produce of the
//!    same bytes, no work), on a pre-loaded backlog, best of two passes;
//! 2. ceiling (b), ONNX Runtime alone at the configured batch size;
//! 3. the pipeline's maximum throughput on the same backlog;
//! 4. a latency-vs-throughput sweep at 10 %…100 % of that maximum;
//!
//! and prints the figures as ratios of the ceilings. Both pipeline phases are
//! checked exactly-once by the independent reader before any figure counts.

mod inference_ceiling;
mod kafka_ceiling;
mod kstreams;
mod latency_reader;
mod plot;
mod report;
mod scenario_report;
mod scenarios;
mod service;
mod stages;

pub use kstreams::ReferenceRun;
pub use plot::draw as draw_plot;
pub use report::{last_line, render as render_report};
pub use scenarios::{Drain, Light, Recovery, Scenarios};

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant};

use crate::admin::create_topics;
use crate::events::EventFactory;
use crate::publish::{self, StreamPlan};
use crate::verify;
use inference_ceiling::InferenceCeiling;
use kafka_ceiling::Throughput;
use stages::Snapshot;
use streamscore::telemetry::Stats;
use streamscore::{Format, Settings};
use streamscore::{Keyring, share};
use streamscore::{Pipeline, prepare};

/// A phase that makes no progress for this long is reported, not waited on.
const STALL: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("Kafka: {0}")]
    Kafka(String),
    #[error("{phase}: no progress for {} s ({done} of {expected} records done)", STALL.as_secs())]
    Stalled {
        phase: &'static str,
        done: u64,
        expected: u64,
    },
    #[error("{phase}: exactly-once check failed: {line}")]
    NotExactlyOnce { phase: &'static str, line: String },
    #[error(transparent)]
    Pipeline(#[from] streamscore::PipelineError),
    #[error(transparent)]
    Inference(#[from] streamscore::InferenceError),
    #[error(transparent)]
    Config(#[from] streamscore::ConfigError),
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
    #[error(transparent)]
    Verify(#[from] verify::VerifyError),
    #[error(transparent)]
    Keyring(#[from] streamscore::KeyringError),
    #[error("cannot draw {path}: {message}")]
    Plot { path: String, message: String },
    #[error("cannot write {path}: {error}")]
    Write { path: String, error: std::io::Error },
    #[error("the service process: {0}")]
    Service(String),
}

pub struct BenchOptions {
    pub bootstrap: String,
    /// Backlog size for the two throughput phases.
    pub events: u64,
    /// Offered-load steps of the sweep: 1/levels … levels/levels of the maximum.
    pub levels: u32,
    pub level_duration: Duration,
    pub inference_duration: Duration,
    /// Records/s of the light-load scenarios.
    pub light_rate: u64,
    pub config: Option<PathBuf>,
    /// Where the table (results.md) and the plot (latency.png) go.
    pub out: PathBuf,
    /// A TrueType font for the plot's labels.
    pub font: PathBuf,
}

/// One step of the sweep.
#[derive(Debug, Clone)]
pub struct Level {
    pub share: f64,
    pub offered: f64,
    pub achieved: f64,
    pub records: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub stages: Snapshot,
}

/// Everything one run measured.
#[derive(Debug, Clone)]
pub struct Results {
    pub machine: String,
    pub settings: Settings,
    pub device: String,
    pub events: u64,
    pub kafka: Throughput,
    pub inference: InferenceCeiling,
    pub pipeline: Throughput,
    pub mean_batch: f64,
    pub pipeline_stages: Snapshot,
    pub levels: Vec<Level>,
    pub scenarios: Scenarios,
    pub verified: Vec<String>,
}

/// Runs every phase; the caller prints [`report::render`] and the last line.
pub async fn run(opts: BenchOptions) -> Result<Results, BenchError> {
    let run_id = format!(
        "bench-{}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0),
        std::process::id()
    );
    let mut settings = Settings::load_with_env(opts.config.as_deref(), false)?;
    settings.kafka.bootstrap_servers = opts.bootstrap.clone();
    settings.validate()?;
    let topics = Topics::new(&run_id);
    create_topics(
        &settings,
        &[
            (topics.backlog.as_str(), 4),
            (topics.steady.as_str(), 4),
            (topics.raw.as_str(), 4),
            (topics.scores.as_str(), 4),
            (topics.sweep_scores.as_str(), 4),
            (topics.light.as_str(), 4),
            (topics.short_light.as_str(), 4),
            (topics.service_scores.as_str(), 4),
            (topics.pause_scores.as_str(), 4),
            (topics.short_scores.as_str(), 4),
            (topics.kstreams_scores.as_str(), 4),
            (topics.dead_letters.as_str(), 1),
        ],
    )
    .await?;
    tokio::task::spawn_blocking(move || measure(&opts, settings, &topics, &run_id))
        .await
        .map_err(|e| BenchError::Kafka(format!("the bench thread failed: {e}")))?
}

struct Topics {
    backlog: String,
    steady: String,
    raw: String,
    scores: String,
    sweep_scores: String,
    /// The light-load streams of the two service processes.
    light: String,
    short_light: String,
    service_scores: String,
    pause_scores: String,
    short_scores: String,
    /// The Kafka Streams reference's scores (it reads the backlog too).
    kstreams_scores: String,
    dead_letters: String,
}

impl Topics {
    fn new(run: &str) -> Self {
        Self {
            backlog: format!("{run}.backlog"),
            steady: format!("{run}.steady"),
            raw: format!("{run}.raw"),
            scores: format!("{run}.scores"),
            sweep_scores: format!("{run}.sweep-scores"),
            light: format!("{run}.light"),
            short_light: format!("{run}.short-light"),
            service_scores: format!("{run}.service-scores"),
            pause_scores: format!("{run}.pause-scores"),
            short_scores: format!("{run}.short-scores"),
            kstreams_scores: format!("{run}.kstreams-scores"),
            dead_letters: format!("{run}.dead-letters"),
        }
    }
}

/// The settings of one phase: its own group, transactional.id and topics.
fn phase_settings(base: &Settings, name: &str, input: &str, scores: &str, dlq: &str) -> Settings {
    let mut s = base.clone();
    s.kafka.group_id = name.to_owned();
    s.kafka.transactional_id = format!("{name}-0");
    s.kafka.group_instance_id = None;
    s.input.topics = vec![input.to_owned()];
    s.output.topic = scores.to_owned();
    s.output.dead_letter_topic = dlq.to_owned();
    s
}

/// Seals and publishes the bench's synthetic events. Every phase draws from
/// the one keyring, so each pipeline it starts can read every topic.
struct Source {
    keyring: Arc<Keyring>,
    /// The same keyring as the service process reads it.
    keyring_json: String,
    format: Format,
    producer: publish::Publisher,
    /// The bench publishes bounded streams only; nothing ever stops one early.
    never: AtomicBool,
}

impl Source {
    fn new(settings: &Settings) -> Result<Self, BenchError> {
        let (keyring, keyring_json) = Keyring::generate("bench-key-1")?;
        let producer = publish::publisher(settings).map_err(publish_error)?;
        Ok(Self {
            keyring: Arc::new(keyring),
            keyring_json,
            format: settings.input.format,
            producer,
            never: AtomicBool::new(false),
        })
    }

    /// Publishes `events` records at `rate` per second; returns how many
    /// the broker acknowledged.
    fn publish(
        &self,
        topic: &str,
        run: &str,
        seed: u64,
        events: u64,
        rate: u64,
    ) -> Result<u64, BenchError> {
        let factory = EventFactory::new(self.keyring.clone(), self.format, run, seed);
        let plan = StreamPlan {
            events: Some(events),
            rate,
            bad_per_mille: 0,
        };
        publish::stream(
            &self.producer,
            topic,
            factory,
            &plan,
            &AtomicU64::new(0),
            &self.never,
        )
        .map_err(publish_error)
    }
}

fn publish_error(e: publish::PublishError) -> BenchError {
    BenchError::Kafka(e.to_string())
}

/// The pipeline draining the backlog as fast as it can.
struct FullSpeed {
    throughput: Throughput,
    mean_batch: f64,
    stages: Snapshot,
    verified: String,
}

/// What every phase shares, so that each phase is one method.
struct Bench<'a> {
    opts: &'a BenchOptions,
    settings: &'a Settings,
    topics: &'a Topics,
    run_id: &'a str,
    source: &'a Source,
}

fn measure(
    opts: &BenchOptions,
    settings: Settings,
    topics: &Topics,
    run_id: &str,
) -> Result<Results, BenchError> {
    let source = Source::new(&settings)?;
    let bench = Bench {
        opts,
        settings: &settings,
        topics,
        run_id,
        source: &source,
    };
    bench.publish_backlog()?;
    let kafka = bench.kafka_ceiling()?;
    let (device, inference) = bench.inference_ceiling()?;
    let full = bench.full_speed()?;
    let (levels, sweep_verified) = bench.sweep(full.throughput.rows_per_second())?;
    let mut scenarios = bench.scenarios()?;
    let mut verified = vec![full.verified, sweep_verified];
    verified.append(&mut scenarios.verified);
    Ok(Results {
        machine: machine(),
        settings,
        device,
        events: opts.events,
        kafka,
        inference,
        pipeline: full.throughput,
        mean_batch: full.mean_batch,
        pipeline_stages: full.stages,
        levels,
        scenarios,
        verified,
    })
}

impl Bench<'_> {
    /// This phase's settings: its own group and transactional.id, named
    /// after the run so that no two runs share one.
    fn phase(&self, name: &str, input: &str, scores: &str) -> Settings {
        phase_settings(
            self.settings,
            &format!("{}.{name}", self.run_id),
            input,
            scores,
            &self.topics.dead_letters,
        )
    }

    /// The backlog both throughput phases read, published before either
    /// starts so that neither waits on the producer.
    fn publish_backlog(&self) -> Result<(), BenchError> {
        let started = Instant::now();
        let events = self.opts.events;
        self.source
            .publish(&self.topics.backlog, self.run_id, 7, events, u64::MAX / 2)?;
        println!(
            "bench: {} encrypted events published to {} in {:.1} s",
            events,
            self.topics.backlog,
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Ceiling (a). Best of two passes (each its own group, so each reads the
    /// whole backlog): on a small machine one pass alone varies by a third.
    fn kafka_ceiling(&self) -> Result<Throughput, BenchError> {
        let (backlog, raw) = (&self.topics.backlog, &self.topics.raw);
        let events = self.opts.events;
        let mut best = kafka_ceiling::raw_path(&self.phase("raw", backlog, raw), raw, events)?;
        let again = kafka_ceiling::raw_path(&self.phase("raw2", backlog, raw), raw, events)?;
        if again.rows_per_second() > best.rows_per_second() {
            best = again;
        }
        println!(
            "bench: (a) raw Kafka path: {:.0} rows/s",
            best.rows_per_second()
        );
        Ok(best)
    }

    /// Ceiling (b), on the sessions the pipeline would get; returns the
    /// device they run on with it.
    fn inference_ceiling(&self) -> Result<(String, InferenceCeiling), BenchError> {
        let prepared = prepare(self.settings)?;
        let device = prepared.device().as_str().to_owned();
        let inference = inference_ceiling::standalone(
            prepared.sessions,
            self.settings.batching.max_batch_size as usize,
            self.opts.inference_duration,
        )?;
        println!(
            "bench: (b) ONNX Runtime alone at batch {}: {:.0} rows/s",
            inference.batch, inference.rows_per_second
        );
        Ok((device, inference))
    }

    /// Maximum throughput: the pipeline drains the same backlog as (a), timed
    /// from its first record so that start-up does not count.
    fn full_speed(&self) -> Result<FullSpeed, BenchError> {
        let events = self.opts.events;
        let pipe = self.phase("pipeline", &self.topics.backlog, &self.topics.scores);
        let stats = Arc::new(Stats::default());
        let keyring = share(self.source.keyring.clone());
        let pipeline = Pipeline::start(&pipe, keyring, stats.clone())?;
        let first = wait_for("pipeline", &stats, |s| s.consumed(), 1)?;
        wait_for("pipeline", &stats, Stats::committed, events)?;
        let throughput = Throughput {
            rows: events,
            seconds: first.elapsed().as_secs_f64(),
        };
        let stages = Snapshot::take(&stats);
        let (batches, rows) = stats.batches();
        let mean_batch = rows as f64 / batches.max(1) as f64;
        pipeline.stop();
        pipeline.join()?;
        println!(
            "bench: pipeline at full speed: {:.0} rows/s (mean batch {mean_batch:.0} rows)",
            throughput.rows_per_second()
        );
        Ok(FullSpeed {
            throughput,
            mean_batch,
            stages,
            verified: check("pipeline", &pipe)?,
        })
    }

    /// The sweep: a steady stream at each share of `max_rows_per_second`,
    /// drained before the next, so that one level's queue never shows up in
    /// the next one's latency. Returns the levels and the exactly-once line.
    fn sweep(&self, max_rows_per_second: f64) -> Result<(Vec<Level>, String), BenchError> {
        let sweep = self.phase("sweep", &self.topics.steady, &self.topics.sweep_scores);
        let stats = Arc::new(Stats::default());
        let keyring = share(self.source.keyring.clone());
        let pipeline = Pipeline::start(&sweep, keyring, stats.clone())?;
        let max = max_rows_per_second.max(1.0);
        // A few records first, so the group join does not count as latency.
        let warm_up = format!("{}-warm", self.run_id);
        let mut total = self
            .source
            .publish(&self.topics.steady, &warm_up, 8, 100, 1000)?;
        wait_for("sweep", &stats, Stats::committed, total)?;
        let mut levels = Vec::new();
        for step in 1..=self.opts.levels.max(1) {
            let level = self.sweep_level(&stats, step, max, &mut total)?;
            print_level(&level);
            levels.push(level);
        }
        pipeline.stop();
        pipeline.join()?;
        Ok((levels, check("sweep", &sweep)?))
    }

    /// One step of the sweep. `total` counts every record published to the
    /// steady topic so far, which is what the pipeline must have committed.
    fn sweep_level(
        &self,
        stats: &Stats,
        step: u32,
        max: f64,
        total: &mut u64,
    ) -> Result<Level, BenchError> {
        let share = f64::from(step) / f64::from(self.opts.levels.max(1));
        let rate = (max * share).round().max(1.0) as u64;
        let events = ((rate as f64) * self.opts.level_duration.as_secs_f64())
            .round()
            .max(1.0) as u64;
        stats.take_latency();
        let before = Snapshot::take(stats);
        let t = Instant::now();
        let run = format!("{}-l{step}", self.run_id);
        let seed = u64::from(step) + 100;
        *total += self
            .source
            .publish(&self.topics.steady, &run, seed, events, rate)?;
        wait_for("sweep", stats, Stats::committed, *total)?;
        let elapsed = t.elapsed().as_secs_f64();
        let latency = stats.take_latency();
        let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
        Ok(Level {
            share,
            offered: rate as f64,
            achieved: events as f64 / elapsed,
            records: events,
            p50_ms: ms(0.50),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
            stages: Snapshot::take(stats).since(&before),
        })
    }
}

fn print_level(level: &Level) {
    println!(
        "bench: sweep {:>3.0}%: offered {:>7.0} rows/s, achieved {:>7.0}, p50 {:>6.1} ms, p99 {:>6.1} ms",
        level.share * 100.0,
        level.offered,
        level.achieved,
        level.p50_ms,
        level.p99_ms
    );
}

/// Waits until `progress(stats)` reaches `target`; returns when it first
/// did. A phase without progress for [`STALL`] is an error.
fn wait_for(
    phase: &'static str,
    stats: &Stats,
    progress: impl Fn(&Stats) -> u64,
    target: u64,
) -> Result<Instant, BenchError> {
    let mut last = (progress(stats), Instant::now());
    loop {
        let now = progress(stats);
        if now >= target {
            return Ok(Instant::now());
        }
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > STALL {
            return Err(BenchError::Stalled {
                phase,
                done: now,
                expected: target,
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The independent reader's verdict on one phase; a figure from a run that
/// lost or duplicated a record is worth nothing.
fn check(phase: &'static str, settings: &Settings) -> Result<String, BenchError> {
    let report = verify::verify_settings(settings, Duration::from_secs(120))?;
    if !report.exactly_once() || report.produced != report.scored + report.dead_lettered {
        return Err(BenchError::NotExactlyOnce {
            phase,
            line: report.line(),
        });
    }
    Ok(format!("{phase}: {}", report.line()))
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}
