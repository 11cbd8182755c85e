//! Kafka clients and the two Kafka-facing stages: the source (consume,
//! transform, batch) and the transactional sink (produce, send offsets, commit).

pub(crate) mod authorized;
pub(crate) mod client;
pub(crate) mod group;
pub(crate) mod offline;
pub(crate) mod outcome;
pub(crate) mod positions;
pub(crate) mod preflight;
pub(crate) mod sink;
pub(crate) mod source;
