//! streamscore: encrypted events from Kafka, scored by ONNX Runtime, published
//! exactly once. docs/design.md gives the data flow the modules follow:
//!
//! `kafka::source` (consume) → `envelope` (open) → `codec` (decode) →
//! `features` → `batcher` → `inference` → `kafka::sink` (produce + commit),
//! with `dead_letter` for records that cannot be scored, `pipeline` wiring the
//! stages and `telemetry` watching them.
//!
//! The modules are private; what is public is chosen here: the processor
//! (settings, keys, the pipeline), the parts a tool or a test drives on its
//! own (a decoder, a feature plan, a model session), the wire names that
//! readers of the output topics share, and the telemetry a host serves.

#![warn(unreachable_pub)]

pub mod acls;
mod batcher;
mod card_writer;
mod clock;
mod codec;
mod config;
mod dead_letter;
mod envelope;
mod faults;
mod features;
mod inference;
mod item;
mod kafka;
mod keywatch;
mod model;
mod pipeline;
mod registry;
mod transform;

pub mod telemetry;

// The processor: settings, the keyring, the pipeline.
pub use config::{
    BatchMode, CROSS_FIELD_RULES, ConfigError, LeaveGroup, LogFormat, OutputRegistrySettings,
    PINNED_PROPERTIES, RegistryMode, SchemaRegistrySettings, Settings, SubjectNameStrategy,
};
pub use envelope::{Keyring, KeyringError, SharedKeyring, random_key, share};
pub use faults::Faults;
pub use pipeline::{
    CardWatch, ModelSwap, ModelSwapper, Pipeline, PipelineError, Prepared, Shadow, prepare,
    warm_up_sizes,
};
/// The batcher and inference workers of the pipeline fed from memory, no broker.
pub mod from_memory {
    pub use crate::pipeline::{MemoryFeed, MemoryRun, MemoryRunError, Settled, score_from_memory};
}

// The stages' parts, each usable alone (tools, tests, the hot-path bench).
pub use codec::input::{Fields, InputDecoder};
pub use codec::schemas::load_schema;
pub use codec::score::{Decision, ScoreEncoder, ScoreResult};
pub use codec::{Format, confluent_frame};
pub use features::{FeaturePlan, FeatureRows};
pub use inference::Runtime;
pub use inference::session::{
    ConvAlgorithmSearch, CudaOptions, Device, DevicePreference, InferenceError, ModelSession,
    init_runtime,
};
pub use model::VerifiedModel;

/// `streamscore model card`: writing the card a model is served by.
pub mod model_card {
    pub use crate::card_writer::{
        CardRequest, CardWriteError, FeatureMapping, MlflowRun, write_card,
    };
}
pub use transform::{Transform, Unscored};

/// The dead-letter topic's reasons and record headers (docs/wire-format.md).
pub mod dead_letters {
    pub use crate::dead_letter::{
        HEADER_KEY_OMITTED, HEADER_MESSAGE, HEADER_REASON, HEADER_SOURCE_OFFSET,
        HEADER_SOURCE_PARTITION, HEADER_SOURCE_TOPIC, HEADER_VALUE_OMITTED, Reason,
    };
}

/// The schema registry client (Confluent API) the processor uses, for the
/// tools that register and read schemas.
pub mod schema_registry {
    pub use crate::codec::registry_writers::{RegistryWriters, WriterError};
    pub use crate::registry::{
        RegisteredSchema, RegistryClient, RegistryError, RegistryStatus, score_schema_id,
    };
}

/// Keyring rotation while running: the watcher and what it reports.
pub mod keyring_watch {
    pub use crate::keywatch::{
        KEYRING_KEYS, KEYRING_RELOAD_FAILURES, KEYRING_RELOADS, KeyringStatus, modified, watch,
    };
}

/// Kafka clients configured the one way every client is (`kafka.*`
/// settings, TLS, SASL), for the tools that read and write the topics.
pub mod clients {
    pub use crate::kafka::client::{
        Role, TOOL_MESSAGE_TIMEOUT_MS, client_config, consumer_config, producer_config, tool_config,
    };
    pub use crate::kafka::offline::create_clients;
    pub use crate::kafka::sink::{SinkError, await_deliveries};
}
