//! The `streamscore` command line: `run` the processor, or `demo` it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::signal::unix::{SignalKind, signal};

use streamscore::config::{Format, Settings};
use streamscore::demo::{self, DemoOptions};
use streamscore::envelope::Keyring;
use streamscore::pipeline::Pipeline;
use streamscore::telemetry::http::{Health, serve};
use streamscore::telemetry::{LiveStats, logging, metrics};

#[derive(Parser)]
#[command(
    name = "streamscore",
    version,
    about = "Encrypted Kafka events in, ONNX Runtime scores out, exactly once."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the processor until SIGTERM/SIGINT.
    Run {
        /// TOML file layered over the defaults (config/default.toml lists every key).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the embedded demo against a broker: produce, score, verify.
    Demo {
        /// Kafka bootstrap servers (scripts/kafka sets STREAMSCORE_BOOTSTRAP).
        #[arg(long, env = "STREAMSCORE_BOOTSTRAP")]
        bootstrap: String,
        /// Stop after this many events (default: run until Ctrl-C).
        #[arg(long)]
        events: Option<u64>,
        /// Events per second offered.
        #[arg(long, default_value_t = 2000)]
        rate: u64,
        /// Percentage of deliberately bad records (tampered, wrong key, garbage, …).
        #[arg(long, default_value_t = 3.0)]
        bad_percent: f64,
        /// Plaintext format of the synthetic events.
        #[arg(long, value_enum, default_value_t = FormatArg::Avro)]
        format: FormatArg,
        /// Address for /metrics while the demo runs.
        #[arg(long, default_value = "127.0.0.1:9464")]
        metrics_listen: SocketAddr,
        /// TOML file layered over the defaults (batching, model, …).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Avro,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run { config } => run(config).await,
            Command::Demo {
                bootstrap,
                events,
                rate,
                bad_percent,
                format,
                metrics_listen,
                config,
            } => {
                logging::init("human", "warn,librdkafka=error");
                let report = demo::run(DemoOptions {
                    bootstrap,
                    events,
                    rate,
                    bad_percent,
                    format: match format {
                        FormatArg::Avro => Format::Avro,
                        FormatArg::Json => Format::Json,
                    },
                    metrics_listen,
                    config,
                })
                .await?;
                println!("{}", report.line());
                anyhow::ensure!(report.exactly_once(), "records were lost or duplicated");
                Ok(())
            }
        }
    });
    // A stage stuck past the grace period must not keep the process alive.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Option<PathBuf>) -> anyhow::Result<()> {
    // Signals are caught from the first moment, so a SIGTERM during start-up
    // (model warm-up, joining the group) still ends in a clean stop, never a kill.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let settings = Settings::load(config.as_deref())?;
    logging::init(
        &settings.telemetry.log_format,
        &settings.telemetry.log_level,
    );
    let keyring =
        Arc::new(Keyring::from_settings(&settings.keys).context("cannot load the keyring")?);
    tracing::info!(keys = ?keyring, "keyring loaded");

    let health = Arc::new(Health::default());
    let listen: SocketAddr = settings.telemetry.listen.parse()?;
    let (addr, _server) = serve(listen, metrics::install(), health.clone())
        .await
        .with_context(|| format!("cannot listen on telemetry.listen = {listen}"))?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");

    let stats = Arc::new(LiveStats::default());
    let starting = {
        let settings = settings.clone();
        tokio::task::spawn_blocking(move || Pipeline::start(&settings, keyring, stats))
    };
    tokio::pin!(starting);
    let mut stop_requested = false;
    let pipeline = loop {
        tokio::select! {
            started = &mut starting => break started??,
            _ = terminate.recv() => { tracing::info!("SIGTERM during start-up: stopping once started"); stop_requested = true; }
            _ = interrupt.recv() => { tracing::info!("SIGINT during start-up: stopping once started"); stop_requested = true; }
        }
    };
    if !stop_requested {
        health.ready.store(true, Ordering::Relaxed);
        let mut check = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = terminate.recv() => { tracing::info!("SIGTERM: committing and stopping"); break; }
                _ = interrupt.recv() => { tracing::info!("SIGINT: committing and stopping"); break; }
                _ = check.tick() => if pipeline.has_stopped() { break; },
            }
        }
    }
    health.ready.store(false, Ordering::Relaxed);
    pipeline.stop();
    let grace = settings.grace_period();
    match tokio::time::timeout(grace, tokio::task::spawn_blocking(move || pipeline.join())).await {
        Ok(joined) => joined??,
        Err(_) => anyhow::bail!(
            "shutdown did not finish within shutdown.grace_period_ms = {}; exiting without the final commit (the next start resumes from the last one)",
            grace.as_millis()
        ),
    }
    tracing::info!("stopped cleanly");
    Ok(())
}
