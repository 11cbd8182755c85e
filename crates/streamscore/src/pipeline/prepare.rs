//! What the pipeline needs before it touches Kafka: the model verified, the
//! decoder and feature plan checked against the schemas, the score encoder,
//! and warmed-up sessions. `streamscore check` runs exactly this.

use std::collections::HashMap;
use std::sync::Arc;

use crate::codec::registry_writers::RegistryWriters;
use crate::codec::rows;
use crate::codec::schemas::load_schema;
use crate::codec::{InputDecoder, ScoreEncoder};
use crate::config::{BatchMode, Format, Settings};
use crate::features::FeaturePlan;
use crate::inference::{self, Device, ModelSession};
use crate::model::VerifiedModel;
use crate::registry::{self, RegistryClient, RegistryStatus};

use super::PipelineError;

/// Everything the pipeline needs before it touches Kafka: the verified model,
/// the decoder and feature plan checked against the reader schema, the score
/// encoder, and warmed-up sessions. `streamscore check` runs exactly this.
pub struct Prepared {
    pub model: VerifiedModel,
    pub decoder: InputDecoder,
    pub plan: FeaturePlan,
    pub encoder: ScoreEncoder,
    pub sessions: Vec<ModelSession>,
    /// The challenger of `model.shadow_card`, one warm session per worker.
    pub shadow: Option<Shadow>,
    /// Whether the schema registry answers, with `input.schema_registry`.
    pub registry: Option<Arc<RegistryStatus>>,
}

/// A challenger model, scored on the same rows as the model serving.
pub struct Shadow {
    pub model: VerifiedModel,
    pub sessions: Vec<ModelSession>,
}

impl Prepared {
    /// Where the sessions run: the first one's device (they all share one).
    pub fn device(&self) -> Device {
        self.sessions
            .first()
            .map_or(Device::Cpu, ModelSession::device)
    }
}

pub fn prepare(settings: &Settings) -> Result<Prepared, PipelineError> {
    // `Settings` is plain data a host may change after loading it: what the
    // pipeline runs on is what `Settings::load` would accept.
    settings.validate()?;
    let model = VerifiedModel::load(&settings.model.card)?;
    // A hostile length prefix must not make the Avro decoder allocate more than a record can hold.
    apache_avro::util::max_allocation_bytes(settings.input.max_record_bytes as usize);
    let card = &model.card;

    let plan = FeaturePlan::new(card);
    let registry = &settings.input.schema_registry;
    let client = || RegistryClient::new(registry);
    let status = registry
        .enabled()
        .then(|| Arc::new(RegistryStatus::default()));
    let (decoder, plan) = match settings.input.format {
        Format::Avro => {
            let reader = load_schema(&settings.input.reader_schema)?;
            let mut writers = HashMap::new();
            for (&id, path) in &settings.input.avro_schemas {
                writers.insert(id, load_schema(path)?);
            }
            let plan = plan.for_avro_reader(card, &reader)?;
            let mut decoder = InputDecoder::avro(writers, reader);
            if let Some(status) = &status {
                decoder = decoder.with_registry(Arc::new(RegistryWriters::new(
                    client()?,
                    status.clone(),
                    registry.max_wait,
                    registry.cache_max_bytes,
                )));
            }
            // Such a writer still works, at apache-avro's speed; say which and why.
            for (id, why) in rows::fallbacks(&decoder, &plan) {
                tracing::info!(
                    schema_id = id,
                    "input.avro_schemas.{id} is decoded through apache-avro values, not a compiled plan: the plan does not handle {why}"
                );
            }
            (decoder, plan)
        }
        Format::Json => (InputDecoder::json(), plan),
    };
    let score_schema = load_schema(&settings.output.avro_schema)?;
    let output_client = registry.enabled().then(client).transpose()?;
    let score_schema_id = registry::score_schema_id(settings, output_client.as_ref(), false)?;
    let encoder = ScoreEncoder::new(settings.output.format, score_schema, score_schema_id);

    let sessions = open_sessions(settings, &model)?;
    let shadow = match &settings.model.shadow_card {
        None => None,
        Some(card) => {
            let challenger = VerifiedModel::load(card)?;
            super::model_swap::same_features(&model.card, &challenger.card)
                .map_err(PipelineError::ShadowFeatures)?;
            let sessions = open_sessions(settings, &challenger)?;
            Some(Shadow {
                model: challenger,
                sessions,
            })
        }
    };
    Ok(Prepared {
        model,
        decoder,
        plan,
        encoder,
        sessions,
        shadow,
        registry: status,
    })
}

/// `model.sessions` sessions of `model` on the configured device, each
/// warmed up: at start, and for a model swapped in while running.
pub(crate) fn open_sessions(
    settings: &Settings,
    model: &VerifiedModel,
) -> Result<Vec<ModelSession>, PipelineError> {
    let runtime = inference::init_runtime(&settings.onnxruntime_library())?;
    let mut sessions = Vec::new();
    for _ in 0..settings.model.sessions {
        let mut session = ModelSession::open_with(
            &runtime,
            model,
            settings.model.device,
            settings.model.intra_op_threads as usize,
            &settings.model.cuda,
        )?;
        session.warm_up(&warm_up_sizes(settings))?;
        sessions.push(session);
    }
    Ok(sessions)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Settings changed after loading are checked again before anything runs on them.
    #[test]
    fn prepare_refuses_what_load_would() {
        let mut s = Settings::load_with_env(None, false).unwrap();
        s.batching.max_batch_size = 0;
        match prepare(&s) {
            Err(PipelineError::Config(e)) => assert!(
                e.to_string()
                    .starts_with("config: batching.max_batch_size = 0 is not allowed"),
                "{e}"
            ),
            Err(other) => panic!("expected the config refusal, got {other}"),
            Ok(_) => panic!("expected the config refusal, got a pipeline"),
        }
    }

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
