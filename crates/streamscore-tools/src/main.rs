//! `streamscore-tools`: what surrounds the processor, apart from it: the
//! embedded demo, the end-to-end benchmark, and the upstream producer.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use streamscore::telemetry::logging;
use streamscore::{DevicePreference, Format, LogFormat, Settings};
use streamscore_tools::batching::{self, BatchingOptions};
use streamscore_tools::bench::{self, BenchOptions};
use streamscore_tools::demo::{self, DemoOptions};
use streamscore_tools::inference::{self, InferenceOptions};

#[derive(Parser)]
#[command(
    name = "streamscore-tools",
    version,
    about = "Tools around the streamscore processor: demo, bench, produce."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publish JSON lines as encrypted events, as an upstream producer would.
    /// Every line is encoded before the first is sent (a bad line sends
    /// nothing), so the input must end: a file or a finite pipe, not
    /// `tail -f`. Exits non-zero naming the records not delivered and why.
    Produce {
        /// TOML file layered over the defaults: broker, input topic and format, keys.
        #[arg(long)]
        config: Option<PathBuf>,
        /// JSON lines to read (default: standard input).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Topic to publish to (default: the first of input.topics).
        #[arg(long)]
        topic: Option<String>,
        /// JSON field holding the record key.
        #[arg(long, default_value = "card_id")]
        key_field: String,
        /// Confluent schema id to write with (default: the id mapped to input.reader_schema).
        #[arg(long, conflicts_with_all = ["register", "lookup"])]
        schema_id: Option<u32>,
        /// Register the writer schema in input.schema_registry under the
        /// topic's subject (<topic>-value) and write with the id it gives.
        #[arg(long, conflicts_with = "lookup")]
        register: bool,
        /// Look the writer schema up in input.schema_registry under the
        /// topic's subject and write with its id (it must be registered).
        #[arg(long)]
        lookup: bool,
        /// The writer schema for --register and --lookup (default: input.reader_schema).
        #[arg(long)]
        writer_schema: Option<PathBuf>,
    },
    /// Benchmark end to end on a broker, exactly-once on: the raw Kafka path
    /// and ONNX Runtime alone as ceilings, the pipeline's maximum throughput,
    /// and latency against offered load; prints Markdown tables and draws a plot.
    Bench {
        /// Kafka bootstrap servers (scripts/kafka sets STREAMSCORE_BOOTSTRAP).
        #[arg(long, env = "STREAMSCORE_BOOTSTRAP")]
        bootstrap: String,
        /// Backlog of encrypted events for the throughput phases.
        #[arg(long, default_value_t = 300_000)]
        events: u64,
        /// Offered-load steps of the latency sweep (10 gives 10 %, 20 %, … 100 %).
        #[arg(long, default_value_t = 10)]
        levels: u32,
        /// Seconds of steady load per step.
        #[arg(long, default_value_t = 5.0)]
        level_seconds: f64,
        /// Seconds of standalone ONNX Runtime inference for its ceiling.
        #[arg(long, default_value_t = 3.0)]
        inference_seconds: f64,
        /// Records/s of the light-load scenarios (latency and CPU per record
        /// of the service as its own process).
        #[arg(long, default_value_t = 5_000)]
        light_rate: u64,
        /// TOML file layered over the defaults (batching, model, threads, …).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Directory for results.md and latency.png.
        #[arg(long, default_value = "target/bench")]
        out: PathBuf,
        /// TrueType font for the plot's labels.
        #[arg(
            long,
            default_value = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
        )]
        font: PathBuf,
    },
    /// Run the embedded demo against a broker: produce, score, verify.
    Demo(DemoOptions),
    /// ONNX Runtime alone, no broker: the fixture rows against Python
    /// onnxruntime's scores, then per-call latency and throughput at each
    /// batch size on each device (how the GPU is measured against the CPU).
    Inference {
        /// TOML file layered over the defaults (model, threads, onnxruntime.library).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Devices, in order: cpu, cuda (a device that does not open fails the run).
        #[arg(long, value_delimiter = ',', default_value = "cpu", value_parser = device)]
        devices: Vec<DevicePreference>,
        /// Batch sizes (rows per call).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "1,8,32,128,512,2048,8192"
        )]
        batches: Vec<usize>,
        /// Seconds of calls at each batch size (at least ten calls).
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
        /// Rows with Python onnxruntime's scores [default: the model's own,
        /// fixtures/<card name>.expected.json beside its card].
        #[arg(long)]
        fixtures: Option<PathBuf>,
        /// Also each device with batches staged in its host memory through an
        /// IoBinding (page-locked on CUDA): rows `cuda+pinned`, `cpu+bound`.
        #[arg(long)]
        pinned: bool,
    },
    /// The batcher and the inference workers alone, no broker: generated
    /// rows offered at each rate, the batch size watched settling, beside
    /// the band the device's per-call cost puts it in.
    Batching {
        /// TOML file layered over the defaults (model, `[batching]`, sessions).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Devices, in order: cpu, cuda (a device that does not open fails the run).
        #[arg(long, value_delimiter = ',', default_value = "cpu", value_parser = device)]
        devices: Vec<DevicePreference>,
        /// Rows offered per second, one run each; 0 offers them as fast as they are taken.
        #[arg(long, value_delimiter = ',', default_value = "20000,100000,0")]
        rates: Vec<f64>,
        /// Seconds each rate runs (the figures are over its second half).
        #[arg(long, default_value_t = 4.0)]
        seconds: f64,
    },
}

fn device(s: &str) -> Result<DevicePreference, String> {
    match s.parse() {
        Ok(DevicePreference::Auto) | Err(_) => Err(format!("{s:?}: cpu or cuda")),
        Ok(device) => Ok(device),
    }
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
    let result = runtime.block_on(execute(cli.command));
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

/// The writer schema `produce` encodes with, and the id it frames.
fn writer_schema(
    settings: &Settings,
    topic: &str,
    writer_id: WriterId,
) -> anyhow::Result<(apache_avro::Schema, u32)> {
    use streamscore::load_schema;
    use streamscore::schema_registry::RegistryClient;

    let (register, path) = match writer_id {
        WriterId::Mapped(schema_id) => {
            let ids = settings.input.avro_schemas.clone();
            let (id, path) = match schema_id {
                Some(id) => ids.into_iter().find(|(i, _)| *i == id),
                None => ids.into_iter().find(|(_, p)| *p == settings.input.reader_schema),
            }
            .context("no schema id to write with: pass --schema-id, or map input.reader_schema in input.avro_schemas, or use --register with input.schema_registry")?;
            return Ok((load_schema(&path)?, id));
        }
        WriterId::Register(path) => (true, path),
        WriterId::Lookup(path) => (false, path),
    };
    let registry = &settings.input.schema_registry;
    anyhow::ensure!(
        registry.enabled(),
        "--register and --lookup need input.schema_registry.urls in the config"
    );
    let path = path.unwrap_or_else(|| settings.input.reader_schema.clone());
    let schema = load_schema(&path)?;
    // As the file is written: the registry then holds what the team wrote.
    let text = std::fs::read_to_string(&path)?;
    let subject = format!("{topic}-value");
    let client = RegistryClient::new(registry)?;
    let id = if register {
        client.register(&subject, &text)?
    } else {
        client.lookup(&subject, &text)?.with_context(|| {
            format!(
                "{} is not registered under subject {subject} (use --register)",
                path.display()
            )
        })?
    };
    Ok((schema, id))
}

async fn execute(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Produce {
            config,
            file,
            topic,
            key_field,
            schema_id,
            register,
            lookup,
            writer_schema,
        } => {
            let writer = match (register, lookup) {
                (true, _) => WriterId::Register(writer_schema),
                (_, true) => WriterId::Lookup(writer_schema),
                _ if writer_schema.is_some() => {
                    anyhow::bail!("--writer-schema goes with --register or --lookup")
                }
                _ => WriterId::Mapped(schema_id),
            };
            tokio::task::spawn_blocking(move || produce(config, file, topic, &key_field, writer))
                .await?
        }
        Command::Bench {
            bootstrap,
            events,
            levels,
            level_seconds,
            inference_seconds,
            light_rate,
            config,
            out,
            font,
        } => {
            logging::init(LogFormat::Human, "warn,librdkafka=error");
            anyhow::ensure!(
                level_seconds > 0.0 && inference_seconds > 0.0 && events > 0 && light_rate > 0,
                "--events, --level-seconds, --inference-seconds and --light-rate must be positive"
            );
            bench(BenchOptions {
                bootstrap,
                events,
                levels,
                level_duration: seconds_arg("--level-seconds", level_seconds)?,
                inference_duration: seconds_arg("--inference-seconds", inference_seconds)?,
                light_rate,
                config,
                out,
                font,
            })
            .await
        }
        Command::Demo(options) => {
            logging::init(LogFormat::Human, "warn,librdkafka=error");
            demo(options).await
        }
        Command::Inference {
            config,
            devices,
            batches,
            seconds,
            fixtures,
            pinned,
        } => {
            let per_batch = seconds_arg("--seconds", seconds)?;
            inference_alone(config, devices, batches, per_batch, fixtures, pinned).await
        }
        Command::Batching {
            config,
            devices,
            rates,
            seconds,
        } => batching_alone(config, devices, rates, seconds).await,
    }
}

/// `inference`: the fixture check and the batch-size sweep, printed as a table.
async fn inference_alone(
    config: Option<PathBuf>,
    devices: Vec<DevicePreference>,
    batches: Vec<usize>,
    per_batch: Duration,
    fixtures: Option<PathBuf>,
    pinned: bool,
) -> anyhow::Result<()> {
    logging::init(LogFormat::Human, "warn");
    let settings = Settings::load(config.as_deref())?;
    let fixtures = fixtures.unwrap_or_else(|| inference::fixtures_of(&settings.model.card));
    let opts = InferenceOptions {
        settings,
        devices,
        batches,
        per_batch,
        fixtures,
        pinned,
    };
    let sweep = tokio::task::spawn_blocking(move || inference::run(&opts)).await??;
    print!("{}", inference::render(&sweep));
    Ok(())
}

/// `batching`: the batcher and workers at each offered rate, printed as a table.
async fn batching_alone(
    config: Option<PathBuf>,
    devices: Vec<DevicePreference>,
    rates: Vec<f64>,
    seconds: f64,
) -> anyhow::Result<()> {
    logging::init(LogFormat::Human, "warn");
    let per_rate = seconds_arg("--seconds", seconds)?;
    anyhow::ensure!(
        rates
            .iter()
            .all(|&r| r == 0.0 || (r.is_finite() && r >= 1.0)),
        "--rates must be rows per second: 0 (as fast as taken) or at least 1"
    );
    let settings = Settings::load(config.as_deref())?;
    let opts = BatchingOptions {
        settings: settings.clone(),
        devices,
        rates,
        per_rate,
    };
    let out =
        tokio::task::spawn_blocking(move || batching::run(&opts).map_err(anyhow::Error::from))
            .await??;
    print!("{}", batching::render(&settings, &out));
    Ok(())
}

/// A positive number of seconds, at most a day: `inf` or `1e300` would
/// panic in `Duration`, and no measurement here runs for days.
fn seconds_arg(flag: &str, seconds: f64) -> anyhow::Result<Duration> {
    match Duration::try_from_secs_f64(seconds) {
        Ok(d) if !d.is_zero() && d <= Duration::from_secs(24 * 3600) => Ok(d),
        _ => anyhow::bail!(
            "{flag} must be a positive number of seconds, at most a day (86400), not {seconds:?}"
        ),
    }
}

/// Runs the demo and fails the process when the independent reader found a
/// record lost or duplicated, so that scripts can rely on the exit status.
async fn demo(opts: DemoOptions) -> anyhow::Result<()> {
    let report = demo::run(opts).await?;
    println!("{}", report.line());
    anyhow::ensure!(report.exactly_once(), "records were lost or duplicated");
    Ok(())
}

/// Runs the bench, prints its report, writes results.md and latency.png, and
/// ends with the one-line summary.
async fn bench(opts: BenchOptions) -> anyhow::Result<()> {
    let out = opts.out.clone();
    let font = opts.font.clone();
    let results = bench::run(opts).await?;
    let table = bench::render_report(&results);
    println!("\n{table}");
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let md = out.join("results.md");
    std::fs::write(&md, &table).with_context(|| format!("cannot write {}", md.display()))?;
    let png = out.join("latency.png");
    match bench::draw_plot(&results, &png, &font) {
        Ok(()) => println!("bench: wrote {} and {}", md.display(), png.display()),
        // The figures stand without the picture; say why it is missing.
        Err(e) => println!("bench: wrote {}; no plot: {e}", md.display()),
    }
    println!("{}", bench::last_line(&results));
    Ok(())
}

/// Where `produce` gets the schema id it frames records with.
enum WriterId {
    /// An id of input.avro_schemas (default: the one mapped to input.reader_schema).
    Mapped(Option<u32>),
    /// The writer schema (default: input.reader_schema) registered under the topic's subject.
    Register(Option<PathBuf>),
    /// The writer schema's id under the topic's subject.
    Lookup(Option<PathBuf>),
}

fn produce(
    config: Option<PathBuf>,
    file: Option<PathBuf>,
    topic: Option<String>,
    key_field: &str,
    writer_id: WriterId,
) -> anyhow::Result<()> {
    use streamscore_tools::produce::LineEncoder;
    use streamscore_tools::publish;

    let settings = Settings::load(config.as_deref())?;
    let keyring = settings.keys.load().context("cannot load the keyring")?;
    let format = settings.input.format;
    let topic = topic.unwrap_or_else(|| settings.input.topics[0].clone());
    let writer = match format {
        Format::Json => None,
        Format::Avro => Some(writer_schema(&settings, &topic, writer_id)?),
    };
    let encoder = LineEncoder {
        format,
        avro: writer.as_ref().map(|(s, id)| (s, *id)),
        keyring: &keyring,
        key_field,
    };
    let input: Box<dyn std::io::BufRead> = match &file {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let records = encoder.encode_all(input)?;
    let producer = publish::publisher(&settings)?;
    for (i, record) in records.iter().enumerate() {
        if let Err(e) = publish::publish(&producer, &topic, record) {
            let before = match publish::flush(&producer) {
                Ok(n) => format!("the {n} before it were delivered"),
                Err(f) => format!("of those before it, {f}"),
            };
            anyhow::bail!(
                "record {} of {} to {topic}: {e}; {before}; the rest were not sent",
                i + 1,
                records.len()
            );
        }
    }
    let delivered = publish::flush(&producer).with_context(|| format!("producing to {topic}"))?;
    if let Some((_, id)) = &writer {
        eprintln!("wrote with schema id {id}");
    }
    eprintln!(
        "produced {delivered} records to {topic} (key {})",
        keyring.active_id()
    );
    Ok(())
}
