//! Wires the stages of the data flow (docs/design.md), each on its own thread, joined
//! by bounded channels:
//!
//! ```text
//! source (consume → open → decode → features → batch) ─► inference workers ─► sink (produce + commit)
//!    ▲                                                                          │
//!    └──────────────── rewind after an abort ───────────────────────────────────┘
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer;

use crate::batcher::{AdaptiveSize, BatchSize, Batcher};
use crate::codec::schemas::{SchemaError, load_schema};
use crate::codec::{InputDecoder, ScoreEncoder};
use crate::config::{BatchMode, ConfigError, Format, LeaveGroup, Settings};
use crate::envelope::SharedKeyring;
use crate::faults::Faults;
use crate::features::{FeatureError, FeaturePlan};
use crate::inference::worker::WorkerLinks;
use crate::inference::{self, CardError, Device, InferenceError, ModelSession, VerifiedModel};
use crate::kafka::client::{consumer_config, producer_config};
use crate::kafka::positions::CommittedPositions;
use crate::kafka::preflight::{self, PreflightError};
use crate::kafka::sink::{
    ModelIdentity, ProducerFactory, Reporting, Sink, SinkConfig, SinkError, SinkLinks, SinkProducer,
};
use crate::kafka::source::{
    self, Dispatch, SourceConsumer, SourceContext, SourceError, SourceLinks, SourceStage,
};
use crate::telemetry::LiveStats;
use crate::telemetry::metrics::{BATCH_TARGET_SIZE, MODEL_INFO};
use crate::telemetry::signals::PipelineSignals;
use crate::transform::Transform;

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
}

// The variants that carry a cause say it in their message and do not also
// return it as their `source`: an error printed with its chain (anyhow's
// `{:#}` at the edge) would say it twice. Hence these conversions by hand.
impl From<FeatureError> for PipelineError {
    fn from(e: FeatureError) -> Self {
        Self::Features(e)
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

/// Everything the pipeline needs before it touches Kafka: the verified model,
/// the decoder and feature plan checked against the reader schema, the score
/// encoder, and warmed-up sessions. `streamscore check` runs exactly this.
pub struct Prepared {
    pub model: VerifiedModel,
    pub decoder: InputDecoder,
    pub plan: FeaturePlan,
    pub encoder: ScoreEncoder,
    pub sessions: Vec<ModelSession>,
}

pub fn prepare(settings: &Settings) -> Result<Prepared, PipelineError> {
    let model = VerifiedModel::load(&settings.model.card)?;
    // A hostile length prefix must not make the Avro decoder allocate more than a record can hold.
    apache_avro::util::max_allocation_bytes(settings.input.max_record_bytes as usize);
    let card = &model.card;

    let plan = FeaturePlan::new(card);
    let (decoder, plan) = match settings.input.format {
        Format::Avro => {
            let reader = load_schema(&settings.input.reader_schema)?;
            let mut writers = HashMap::new();
            for (id, path) in settings.avro_schema_ids() {
                writers.insert(id, load_schema(&path)?);
            }
            let plan = plan.for_avro_reader(card, &reader)?;
            (InputDecoder::avro(writers, reader), plan)
        }
        Format::Json => (InputDecoder::json(), plan),
    };
    let encoder = ScoreEncoder::new(
        settings.output.format,
        load_schema(&settings.output.avro_schema)?,
        settings.output.avro_schema_id,
    );

    let runtime = inference::init_runtime(&settings.onnxruntime_library())?;
    let mut sessions = Vec::new();
    for _ in 0..settings.model.sessions {
        let mut session = ModelSession::open(
            &runtime,
            &model,
            settings.model.device,
            settings.model.intra_op_threads as usize,
        )?;
        session.warm_up(&warm_up_sizes(settings))?;
        sessions.push(session);
    }
    Ok(Prepared {
        model,
        decoder,
        plan,
        encoder,
        sessions,
    })
}

/// Batch sizes to run once before ready (ONNX Runtime plans each new shape,
/// which takes long on a GPU): the fixed size, or in adaptive mode every
/// power of two it may pass through, plus its bounds.
pub fn warm_up_sizes(settings: &Settings) -> Vec<usize> {
    let b = &settings.batching;
    let (min, max) = (b.min_batch_size as usize, b.max_batch_size as usize);
    let mut sizes = match settings.batching.mode {
        BatchMode::Fixed => vec![1, max],
        BatchMode::Adaptive => std::iter::successors(Some(min.next_power_of_two()), |n| {
            Some(n * 2).filter(|&n| n < max)
        })
        .chain([1, min, max])
        .collect(),
    };
    sizes.sort_unstable();
    sizes.dedup();
    sizes
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
        stats: Arc<LiveStats>,
    ) -> Result<Self, PipelineError> {
        Self::start_with_faults(settings, keyring, stats, Arc::default())
    }

    /// [`Pipeline::start`] with faults a test can arm while it runs.
    #[doc(hidden)]
    pub fn start_with_faults(
        settings: &Settings,
        keyring: SharedKeyring,
        stats: Arc<LiveStats>,
        faults: Arc<Faults>,
    ) -> Result<Self, PipelineError> {
        let Prepared {
            model,
            decoder,
            plan,
            encoder,
            sessions,
        } = prepare(settings)?;
        let card = &model.card;
        let max_batch = settings.batching.max_batch_size as usize;
        let device = sessions.first().map_or(Device::Cpu, ModelSession::device);
        let threshold = settings.model.threshold.unwrap_or(card.threshold);
        metrics::gauge!(MODEL_INFO, "name" => card.name.clone(), "version" => card.version.clone(),
            "sha256" => card.sha256.clone(), "device" => device.as_str())
        .set(1.0);

        let factory = ProducerFactory {
            config: producer_config(settings),
            failures: Arc::default(),
        };
        let producer: SinkProducer =
            factory
                .create()
                .map_err(|error| PipelineError::KafkaClient {
                    client: "transactional producer",
                    error,
                })?;
        producer
            .init_transactions(settings.request_timeout())
            .map_err(|error| PipelineError::InitTransactions {
                bootstrap: settings.kafka.bootstrap_servers.clone(),
                error,
            })?;
        // Output topics the broker would refuse abort every transaction: say so now instead.
        preflight::check_output_topics(settings)
            .map_err(|e| PipelineError::Preflight(Box::new(e)))?;

        let signals = Arc::new(PipelineSignals::default());
        let (rewind_tx, rewind_rx) = channel();
        let mut to_workers = Vec::new();
        let mut from_workers = Vec::new();
        let mut worker_ends = Vec::new();
        for session in sessions {
            let (in_tx, in_rx) = sync_channel(QUEUE_DEPTH);
            let (out_tx, out_rx) = sync_channel(QUEUE_DEPTH);
            to_workers.push(in_tx);
            from_workers.push(out_rx);
            worker_ends.push((session, in_rx, out_tx));
        }
        let transform = Transform::new(
            keyring,
            decoder,
            plan,
            settings.input.max_record_bytes as usize,
        );
        let adaptive = match settings.batching.mode {
            BatchMode::Fixed => {
                metrics::gauge!(BATCH_TARGET_SIZE).set(max_batch as f64);
                None
            }
            BatchMode::Adaptive => Some(Arc::new(AdaptiveSize::new(
                settings.batching.min_batch_size as usize,
                max_batch,
                settings.latency_target(),
            ))),
        };
        let size = match &adaptive {
            Some(a) => BatchSize::Adaptive(a.clone()),
            None => BatchSize::Fixed(max_batch),
        };
        let batcher = Batcher::new(
            size,
            max_batch,
            settings.max_batch_delay(),
            transform.width(),
        );
        let positions = Arc::new(CommittedPositions::default());
        let stage = SourceStage::new(
            transform,
            batcher,
            Dispatch::new(to_workers),
            SourceLinks {
                rewinds: rewind_rx,
                positions: positions.clone(),
                stats: stats.clone(),
                signals: signals.clone(),
            },
            settings.request_timeout(),
        );
        let consumer: SourceConsumer = consumer_config(settings)
            .create_with_context(SourceContext::new(stage, signals.clone()))
            .map_err(|error| PipelineError::KafkaClient {
                client: "consumer",
                error,
            })?;
        let consumer = Arc::new(consumer);
        let leave = settings.shutdown.leave_group;
        let static_member = settings
            .kafka
            .group_instance_id
            .clone()
            .map(|id| (id, leave));
        if static_member.is_none() && leave == LeaveGroup::Never {
            tracing::warn!(
                "shutdown.leave_group = never has no effect without kafka.group_instance_id: a dynamic member always leaves the group on stop"
            );
        }
        let topics: Vec<&str> = settings.input.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|error| PipelineError::Subscribe {
                topics: topics.join(","),
                error,
            })?;

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
            encoder,
            ModelIdentity {
                name: card.name.clone(),
                version: card.version.clone(),
                sha256: card.sha256.clone(),
                threshold,
            },
            SinkConfig {
                score_topic: settings.output.topic.clone(),
                dead_letter_topic: settings.output.dead_letter_topic.clone(),
                commit_interval: settings.commit_interval(),
                timeout: settings.request_timeout(),
                transaction_timeout: Duration::from_millis(settings.kafka.transaction_timeout_ms),
            },
            Reporting {
                stats,
                signals: signals.clone(),
            },
        );
        let spawn_err = PipelineError::Thread;
        let sink = std::thread::Builder::new()
            .name("sink".into())
            .spawn(move || sink.run(from_workers))
            .map_err(spawn_err)?;
        let mut workers = Vec::new();
        for (i, (session, input, output)) in worker_ends.into_iter().enumerate() {
            workers.push(
                std::thread::Builder::new()
                    .name(format!("inference-{i}"))
                    .spawn({
                        let links = WorkerLinks {
                            adaptive: adaptive.clone(),
                            failed: upstream_failed.clone(),
                            faults: faults.clone(),
                        };
                        move || inference::worker::run(session, input, output, links)
                    })
                    .map_err(spawn_err)?,
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        let source = {
            let (consumer, stop) = (consumer.clone(), stop.clone());
            std::thread::Builder::new()
                .name("source".into())
                .spawn(move || source::run(consumer, stop))
                .map_err(spawn_err)?
        };
        tracing::info!(
            model = %card.name, version = %card.version, device = device.as_str(),
            topics = %settings.input.topics.join(","), output = %settings.output.topic,
            dead_letters = %settings.output.dead_letter_topic,
            batching = settings.batching.mode.as_str(), max_batch_size = max_batch,
            max_batch_delay_ms = settings.batching.max_batch_delay_ms,
            commit_interval_ms = settings.transactions.commit_interval_ms,
            "pipeline started"
        );
        Ok(Self {
            stop,
            source,
            workers,
            sink,
            consumer,
            device,
            signals,
            static_member,
        })
    }

    /// What /healthz and /readyz read.
    pub fn signals(&self) -> Arc<PipelineSignals> {
        self.signals.clone()
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Asks the pipeline to commit what it has read and stop.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_covers_every_size_a_batch_can_take() {
        let mut s = Settings::load_with_env(None, false).unwrap();
        s.batching.max_batch_size = 300;
        assert_eq!(warm_up_sizes(&s), vec![1, 300]);
        s.batching.mode = crate::config::BatchMode::Adaptive;
        s.batching.min_batch_size = 3;
        assert_eq!(
            warm_up_sizes(&s),
            vec![1, 3, 4, 8, 16, 32, 64, 128, 256, 300]
        );
    }
}
