//! The `streamscore` command line: `run` the processor, `check` a config, edit a keyring (`keys`). The tools (demo, bench, produce) are `streamscore-tools`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};

use streamscore::Pipeline;
use streamscore::keyring_watch::{self as keywatch, KeyringStatus};
use streamscore::telemetry::{Health, serve};
use streamscore::telemetry::{SUMMARY_EVERY, Summary};
use streamscore::telemetry::{Stats, logging, metrics};
use streamscore::{Keyring, SharedKeyring, share};
use streamscore::{LogFormat, Settings};

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
    /// Validate a config without touching Kafka: check every value, load the
    /// keyring, create the Kafka clients (librdkafka checks their properties),
    /// verify the model's hash, load and warm it up, and print the card and
    /// the effective settings (secrets redacted). Exit 0 when it would start.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print the least Kafka ACLs the processor's principal needs for this
    /// config: Read on the input topics and the group, Write on the score and
    /// dead-letter (and shadow) topics and on the transactional id; as
    /// kafka-acls commands or a Strimzi KafkaUser.
    Acls {
        #[arg(long)]
        config: Option<PathBuf>,
        /// The principal, e.g. User:streamscore (kafka-acls) or the user name (Strimzi).
        #[arg(long, default_value = "User:streamscore")]
        principal: String,
        /// Grant the transactional id by this prefix (one id per replica,
        /// as the chart's kafka.transactionalIdPrefix + pod name) instead of
        /// kafka.transactional_id.
        #[arg(long)]
        transactional_id_prefix: Option<String>,
        #[arg(long, value_enum, default_value = "kafka-acls")]
        format: AclFormat,
        /// The Strimzi Kafka cluster the KafkaUser belongs to.
        #[arg(long, default_value = "my-cluster")]
        strimzi_cluster: String,
    },
    /// Keyring tools.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Model tools.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum AclFormat {
    KafkaAcls,
    Strimzi,
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Write the card a model is served by: its SHA-256, the signature read
    /// from the graph, each feature's Avro field with its type checked
    /// against the reader schema, the version and the training record; the
    /// card is loaded back and checked as `check` would.
    Card(Box<CardArgs>),
}

#[derive(clap::Args)]
struct CardArgs {
    /// The ONNX model.
    #[arg(long)]
    model: PathBuf,
    /// The matrix's columns in order: name (read from the field of that
    /// name) or name=field, comma-separated or repeated.
    #[arg(long, value_delimiter = ',')]
    features: Vec<streamscore::model_card::FeatureMapping>,
    /// The reader schema the features' fields are checked against [default: input.reader_schema of --config].
    #[arg(long)]
    schema: Option<PathBuf>,
    /// The output holding the score [default: the one output that holds probabilities or a score].
    #[arg(long)]
    output: Option<String>,
    /// The positive class: its label in a ZipMap, its column in a probability matrix.
    #[arg(long, default_value = "1")]
    positive_class: String,
    /// Scores at or above it are flagged.
    #[arg(long, default_value_t = 0.5)]
    threshold: f64,
    /// The model's name [default: the file's stem].
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    version: String,
    /// SHA-256 of the training data, recorded on the card.
    #[arg(long)]
    training_data_sha256: Option<String>,
    /// An evaluation metric, key=value (repeat it); wins over --mlflow-run's.
    #[arg(long = "metric", value_parser = metric)]
    metrics: Vec<(String, f64)>,
    /// An MLflow run folder (mlruns/<experiment id>/<run id>): its final
    /// metrics and the run and model ids go on the card.
    #[arg(long)]
    mlflow_run: Option<PathBuf>,
    /// Where the card goes [default: <model stem>.card.json beside the model].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Settings for the ONNX Runtime library and the default reader schema.
    #[arg(long)]
    config: Option<PathBuf>,
}

fn metric(s: &str) -> Result<(String, f64), String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: a metric is key=value"))?;
    let value: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: the value of a metric is a number"))?;
    Ok((key.trim().to_owned(), value))
}

/// Rotation is two steps so that no record is sealed with a key a processor
/// lacks: `add` (inactive), wait until every processor reports it loaded
/// (`streamscore_keyring_keys`), then `activate`. README, "Key rotation".
#[derive(Subcommand)]
enum KeysCommand {
    /// Print a new keyring with one fresh key, active.
    Generate {
        /// Key id (1..=64 bytes), e.g. the month it starts: 2026-11.
        #[arg(long)]
        id: String,
        /// No longer supported: adding a key to a ring is `keys add`, making it active `keys activate`.
        #[arg(long, hide = true)]
        into: Option<PathBuf>,
    },
    /// Add a fresh key to a keyring file, NOT active (rotation step one).
    Add {
        /// Key id (1..=64 bytes), e.g. the month it starts: 2026-11.
        #[arg(long)]
        id: String,
        /// Keyring file to edit (rewritten with mode 0600).
        #[arg(long)]
        into: PathBuf,
    },
    /// Make a key already in the keyring file the active one, the key
    /// producers seal with (rotation step two, once every processor has it).
    Activate {
        #[arg(long)]
        id: String,
        /// Keyring file to edit (rewritten with mode 0600).
        #[arg(long)]
        into: PathBuf,
    },
    /// Remove a retired key (not the active one) from a keyring file.
    Remove {
        #[arg(long)]
        id: String,
        /// Keyring file to edit (rewritten with mode 0600).
        #[arg(long)]
        into: PathBuf,
    },
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
            Command::Keys { command } => keys(command),
            Command::Acls {
                config,
                principal,
                transactional_id_prefix,
                format,
                strimzi_cluster,
            } => {
                let settings = Settings::load(config.as_deref())?;
                let acls =
                    streamscore::acls::minimal(&settings, transactional_id_prefix.as_deref());
                match format {
                    AclFormat::KafkaAcls => print!(
                        "{}",
                        streamscore::acls::as_kafka_acls(
                            &acls,
                            &principal,
                            &settings.kafka.bootstrap_servers
                        )
                    ),
                    AclFormat::Strimzi => {
                        let user = principal.strip_prefix("User:").unwrap_or(&principal);
                        print!(
                            "{}",
                            streamscore::acls::as_strimzi(&acls, user, &strimzi_cluster)
                        );
                    }
                }
                Ok(())
            }
            Command::Model {
                command: ModelCommand::Card(args),
            } => model_card(*args),
            Command::Check { config } => tokio::task::spawn_blocking(move || check(config)).await?,
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

/// The signals `run` answers: SIGTERM and SIGINT stop, SIGHUP reloads the keyring.
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn catch() -> std::io::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }
}

/// The keyring in use and its watcher: a keyring file is watched for
/// rotation (and reloaded on SIGHUP); one from the environment cannot change
/// while the process runs.
struct Keys {
    shared: SharedKeyring,
    status: Arc<KeyringStatus>,
    from_file: bool,
    reload_requested: Arc<AtomicBool>,
    watcher_stop: Arc<AtomicBool>,
}

impl Keys {
    fn load_and_watch(settings: &Settings) -> anyhow::Result<Self> {
        // The keyring file's version before it is read: a rotation that lands
        // between this first load and the watcher's start is still seen.
        let version = settings.keys.file.as_deref().and_then(keywatch::modified);
        let shared = share(Arc::new(refusals_before_connecting(settings)?));
        {
            let loaded = shared.load();
            tracing::info!(
                key_ids = %loaded.key_ids().join(","),
                active = %loaded.active_id(),
                "keyring loaded"
            );
        }
        let keys = Keys {
            status: Arc::new(KeyringStatus::new(shared.clone())),
            shared,
            from_file: settings.keys.file.is_some(),
            reload_requested: Arc::new(AtomicBool::new(false)),
            watcher_stop: Arc::new(AtomicBool::new(false)),
        };
        if let Some(file) = &settings.keys.file {
            keywatch::watch(
                file.clone(),
                keys.status.clone(),
                version,
                Duration::from_secs(2),
                keys.reload_requested.clone(),
                keys.watcher_stop.clone(),
            )?;
        }
        Ok(keys)
    }

    fn on_hangup(&self) {
        if self.from_file {
            tracing::info!("SIGHUP: reloading the keyring");
            self.reload_requested.store(true, Ordering::Relaxed);
        } else {
            tracing::info!("SIGHUP: the keyring comes from the environment; nothing to reload");
        }
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        self.watcher_stop.store(true, Ordering::Relaxed);
    }
}

async fn run(config: Option<PathBuf>) -> anyhow::Result<()> {
    // Signals are caught from the first moment, so a SIGTERM during start-up
    // (model warm-up, joining the group) still ends in a clean stop, never a kill.
    let mut signals = Signals::catch()?;
    let settings = Settings::load(config.as_deref())?;
    logging::init(settings.telemetry.log_format, &settings.telemetry.log_level);
    let keys = Keys::load_and_watch(&settings)?;

    let health = Arc::new(
        Health::new(settings.telemetry.stall_timeout)
            .with_commit_wait_limit(settings.kafka.request_timeout),
    );
    let listen = settings.telemetry.listen;
    let stats = Arc::new(Stats::default());
    let (addr, _server) = serve(
        listen,
        metrics::install(),
        stats.clone(),
        health.clone(),
        Some(keys.status.clone()),
    )
    .await
    .with_context(|| format!("cannot listen on telemetry.listen = {listen}"))?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");

    // Before the start reads the card: a card changed while the pipeline
    // starts is then seen as changed, and swapped in once it runs.
    let card_watch = streamscore::CardWatch::new(&settings.model.card);
    let (pipeline, stop_requested) =
        match start_pipeline(&settings, &keys, stats.clone(), &mut signals).await? {
            Ok(started) => started,
            Err(e) => return linger_then_fail(e, &settings, &health, &mut signals).await,
        };
    // Whether the pipeline stopped on its own (a failure), not on a signal.
    let stopped_on_its_own = !stop_requested
        && serve_until_stopped(&pipeline, &health, stats, &keys, card_watch, &mut signals).await;
    health.ready.store(false, Ordering::Relaxed);
    pipeline.stop();
    let grace = settings.shutdown.grace_period;
    match tokio::time::timeout(grace, tokio::task::spawn_blocking(move || pipeline.join())).await {
        Ok(joined) => match joined? {
            Ok(()) => {}
            Err(e) if stopped_on_its_own => {
                drop(keys);
                return linger_then_fail(e.into(), &settings, &health, &mut signals).await;
            }
            Err(e) => return Err(e.into()),
        },
        Err(_) => anyhow::bail!(
            "shutdown did not finish within shutdown.grace_period_ms = {}; exiting without the final commit (the next start resumes from the last one)",
            grace.as_millis()
        ),
    }
    drop(keys);
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Starts the pipeline off the async threads, answering signals meanwhile.
/// `Ok(Ok((pipeline, stop_requested)))` once started; `Ok(Err(_))` when the
/// start failed on its own (the caller lingers before it exits); `Err(_)`
/// when it failed after a stop was asked for.
async fn start_pipeline(
    settings: &Settings,
    keys: &Keys,
    stats: Arc<Stats>,
    signals: &mut Signals,
) -> anyhow::Result<Result<(Pipeline, bool), anyhow::Error>> {
    let starting = {
        let (settings, keyring) = (settings.clone(), keys.shared.clone());
        tokio::task::spawn_blocking(move || Pipeline::start(&settings, keyring, stats))
    };
    tokio::pin!(starting);
    let mut stop_requested = false;
    loop {
        tokio::select! {
            started = &mut starting => return match started? {
                Ok(pipeline) => Ok(Ok((pipeline, stop_requested))),
                Err(e) if stop_requested => Err(e.into()),
                Err(e) => Ok(Err(e.into())),
            },
            _ = signals.terminate.recv() => { tracing::info!("SIGTERM during start-up: stopping once started"); stop_requested = true; }
            _ = signals.interrupt.recv() => { tracing::info!("SIGINT during start-up: stopping once started"); stop_requested = true; }
            _ = signals.hangup.recv() => keys.on_hangup(),
        }
    }
}

/// Ready until a stop signal or until the pipeline stops on its own (then
/// true); logs the summary every minute meanwhile.
async fn serve_until_stopped(
    pipeline: &Pipeline,
    health: &Health,
    stats: Arc<Stats>,
    keys: &Keys,
    mut card_watch: streamscore::CardWatch,
    signals: &mut Signals,
) -> bool {
    let swapper = pipeline.model_swapper();
    health.attach(pipeline.signals());
    health.ready.store(true, Ordering::Relaxed);
    let mut check = tokio::time::interval(Duration::from_millis(200));
    let mut summary = Summary::new(stats);
    let mut minute =
        tokio::time::interval_at(tokio::time::Instant::now() + SUMMARY_EVERY, SUMMARY_EVERY);
    loop {
        tokio::select! {
            _ = signals.terminate.recv() => { tracing::info!("SIGTERM: committing and stopping"); return false; }
            _ = signals.interrupt.recv() => { tracing::info!("SIGINT: committing and stopping"); return false; }
            _ = signals.hangup.recv() => {
                keys.on_hangup();
                swapper.request("SIGHUP");
            }
            _ = check.tick() => {
                if pipeline.has_stopped() { return true; }
                if card_watch.changed() {
                    swapper.request("the model card file changed");
                }
            }
            _ = minute.tick() => summary.log(),
        }
    }
}

/// After stopping on an error, keeps serving /metrics (unready, not alive)
/// for `telemetry.exit_linger_ms`, so Prometheus scrapes what says why (an
/// inference error counter, this run's start time) before the restart
/// resets it; a SIGTERM or SIGINT ends the wait. Returns the error.
async fn linger_then_fail(
    error: anyhow::Error,
    settings: &Settings,
    health: &Health,
    signals: &mut Signals,
) -> anyhow::Result<()> {
    health.fail(format!("{error:#}"));
    let linger = settings.telemetry.exit_linger;
    if !linger.is_zero() {
        tracing::error!(
            error = %format!("{error:#}"),
            linger_ms = linger.as_millis() as u64,
            "stopping on an error; serving /metrics until telemetry.exit_linger_ms has passed"
        );
        tokio::select! {
            _ = tokio::time::sleep(linger) => {}
            _ = signals.terminate.recv() => tracing::info!("SIGTERM: not lingering any longer"),
            _ = signals.interrupt.recv() => tracing::info!("SIGINT: not lingering any longer"),
        }
    }
    Err(error)
}

fn keys(command: KeysCommand) -> anyhow::Result<()> {
    let (id, path, edit, done): (_, _, fn(&str, &str) -> _, _) = match command {
        KeysCommand::Generate { id, into: None } => {
            // The one place a key is printed: the user asked for it, on stdout.
            let (_, json) = Keyring::generate(&id)?;
            println!("{json}");
            return Ok(());
        }
        KeysCommand::Generate {
            id,
            into: Some(path),
        } => anyhow::bail!(
            "keys generate --into no longer adds and activates in one step (producers that switched at once had their records dead-lettered as unknown_key until every processor reloaded). Run `streamscore keys add --id {id} --into {path}`, wait until every processor reports streamscore_keyring_keys{{key_id=\"{id}\"}}, then `streamscore keys activate --id {id} --into {path}`",
            path = path.display()
        ),
        KeysCommand::Add { id, into } => (
            id,
            into,
            Keyring::add_json,
            "added key {id} to {path}, inactive. Next: roll the file out to every processor; once each replica reports streamscore_keyring_keys{key_id=\"{id}\"} (README, \"Key rotation\"), run `streamscore keys activate --id {id} --into {path}` and give producers the new ring",
        ),
        KeysCommand::Activate { id, into } => (
            id,
            into,
            Keyring::activate_json,
            "key {id} is now the active key in {path}: producers using this ring seal with it",
        ),
        KeysCommand::Remove { id, into } => (
            id,
            into,
            Keyring::remove_json,
            "removed key {id} from {path}: records still sealed with it will be dead-lettered as unknown_key",
        ),
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read keyring {}", path.display()))?;
    let edited = edit(&text, &id)?;
    write_keyring(&path, &edited)?;
    eprintln!(
        "{}",
        done.replace("{id}", &id)
            .replace("{path}", &path.display().to_string())
    );
    Ok(())
}

/// Replaces the keyring file atomically (a processor polling it never reads
/// half a file), readable by its owner only.
fn write_keyring(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

/// What `run` refuses before it connects, so `check` refuses it too: the
/// keyring, and every Kafka client's properties as librdkafka creates them.
fn refusals_before_connecting(settings: &Settings) -> anyhow::Result<Keyring> {
    let keyring = settings.keys.load().context("cannot load the keyring")?;
    streamscore::clients::create_clients(settings)?;
    Ok(keyring)
}

fn model_card(args: CardArgs) -> anyhow::Result<()> {
    let settings = Settings::load(args.config.as_deref())?;
    logging::init(LogFormat::Human, "warn,ort=error");
    let runtime = streamscore::init_runtime(&settings.onnxruntime_library())?;
    let stem = args
        .model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let request = streamscore::model_card::CardRequest {
        out: args
            .out
            .unwrap_or_else(|| args.model.with_file_name(format!("{stem}.card.json"))),
        features: (!args.features.is_empty()).then_some(args.features),
        schema: args.schema.unwrap_or(settings.input.reader_schema.clone()),
        output: args.output,
        positive_class: args.positive_class,
        threshold: args.threshold,
        name: args.name.unwrap_or(stem),
        version: args.version,
        training_data_sha256: args.training_data_sha256,
        metrics: args.metrics,
        mlflow_run: args.mlflow_run,
        model: args.model,
    };
    let model = streamscore::model_card::write_card(&runtime, &request)?;
    let card = &model.card;
    println!(
        "wrote {}: {} {}, SHA-256 {}, {} features from {}, score from output {:?} ({})",
        request.out.display(),
        card.name,
        card.version,
        card.sha256,
        card.features.len(),
        request.schema.display(),
        card.output.name,
        card.output.read.kind()
    );
    Ok(())
}

fn check(config: Option<PathBuf>) -> anyhow::Result<()> {
    let settings = Settings::load(config.as_deref())?;
    logging::init(LogFormat::Human, "warn,ort=error");
    let keyring = refusals_before_connecting(&settings)?;
    let prepared = streamscore::prepare(&settings)?;
    let card = &prepared.model.card;
    let device = prepared.device().as_str();
    let sizes = streamscore::warm_up_sizes(&settings);
    println!(
        "model: {} {} at {}: SHA-256 {} verified, {} features, warmed up on {device} at batch sizes {sizes:?}",
        card.name,
        card.version,
        prepared.model.model_path.display(),
        card.sha256,
        card.features.len(),
    );
    if let Some(shadow) = &prepared.shadow {
        let card = &shadow.model.card;
        println!(
            "shadow: {} {} at {}: SHA-256 {} verified, same features, warmed up; its results go to {}",
            card.name,
            card.version,
            shadow.model.model_path.display(),
            card.sha256,
            settings.output.shadow_topic,
        );
    }
    if settings.input.schema_registry.enabled() {
        println!(
            "schema registry: {} (writer schemas of the ids input.avro_schemas does not map)",
            settings.input.schema_registry.urls.join(", "),
        );
    }
    if settings.output.format == streamscore::Format::Avro {
        println!(
            "scores: Avro, framed with schema id {}",
            prepared.encoder.schema_id()
        );
    }
    let card_text = std::fs::read_to_string(&settings.model.card)?;
    let card_json: serde_json::Value = serde_json::from_str(&card_text)?;
    println!("model card: {}", serde_json::to_string_pretty(&card_json)?);
    println!(
        "keyring: key ids {} (active {})",
        keyring.key_ids().join(", "),
        keyring.active_id()
    );
    println!(
        "effective settings: {}",
        serde_json::to_string_pretty(&settings.redacted())?
    );
    println!("check: ok");
    Ok(())
}
