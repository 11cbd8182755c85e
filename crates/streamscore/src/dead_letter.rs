//! Why a record went to the dead-letter topic, and how that is written.
//!
//! A dead letter keeps the original record value and key untouched; the
//! reason travels in headers, so any Kafka tool can read and replay it.

use crate::codec::DecodeError;
use crate::envelope::EnvelopeError;
use crate::features::FeatureError;

pub const HEADER_REASON: &str = "streamscore.reason";
pub const HEADER_MESSAGE: &str = "streamscore.message";
pub const HEADER_SOURCE_TOPIC: &str = "streamscore.source.topic";
pub const HEADER_SOURCE_PARTITION: &str = "streamscore.source.partition";
pub const HEADER_SOURCE_OFFSET: &str = "streamscore.source.offset";
/// Present when the original value was left out because the dead letter
/// would be over `kafka.max_message_bytes`: the value's length in bytes.
pub const HEADER_VALUE_OMITTED: &str = "streamscore.value.omitted";
/// Likewise for the key, left out only when the letter is still too large without the value.
pub const HEADER_KEY_OMITTED: &str = "streamscore.key.omitted";

/// Reason classes: a stable, small set, used as a metric label and header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No value at all (tombstone) or an empty one.
    EmptyValue,
    /// Larger than `input.max_record_bytes`; not opened at all.
    TooLarge,
    /// The envelope header is malformed (truncated, version, key-id length).
    MalformedEnvelope,
    /// The key id is not in the keyring.
    UnknownKey,
    /// AES-GCM authentication failed: tampered, wrong key or moved to another record key.
    DecryptFailed,
    /// Unknown Avro schema id.
    UnknownSchema,
    /// The plaintext is not valid Avro/JSON for the schema.
    DecodeFailed,
    /// Decoded, but a feature is missing, of the wrong type or not finite.
    InvalidFeatures,
}

impl Reason {
    pub const ALL: [Reason; 8] = [
        Reason::EmptyValue,
        Reason::TooLarge,
        Reason::MalformedEnvelope,
        Reason::UnknownKey,
        Reason::DecryptFailed,
        Reason::UnknownSchema,
        Reason::DecodeFailed,
        Reason::InvalidFeatures,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::EmptyValue => "empty_value",
            Reason::TooLarge => "too_large",
            Reason::MalformedEnvelope => "malformed_envelope",
            Reason::UnknownKey => "unknown_key",
            Reason::DecryptFailed => "decrypt_failed",
            Reason::UnknownSchema => "unknown_schema",
            Reason::DecodeFailed => "decode_failed",
            Reason::InvalidFeatures => "invalid_features",
        }
    }

    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// A record that cannot be scored: its reason and a human message.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub reason: Reason,
    pub message: String,
}

impl From<EnvelopeError> for Rejection {
    fn from(e: EnvelopeError) -> Self {
        let reason = match e {
            EnvelopeError::UnknownKey(_) => Reason::UnknownKey,
            EnvelopeError::AuthenticationFailed => Reason::DecryptFailed,
            EnvelopeError::Truncated { .. }
            | EnvelopeError::UnsupportedVersion(_)
            | EnvelopeError::BadKeyIdLength(_)
            | EnvelopeError::KeyIdNotUtf8 => Reason::MalformedEnvelope,
        };
        Rejection {
            reason,
            message: e.to_string(),
        }
    }
}

impl From<DecodeError> for Rejection {
    fn from(e: DecodeError) -> Self {
        let reason = match e {
            DecodeError::UnknownSchema(_) => Reason::UnknownSchema,
            _ => Reason::DecodeFailed,
        };
        Rejection {
            reason,
            message: e.to_string(),
        }
    }
}

impl From<FeatureError> for Rejection {
    fn from(e: FeatureError) -> Self {
        Rejection {
            reason: Reason::InvalidFeatures,
            message: e.to_string(),
        }
    }
}
