//! streamscore: encrypted events from Kafka, scored by ONNX Runtime, published
//! exactly once. docs/design.md gives the data flow the modules follow:
//!
//! `kafka::source` (consume) → `envelope` (open) → `codec` (decode) →
//! `features` → `batcher` → `inference` → `kafka::sink` (produce + commit),
//! with `dead_letter` for records that cannot be scored, `pipeline` wiring the
//! stages and `telemetry` watching them.

pub mod batcher;
pub mod codec;
pub mod config;
pub mod dead_letter;
pub mod envelope;
pub mod faults;
pub mod features;
pub mod inference;
pub mod item;
pub mod kafka;
pub mod keywatch;
pub mod pipeline;
pub mod telemetry;
pub mod transform;
