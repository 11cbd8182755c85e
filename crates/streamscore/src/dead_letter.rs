//! Why a record went to the dead-letter topic, and how that is written.
//!
//! A dead letter keeps the original record value and key untouched; the
//! reason travels in headers, so any Kafka tool can read and replay it.

use rdkafka::message::{Header, OwnedHeaders};

use crate::codec::DecodeError;
use crate::codec::registry_writers::WriterError;
use crate::envelope::EnvelopeError;
use crate::features::FeatureError;
use crate::item::SourceRef;

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

impl Rejection {
    /// A scored record whose score record the broker would refuse (a huge
    /// key or event id): it goes to the dead letters, where the key and
    /// value can be left out.
    pub(crate) fn score_too_large(score_bytes: usize) -> Self {
        Rejection {
            reason: Reason::TooLarge,
            message: format!(
                "its score record ({score_bytes} bytes and its key) is over kafka.max_message_bytes"
            ),
        }
    }
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
            // Only an id no schema answers to is unknown; a schema the
            // registry holds that cannot be read here fails the decoding.
            DecodeError::UnknownSchema(_) | DecodeError::Registry(WriterError::NotFound(_)) => {
                Reason::UnknownSchema
            }
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

/// One dead letter, as the sink writes it: the original key and value, and
/// headers with the reason and where the original sits. A letter the broker
/// would refuse as too large is shrunk ([`DeadLetter::shrink`]) rather than
/// retried as it is: one that can never be written would wedge its
/// partition forever (docs/wire-format.md).
#[derive(Debug)]
pub(crate) struct DeadLetter<'a> {
    source: &'a SourceRef,
    rejection: &'a Rejection,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    keep_key: bool,
    keep_value: bool,
}

impl<'a> DeadLetter<'a> {
    pub(crate) fn new(
        source: &'a SourceRef,
        rejection: &'a Rejection,
        key: Option<&'a [u8]>,
        value: Option<&'a [u8]>,
    ) -> Self {
        Self {
            source,
            rejection,
            key,
            value,
            keep_key: true,
            keep_value: true,
        }
    }

    /// The reason, the message and the source position, plus a header for
    /// each part left out, carrying its length.
    pub(crate) fn headers(&self) -> OwnedHeaders {
        let partition = self.source.partition.to_string();
        let offset = self.source.offset.to_string();
        let mut headers = OwnedHeaders::new_with_capacity(7)
            .insert(header(HEADER_REASON, self.rejection.reason.as_str()))
            .insert(header(HEADER_MESSAGE, &self.rejection.message))
            .insert(header(HEADER_SOURCE_TOPIC, &self.source.topic))
            .insert(header(HEADER_SOURCE_PARTITION, &partition))
            .insert(header(HEADER_SOURCE_OFFSET, &offset));
        if !self.keep_value {
            let len = self.value.map_or(0, <[u8]>::len).to_string();
            headers = headers.insert(header(HEADER_VALUE_OMITTED, &len));
        }
        if !self.keep_key {
            let len = self.key.map_or(0, <[u8]>::len).to_string();
            headers = headers.insert(header(HEADER_KEY_OMITTED, &len));
        }
        headers
    }

    pub(crate) fn key(&self) -> Option<&'a [u8]> {
        self.key.filter(|_| self.keep_key)
    }

    pub(crate) fn value(&self) -> Option<&'a [u8]> {
        self.value.filter(|_| self.keep_value)
    }

    /// Leaves out the value, or once it is out, the key; says which, or
    /// `None` when nothing is left to leave out.
    pub(crate) fn shrink(&mut self) -> Option<Omitted> {
        if self.value().is_some() {
            self.keep_value = false;
            Some(Omitted::Value)
        } else if self.key().is_some() {
            self.keep_key = false;
            Some(Omitted::Key)
        } else {
            None
        }
    }
}

/// What [`DeadLetter::shrink`] left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Omitted {
    Value,
    Key,
}

impl Omitted {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Omitted::Value => "value",
            Omitted::Key => "key",
        }
    }
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rdkafka::message::Headers;

    use super::*;

    fn header_map(letter: &DeadLetter<'_>) -> Vec<(String, String)> {
        letter
            .headers()
            .iter()
            .map(|h| {
                let value = h.value.map(String::from_utf8_lossy).unwrap_or_default();
                (h.key.to_owned(), value.into_owned())
            })
            .collect()
    }

    #[test]
    fn a_letter_shrinks_value_first_then_key_then_no_further() {
        let source = SourceRef {
            topic: Arc::from("transactions"),
            partition: 3,
            offset: 42,
        };
        let rejection = Rejection {
            reason: Reason::DecodeFailed,
            message: "not Avro".into(),
        };
        let mut letter = DeadLetter::new(&source, &rejection, Some(b"card"), Some(b"value!"));
        assert_eq!(letter.value(), Some(&b"value!"[..]));
        assert_eq!(
            header_map(&letter),
            [
                (HEADER_REASON, "decode_failed"),
                (HEADER_MESSAGE, "not Avro"),
                (HEADER_SOURCE_TOPIC, "transactions"),
                (HEADER_SOURCE_PARTITION, "3"),
                (HEADER_SOURCE_OFFSET, "42"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert_eq!(letter.shrink(), Some(Omitted::Value));
        assert_eq!((letter.key(), letter.value()), (Some(&b"card"[..]), None));
        assert!(header_map(&letter).contains(&(HEADER_VALUE_OMITTED.into(), "6".into())));
        assert_eq!(letter.shrink(), Some(Omitted::Key));
        assert_eq!((letter.key(), letter.value()), (None, None));
        assert!(header_map(&letter).contains(&(HEADER_KEY_OMITTED.into(), "4".into())));
        assert_eq!(letter.shrink(), None);
        // A tombstone has no value to leave out: the key goes first.
        let mut tombstone = DeadLetter::new(&source, &rejection, Some(b"card"), None);
        assert_eq!(tombstone.shrink(), Some(Omitted::Key));
        assert_eq!(tombstone.shrink(), None);
    }
}
