//! `streamscore-tools demo`: the embedded default. On a broker it is given, it
//! creates its own topics, publishes encrypted synthetic transactions (a few
//! deliberately bad), runs the real pipeline on them, prints a live line each
//! second, and finally checks with an independent reader that every event
//! landed exactly once in the score or dead-letter topic.

mod status;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::admin::create_topics;
use crate::events::EventFactory;
use crate::publish;
use crate::verify::{self, Report};
use streamscore::Pipeline;
use streamscore::telemetry::Stats;
use streamscore::telemetry::{Health, serve};
use streamscore::{Format, Settings};
use streamscore::{Keyring, share};

/// `streamscore-tools demo`'s options (its command line, through clap).
#[derive(Debug, clap::Args)]
pub struct DemoOptions {
    /// Kafka bootstrap servers (scripts/kafka sets STREAMSCORE_BOOTSTRAP).
    #[arg(long, env = "STREAMSCORE_BOOTSTRAP")]
    pub bootstrap: String,
    /// Stop after this many events (default: run until Ctrl-C).
    #[arg(long)]
    pub events: Option<u64>,
    /// Events per second offered.
    #[arg(long, default_value_t = 2000)]
    pub rate: u64,
    /// Percentage of deliberately bad records (tampered, wrong key, garbage, …).
    #[arg(long, default_value_t = 3.0)]
    pub bad_percent: f64,
    /// Plaintext format of the synthetic events.
    #[arg(long, value_enum, default_value_t = Format::Avro)]
    pub format: Format,
    /// Address for /metrics while the demo runs.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub metrics_listen: SocketAddr,
    /// TOML file layered over the defaults (batching, model, …).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Runs the demo; returns the verification report.
pub async fn run(opts: DemoOptions) -> anyhow::Result<Report> {
    let run_id = format!(
        "demo-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    );
    let settings = demo_settings(&opts, &run_id)?;
    let input_topic = settings.input.topics[0].clone();
    create_demo_topics(&opts, &settings, &input_topic).await?;
    let stats = Arc::new(Stats::default());
    let (health, _server) = serve_metrics(opts.metrics_listen, &settings, &stats).await?;
    let keyring = Arc::new(Keyring::generate("demo-key-1")?.0);
    let pipeline = start_pipeline(&settings, &keyring, &stats, &health).await?;
    announce(&opts, &settings, &pipeline);
    let producing = Producing::start(&opts, &settings, &keyring, &run_id, input_topic)?;
    watch(&stats, &pipeline, &producing).await;
    shut_down(producing, pipeline, &health).await?;
    verify_and_report(settings).await
}

/// The embedded defaults, pointed at this run's own topics, group and
/// transactional.id so that a demo never meets an earlier one's records.
fn demo_settings(opts: &DemoOptions, run_id: &str) -> anyhow::Result<Settings> {
    let mut settings = Settings::load_with_env(opts.config.as_deref(), false)?;
    settings.kafka.bootstrap_servers = opts.bootstrap.clone();
    settings.kafka.group_id = run_id.to_owned();
    settings.kafka.transactional_id = format!("{run_id}-0");
    settings.input.topics = vec![format!("{run_id}.transactions")];
    settings.input.format = opts.format;
    settings.output.topic = format!("{run_id}.scores");
    settings.output.dead_letter_topic = format!("{run_id}.dead-letters");
    settings.validate()?;
    Ok(settings)
}

async fn create_demo_topics(
    opts: &DemoOptions,
    settings: &Settings,
    input_topic: &str,
) -> anyhow::Result<()> {
    println!(
        "demo: broker {} · topics {input_topic} → {} / {}",
        opts.bootstrap, settings.output.topic, settings.output.dead_letter_topic
    );
    create_topics(
        settings,
        &[
            (input_topic, 4),
            (settings.output.topic.as_str(), 4),
            (settings.output.dead_letter_topic.as_str(), 1),
        ],
    )
    .await?;
    Ok(())
}

/// Serves /metrics and the probes while the demo runs, so that the demo
/// shows what an operator of the real service would scrape.
async fn serve_metrics(
    listen: SocketAddr,
    settings: &Settings,
    counters: &Arc<Stats>,
) -> anyhow::Result<(Arc<Health>, tokio::task::JoinHandle<()>)> {
    let handle = streamscore::telemetry::metrics::install();
    let health = Arc::new(Health::new(settings.telemetry.stall_timeout));
    let (addr, server) = serve(listen, handle, counters.clone(), health.clone(), None)
        .await
        .with_context(|| format!("cannot listen on {listen} for /metrics"))?;
    println!("demo: metrics at http://{addr}/metrics");
    Ok((health, server))
}

/// Starts the pipeline off the async threads (its start blocks until the
/// model is warm and the producer fenced) and marks the service ready.
async fn start_pipeline(
    settings: &Settings,
    keyring: &Arc<Keyring>,
    stats: &Arc<Stats>,
    health: &Health,
) -> anyhow::Result<Pipeline> {
    let pipeline = {
        let (settings, keyring, stats) = (settings.clone(), keyring.clone(), stats.clone());
        tokio::task::spawn_blocking(move || Pipeline::start(&settings, share(keyring), stats))
            .await??
    };
    health.attach(pipeline.signals());
    health.ready.store(true, Ordering::Relaxed);
    Ok(pipeline)
}

fn announce(opts: &DemoOptions, settings: &Settings, pipeline: &Pipeline) {
    println!(
        "demo: scoring on {} with model {}; {} events at {}/s, {:.1}% deliberately bad{}",
        pipeline.device().as_str(),
        settings.model.card.display(),
        opts.events.map_or("unbounded".into(), |n| n.to_string()),
        opts.rate,
        opts.bad_percent,
        if opts.events.is_none() {
            " (Ctrl-C stops and verifies)"
        } else {
            ""
        }
    );
}

/// The upstream producer, on its own thread so that its pacing does not
/// depend on the async runtime.
struct Producing {
    produced: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl Producing {
    fn start(
        opts: &DemoOptions,
        settings: &Settings,
        keyring: &Arc<Keyring>,
        run_id: &str,
        topic: String,
    ) -> anyhow::Result<Self> {
        let produced = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (produced, stop) = (produced.clone(), stop.clone());
            let (settings, keyring, run_id) =
                (settings.clone(), keyring.clone(), run_id.to_owned());
            let (events, rate, bad_percent, format) =
                (opts.events, opts.rate.max(1), opts.bad_percent, opts.format);
            std::thread::Builder::new()
                .name("demo-producer".into())
                .spawn(move || {
                    let producer = publish::publisher(&settings)?;
                    let plan = publish::StreamPlan {
                        events,
                        rate,
                        bad_per_mille: (bad_percent * 10.0).round() as u64,
                    };
                    let factory = EventFactory::new(keyring, format, &run_id, 42);
                    publish::stream(&producer, &topic, factory, &plan, &produced, &stop)?;
                    anyhow::Ok(())
                })?
        };
        Ok(Self {
            produced,
            stop,
            thread,
        })
    }
}

/// Prints the live line once a second until everything produced is
/// committed, the pipeline stops on its own, or progress stalls. Ctrl-C only
/// stops the producer: what was produced still drains, so it can be verified.
async fn watch(stats: &Stats, pipeline: &Pipeline, producing: &Producing) {
    let started = Instant::now();
    let mut status = status::StatusLine::default();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let mut last_progress = (0u64, Instant::now());
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    // A finished future must not be polled again: the Ctrl-C branch is
    // off once it has fired (the draining goes on with the ticks).
    let mut interrupted = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = &mut ctrl_c, if !interrupted => {
                interrupted = true;
                println!("demo: stopping the producer; draining and verifying…");
                producing.stop.store(true, Ordering::Relaxed);
            }
        }
        let n = producing.produced.load(Ordering::Relaxed);
        println!(
            "{}",
            status.render(stats, n, started.elapsed(), Duration::from_secs(1))
        );
        let committed = stats.committed();
        if committed != last_progress.0 {
            last_progress = (committed, Instant::now());
        }
        if pipeline.has_stopped() {
            println!("demo: the pipeline stopped on its own; see the log above");
            break;
        }
        if producing.thread.is_finished() && committed >= n {
            break;
        }
        if producing.thread.is_finished() && last_progress.1.elapsed() > Duration::from_secs(60) {
            println!("demo: no progress for 60 s; stopping to verify");
            break;
        }
    }
}

/// Stops the producer, then the pipeline; an error either of them returned
/// is reported only once both have stopped.
async fn shut_down(
    producing: Producing,
    pipeline: Pipeline,
    health: &Health,
) -> anyhow::Result<()> {
    producing.stop.store(true, Ordering::Relaxed);
    let producer_result = producing
        .thread
        .join()
        .map_err(|_| anyhow::anyhow!("the demo producer panicked"))?;
    pipeline.stop();
    health.ready.store(false, Ordering::Relaxed);
    let pipeline_result = tokio::task::spawn_blocking(move || pipeline.join()).await?;
    producer_result?;
    pipeline_result?;
    Ok(())
}

/// The independent reader's report, with what it found beyond the line
/// the caller prints: why records were dead-lettered, and whether the
/// pipeline's committed offsets reached the end of the input.
async fn verify_and_report(settings: Settings) -> anyhow::Result<Report> {
    let report = tokio::task::spawn_blocking(move || {
        verify::verify_settings(&settings, Duration::from_secs(120))
    })
    .await??;
    let reasons: Vec<String> = report
        .dead_letter_reasons
        .iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    println!(
        "demo: dead-letter reasons: {}",
        if reasons.is_empty() {
            "none".into()
        } else {
            reasons.join(", ")
        }
    );
    let flagged = (report.scores.iter())
        .filter(|s| s.decision == streamscore::Decision::Flag)
        .count();
    let scored = report.scores.len().max(1);
    let models: std::collections::BTreeSet<String> = (report.scores.iter())
        .map(|s| format!("{} {}", s.model_name, s.model_version))
        .collect();
    println!(
        "demo: decisions: FLAG {flagged} ({:.2} % of scored), PASS {}; by {}",
        100.0 * flagged as f64 / scored as f64,
        report.scores.len() - flagged,
        models.into_iter().collect::<Vec<_>>().join(", ")
    );
    println!(
        "demo: committed offsets {} the input end offsets",
        if report.offsets_committed_to_end() {
            "equal"
        } else {
            "DO NOT equal"
        }
    );
    Ok(report)
}
