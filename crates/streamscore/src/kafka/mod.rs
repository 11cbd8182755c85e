//! Kafka clients and the two Kafka-facing stages: the source (consume,
//! transform, batch) and the transactional sink (produce, send offsets, commit).

pub mod client;
pub mod group;
pub mod offline;
pub mod positions;
pub mod preflight;
pub mod sink;
pub mod source;

/// How long a blocking Kafka call may wait when no setting says otherwise.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
