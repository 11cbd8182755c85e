//! Wires the stages of the data flow (docs/design.md), each on its own thread, joined
//! by bounded channels:
//!
//! ```text
//! source (consume → open → decode → features → batch) ─► inference workers ─► sink (produce + commit)
//!    ▲                                                                          │
//!    └──────────────── rewind after an abort ───────────────────────────────────┘
//! ```

pub(crate) mod fan;
mod from_memory;
pub(crate) mod model_swap;
mod prepare;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer;

use crate::batcher::{AdaptiveSize, BatchSize, Batcher};
use crate::codec::schemas::SchemaError;
use crate::codec::{ModelIdentity, ScoreRecords};
use crate::config::{BatchMode, ConfigError, LeaveGroup, Settings};
use crate::envelope::SharedKeyring;
use crate::faults::Faults;
use crate::features::FeatureError;
use crate::inference::worker::WorkerLinks;
use crate::inference::{self, Device, InferenceError, ModelSession};
use crate::item::Batch;
use crate::kafka::client::{Role, client_config, consumer_config, producer_config};
use crate::kafka::positions::CommittedPositions;
use crate::kafka::preflight::{self, PreflightError};
use crate::kafka::sink::{
    ProducerFactory, Reporting, Sink, SinkConfig, SinkError, SinkLinks, SinkProducer,
};
use crate::kafka::source::{
    self, SourceConsumer, SourceContext, SourceError, SourceLinks, SourceStage,
};
use crate::model::{CardError, ModelCard};
use crate::telemetry::Stats;
use crate::telemetry::metrics::BATCH_TARGET_SIZE;
use crate::telemetry::signals::PipelineSignals;
use crate::transform::Transform;
use fan::{FanIn, FanOut};
pub use from_memory::{MemoryFeed, MemoryRun, MemoryRunError, Settled, score_from_memory};
pub use model_swap::{CardWatch, ModelSwap, ModelSwapper};
use model_swap::{ModelRelease, ModelSwitch};
pub use prepare::{Prepared, Shadow, prepare, warm_up_sizes};

/// Batches queued per inference worker, in and out: enough to overlap the
/// stages, small enough that a stall stops consumption quickly.
const QUEUE_DEPTH: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Card(#[from] CardError),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("the model card does not fit the input schema: {0}")]
    Features(FeatureError),
    #[error(transparent)]
    Inference(#[from] InferenceError),
    /// Boxed, as `Preflight` is: its messages are the registry's own.
    #[error(transparent)]
    Registry(Box<crate::registry::RegistryError>),
    #[error("cannot create the Kafka {client}: {error}")]
    KafkaClient {
        client: &'static str,
        error: KafkaError,
    },
    #[error(
        "cannot initialise Kafka transactions at {bootstrap}: {error} (is the broker running and reachable? does it allow transactions?)"
    )]
    InitTransactions {
        bootstrap: String,
        error: KafkaError,
    },
    #[error(
        "the principal may not Write transactional id {id} (TRANSACTIONAL_ID_AUTHORIZATION_FAILED): grant Write on it, as `streamscore acls` prints"
    )]
    TransactionalIdUnauthorized { id: String },
    /// Boxed: its variants carry topic names and remedies, and every
    /// `Result<_, PipelineError>` would grow by them.
    #[error(transparent)]
    Preflight(Box<PreflightError>),
    #[error("cannot subscribe to {topics}: {error}")]
    Subscribe { topics: String, error: KafkaError },
    #[error("source stage: {0}")]
    Source(SourceError),
    #[error("sink stage: {0}")]
    Sink(SinkError),
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
    #[error(
        "the new model card changes the features ({0}): a swap keeps the feature row; a change of features takes a restart"
    )]
    SwapFeatures(String),
    #[error(
        "model.shadow_card's features differ from model.card's ({0}): a challenger scores the same feature row"
    )]
    ShadowFeatures(String),
}

// The variants that carry a cause say it in their message and do not also
// return it as their `source`: an error printed with its chain (anyhow's
// `{:#}` at the edge) would say it twice. Hence these conversions by hand.
impl From<FeatureError> for PipelineError {
    fn from(e: FeatureError) -> Self {
        Self::Features(e)
    }
}

impl From<crate::registry::RegistryError> for PipelineError {
    fn from(e: crate::registry::RegistryError) -> Self {
        Self::Registry(Box::new(e))
    }
}

impl From<SourceError> for PipelineError {
    fn from(e: SourceError) -> Self {
        Self::Source(e)
    }
}

impl From<SinkError> for PipelineError {
    fn from(e: SinkError) -> Self {
        Self::Sink(e)
    }
}

/// A running pipeline. Stop it with [`Pipeline::stop`], then [`Pipeline::join`].
pub struct Pipeline {
    stop: Arc<AtomicBool>,
    source: JoinHandle<Result<(), SourceError>>,
    workers: Vec<JoinHandle<Result<(), InferenceError>>>,
    sink: JoinHandle<Result<(), SinkError>>,
    consumer: Arc<SourceConsumer>,
    device: Device,
    signals: Arc<PipelineSignals>,
    /// Static members only (a dynamic member always leaves on close): the
    /// group.instance.id and whether a clean stop leaves the group.
    static_member: Option<(String, LeaveGroup)>,
    swapper: ModelSwapper,
    /// Its waits end when the pipeline stops.
    registry: Option<Arc<crate::registry::RegistryStatus>>,
}

/// How long a static member's leave may take before the stop goes on
/// without it (librdkafka gives the LeaveGroup request 5 s).
const LEAVE_TIMEOUT: Duration = Duration::from_secs(10);

impl Pipeline {
    /// Verifies the model, warms up its sessions, initialises the transactional
    /// producer (fencing any zombie with our transactional.id), subscribes and
    /// starts the threads. Blocks until all of that is done.
    pub fn start(
        settings: &Settings,
        keyring: SharedKeyring,
        stats: Arc<Stats>,
    ) -> Result<Self, PipelineError> {
        Self::start_with_faults(settings, keyring, stats, Arc::default())
    }

    /// [`Pipeline::start`] with faults a test can arm while it runs.
    #[doc(hidden)]
    pub fn start_with_faults(
        settings: &Settings,
        keyring: SharedKeyring,
        stats: Arc<Stats>,
        faults: Arc<Faults>,
    ) -> Result<Self, PipelineError> {
        let prepared = prepare(settings)?;
        let (card, device) = (&prepared.model.card, prepared.device());
        let swapper = first_release(settings, &prepared, &stats);
        let models = swapper.models.clone();

        let (producer, factory) = transactional_producer(settings)?;
        // Output topics the broker would refuse abort every transaction: say so now instead.
        preflight::check_output_topics(settings)
            .map_err(|e| PipelineError::Preflight(Box::new(e)))?;

        let signals = Arc::new(PipelineSignals::watching(prepared.registry.clone()));
        let (rewind_tx, rewind_rx) = channel();
        let positions = Arc::new(CommittedPositions::default());
        let (shadow_model, shadow_sessions) =
            prepared.shadow.map(|s| (s.model, s.sessions)).unzip();
        let lanes = WorkerLanes::new(prepared.sessions, shadow_sessions);
        let adaptive = adaptive_size(settings);
        let transform = Transform::new(
            keyring,
            prepared.decoder,
            prepared.plan,
            settings.input.max_record_bytes as usize,
            stats.clone(),
        );
        let source_stage = SourceStage::new(
            batcher(settings, adaptive.clone(), transform.width()).with_models(models),
            transform,
            FanOut::new(lanes.inputs),
            SourceLinks {
                rewinds: rewind_rx,
                positions: positions.clone(),
                stats: stats.clone(),
                signals: signals.clone(),
            },
            settings.kafka.request_timeout,
        );
        let static_member = static_membership(settings);
        let consumer = subscribed_consumer(settings, source_stage, signals.clone())?;

        let upstream_failed = Arc::new(AtomicBool::new(false));
        let sink = Sink::new(
            producer,
            factory,
            SinkLinks {
                group: consumer.clone(),
                rewinds: rewind_tx,
                positions,
                upstream_failed: upstream_failed.clone(),
                faults: faults.clone(),
            },
            score_records(settings, card, shadow_model.as_ref(), prepared.encoder),
            sink_config(settings),
            Reporting {
                stats: stats.clone(),
                signals: signals.clone(),
            },
        );
        let results = FanIn::new(lanes.outputs);
        let sink = spawn("sink".into(), move || sink.run(results))?;
        let links = WorkerLinks {
            adaptive,
            failed: upstream_failed,
            faults,
            stats,
        };
        let workers = spawn_workers(lanes.workers, &links)?;
        let stop = Arc::new(AtomicBool::new(false));
        let source = {
            let (consumer, stop) = (consumer.clone(), stop.clone());
            spawn("source".into(), move || source::run(consumer, stop))?
        };
        log_started(settings, card, device);
        Ok(Self {
            stop,
            source,
            workers,
            sink,
            consumer,
            device,
            signals,
            static_member,
            swapper,
            registry: prepared.registry,
        })
    }

    /// What /healthz and /readyz read.
    pub fn signals(&self) -> Arc<PipelineSignals> {
        self.signals.clone()
    }

    /// Swaps in the model `model.card` names now (SIGHUP, a changed card
    /// file): see [`ModelSwapper::swap`].
    pub fn model_swapper(&self) -> ModelSwapper {
        self.swapper.clone()
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Asks the pipeline to commit what it has read and stop.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(registry) = &self.registry {
            registry.stop();
        }
    }

    /// True once any stage has ended (normally only after [`Pipeline::stop`]).
    pub fn has_stopped(&self) -> bool {
        self.source.is_finished()
            || self.sink.is_finished()
            || self.workers.iter().any(|w| w.is_finished())
    }

    /// Waits for every stage; the first error, in data-flow order, is returned.
    pub fn join(self) -> Result<(), PipelineError> {
        let source = self
            .source
            .join()
            .map_err(|_| PipelineError::Panicked("source"))?;
        let mut worker_result = Ok(());
        for w in self.workers {
            let r = w.join().map_err(|_| PipelineError::Panicked("inference"))?;
            if worker_result.is_ok() {
                worker_result = r;
            }
        }
        let sink = self
            .sink
            .join()
            .map_err(|_| PipelineError::Panicked("sink"))?;
        match &self.static_member {
            // A dynamic member's close sends the LeaveGroup itself.
            None => {}
            Some((instance, LeaveGroup::Always)) => {
                if crate::kafka::group::leave(&self.consumer, LEAVE_TIMEOUT) {
                    tracing::info!(group_instance_id = %instance, "left the consumer group: its partitions move to the other members now");
                } else {
                    tracing::warn!(group_instance_id = %instance, timeout_ms = LEAVE_TIMEOUT.as_millis() as u64,
                        "could not leave the consumer group in time: its partitions move after kafka.session_timeout_ms");
                }
            }
            Some((instance, LeaveGroup::Never)) => tracing::info!(
                group_instance_id = %instance,
                "kept the group membership (shutdown.leave_group = never): a restart with this id within kafka.session_timeout_ms takes the partitions back, otherwise they move after it"
            ),
        }
        // The close (and for a dynamic member, its LeaveGroup) happens here.
        drop(self.consumer);
        source?;
        worker_result?;
        sink?;
        Ok(())
    }
}

/// The channels between the source, the inference workers and the sink: one
/// bounded queue into each worker and one out of it.
struct WorkerLanes {
    inputs: Vec<SyncSender<Batch>>,
    outputs: Vec<Receiver<Batch>>,
    workers: Vec<WorkerEnds>,
}

/// A worker's sessions (the model's, the challenger's) and its channels.
type WorkerEnds = (
    ModelSession,
    Option<ModelSession>,
    Receiver<Batch>,
    SyncSender<Batch>,
);

impl WorkerLanes {
    fn new(sessions: Vec<ModelSession>, shadows: Option<Vec<ModelSession>>) -> Self {
        let mut shadows = shadows.map(Vec::into_iter);
        let mut lanes = WorkerLanes {
            inputs: Vec::new(),
            outputs: Vec::new(),
            workers: Vec::new(),
        };
        for session in sessions {
            let (in_tx, in_rx) = sync_channel(QUEUE_DEPTH);
            let (out_tx, out_rx) = sync_channel(QUEUE_DEPTH);
            lanes.inputs.push(in_tx);
            lanes.outputs.push(out_rx);
            let shadow = shadows.as_mut().and_then(Iterator::next);
            lanes.workers.push((session, shadow, in_rx, out_tx));
        }
        lanes
    }
}

/// Creates the transactional producer and initialises its transactions,
/// which fences any zombie with our transactional.id.
fn transactional_producer(
    settings: &Settings,
) -> Result<(SinkProducer, ProducerFactory), PipelineError> {
    let factory = ProducerFactory {
        config: producer_config(settings),
        failures: Arc::default(),
        witness: Arc::default(),
    };
    let producer = factory
        .create()
        .map_err(|error| PipelineError::KafkaClient {
            client: "transactional producer",
            error,
        })?;
    producer
        .init_transactions(settings.kafka.request_timeout)
        .map_err(|error| {
            if error.rdkafka_error_code()
                == Some(rdkafka::types::RDKafkaErrorCode::TransactionalIdAuthorizationFailed)
            {
                PipelineError::TransactionalIdUnauthorized {
                    id: settings.kafka.transactional_id.clone(),
                }
            } else {
                PipelineError::InitTransactions {
                    bootstrap: settings.kafka.bootstrap_servers.clone(),
                    error,
                }
            }
        })?;
    Ok((producer, factory))
}

/// The shared batch size in adaptive mode; none in fixed mode, whose target
/// is the constant maximum.
fn adaptive_size(settings: &Settings) -> Option<Arc<AdaptiveSize>> {
    let max_batch = settings.batching.max_batch_size as usize;
    match settings.batching.mode {
        BatchMode::Fixed => {
            metrics::gauge!(BATCH_TARGET_SIZE).set(max_batch as f64);
            None
        }
        BatchMode::Adaptive => Some(Arc::new(AdaptiveSize::new(
            settings.batching.min_batch_size as usize,
            max_batch,
            settings.batching.latency_target,
        ))),
    }
}

fn batcher(settings: &Settings, adaptive: Option<Arc<AdaptiveSize>>, width: usize) -> Batcher {
    let max_batch = settings.batching.max_batch_size as usize;
    let size = match adaptive {
        Some(a) => BatchSize::Adaptive(a),
        None => BatchSize::Fixed(max_batch),
    };
    Batcher::new(size, max_batch, settings.batching.max_batch_delay, width)
}

/// The consumer, with the source stage in its context (the rebalance
/// callbacks need it), subscribed to the input topics.
fn subscribed_consumer(
    settings: &Settings,
    stage: SourceStage,
    signals: Arc<PipelineSignals>,
) -> Result<Arc<SourceConsumer>, PipelineError> {
    let consumer: SourceConsumer = consumer_config(settings)
        .create_with_context(SourceContext::new(
            stage,
            signals,
            settings.kafka.group_id.clone(),
        ))
        .map_err(|error| PipelineError::KafkaClient {
            client: "consumer",
            error,
        })?;
    let topics: Vec<&str> = settings.input.topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .map_err(|error| PipelineError::Subscribe {
            topics: topics.join(","),
            error,
        })?;
    Ok(Arc::new(consumer))
}

fn score_records(
    settings: &Settings,
    card: &ModelCard,
    shadow: Option<&crate::model::VerifiedModel>,
    encoder: crate::codec::ScoreEncoder,
) -> ScoreRecords {
    let identity = |card: &ModelCard, threshold: Option<f64>| ModelIdentity {
        name: card.name.clone(),
        version: card.version.clone(),
        sha256: card.sha256.clone(),
        threshold: threshold.unwrap_or(card.threshold),
    };
    // model.threshold is the served model's; the challenger keeps its card's.
    ScoreRecords::new(encoder, identity(card, settings.model.threshold))
        .with_shadow(shadow.map(|s| identity(&s.card, None)))
}

/// The model started with, serving (its sessions are the workers' own), and
/// the swapper that replaces it.
fn first_release(settings: &Settings, prepared: &Prepared, stats: &Arc<Stats>) -> ModelSwapper {
    let first = ModelRelease::new(
        0,
        &prepared.model,
        settings.model.threshold,
        prepared.device(),
        Vec::new(),
    );
    first.publish_info(true);
    ModelSwapper {
        models: Arc::new(ModelSwitch::new(first)),
        settings: Arc::new(settings.clone()),
        stats: stats.clone(),
        requests: Arc::default(),
    }
}

fn sink_config(settings: &Settings) -> SinkConfig {
    SinkConfig {
        transactional_id: settings.kafka.transactional_id.clone(),
        group_id: settings.kafka.group_id.clone(),
        score_topic: settings.output.topic.clone(),
        dead_letter_topic: settings.output.dead_letter_topic.clone(),
        commit_interval: settings.transactions.commit_interval,
        timeout: settings.kafka.request_timeout,
        transaction_timeout: settings.kafka.transaction_timeout,
        shadow_topic: settings
            .model
            .shadow_card
            .as_ref()
            .map(|_| settings.output.shadow_topic.clone()),
        outcome_reader: client_config(settings, Role::OutcomeReader),
    }
}

/// Static members only (a dynamic member always leaves on close).
fn static_membership(settings: &Settings) -> Option<(String, LeaveGroup)> {
    let leave = settings.shutdown.leave_group;
    let member = (settings.kafka.group_instance_id.clone()).map(|id| (id, leave));
    if member.is_none() && leave == LeaveGroup::Never {
        tracing::warn!(
            "shutdown.leave_group = never has no effect without kafka.group_instance_id: a dynamic member always leaves the group on stop"
        );
    }
    member
}

fn spawn<T: Send + 'static>(
    name: String,
    body: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, PipelineError> {
    std::thread::Builder::new()
        .name(name)
        .spawn(body)
        .map_err(PipelineError::Thread)
}

fn spawn_workers(
    ends: Vec<WorkerEnds>,
    links: &WorkerLinks,
) -> Result<Vec<JoinHandle<Result<(), InferenceError>>>, PipelineError> {
    let mut workers = Vec::new();
    for (i, (session, shadow, input, output)) in ends.into_iter().enumerate() {
        let links = links.clone();
        workers.push(spawn(format!("inference-{i}"), move || {
            inference::worker::run(session, shadow, input, output, links)
        })?);
    }
    Ok(workers)
}

fn log_started(settings: &Settings, card: &ModelCard, device: Device) {
    tracing::info!(
        model = %card.name, version = %card.version, device = device.as_str(),
        topics = %settings.input.topics.join(","), output = %settings.output.topic,
        dead_letters = %settings.output.dead_letter_topic,
        batching = settings.batching.mode.as_str(),
        max_batch_size = settings.batching.max_batch_size,
        max_batch_delay_ms = settings.batching.max_batch_delay.as_millis() as u64,
        commit_interval_ms = settings.transactions.commit_interval.as_millis() as u64,
        "pipeline started"
    );
}
