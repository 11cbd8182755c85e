//! Plaintext formats: Avro (Confluent framing) or JSON input events, and the
//! score results written downstream.

mod binary;
pub(crate) mod input;
mod plan;
#[cfg(test)]
mod plan_tests;
pub(crate) mod registry_writers;
pub(crate) mod rows;
mod scalar;
pub(crate) mod schemas;
pub(crate) mod score;
mod skip;

use serde::{Deserialize, Serialize};

pub(crate) use input::{DecodeError, Fields, InputDecoder};
pub(crate) use score::{ModelIdentity, ScoreEncoder, ScoreRecords};

/// The plaintext format inside the envelope, and the score topic's format
/// (`input.format`, `output.format`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Deserialize,
    Serialize,
    clap::ValueEnum,
    strum::VariantNames,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Format {
    Avro,
    Json,
}

impl Format {
    /// As the config spells it.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Confluent wire format: magic byte 0, 4-byte big-endian schema id, Avro binary.
pub(crate) const CONFLUENT_MAGIC: u8 = 0;

/// Frames an Avro datum with the Confluent header.
pub fn confluent_frame(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + datum.len());
    out.push(CONFLUENT_MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(datum);
    out
}

/// Splits a Confluent-framed value into schema id and datum.
pub(crate) fn confluent_unframe(bytes: &[u8]) -> Option<(u32, &[u8])> {
    match bytes {
        [CONFLUENT_MAGIC, a, b, c, d, rest @ ..] => {
            Some((u32::from_be_bytes([*a, *b, *c, *d]), rest))
        }
        _ => None,
    }
}

/// apache-avro's allocation limit in the unit tests, as prepare sets it from
/// `input.max_record_bytes`, so the oracle of the plan's property tests
/// refuses a hostile length before it allocates. The limit is process-wide
/// and set once: every unit test that has apache-avro decode calls this
/// first, and it fails loudly if one did not.
#[cfg(test)]
pub(crate) fn test_allocation_limit() -> usize {
    let limit = apache_avro::util::max_allocation_bytes(64 * 1024);
    assert_eq!(
        limit,
        64 * 1024,
        "a test had apache-avro decode before setting its allocation limit"
    );
    limit
}
