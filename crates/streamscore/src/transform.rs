//! The per-record work of the source stage: open the envelope, decode the
//! plaintext, build the feature row. Every failure is a [`Rejection`] that
//! sends the record to the dead-letter topic; nothing here can panic on input.
//!
//! Avro plaintexts go through the plan compiled for their writer schema
//! (`codec::rows`), straight into the row: decoding through apache-avro's
//! `Value`s was most of the source thread's time.

use std::sync::Arc;
use std::time::Instant;

use crate::codec::DecodeError;
use crate::codec::InputDecoder;
use crate::codec::registry_writers::WriterError;
use crate::codec::rows::{RowDecoder, RowError};
use crate::dead_letter::{Reason, Rejection};
use crate::envelope::SharedKeyring;
use crate::features::{FeaturePlan, FeatureRows};
use crate::item::EventMeta;
use crate::telemetry::{Stats, Step};

/// Why a record gives no row.
#[derive(Debug, thiserror::Error)]
pub enum Unscored {
    /// The record cannot be scored: it goes to the dead-letter topic.
    #[error("{}: {}", .0.reason.as_str(), .0.message)]
    Rejected(Rejection),
    /// Its writer schema is not to be had now (the schema registry does not
    /// answer, or the pipeline is stopping): not the record's fault, so it
    /// must not be dead-lettered; the processor stops and reads it again.
    #[error(transparent)]
    SchemaUnavailable(WriterError),
}

impl Unscored {
    /// The dead-letter reason and message, for a record that has them.
    pub fn rejection(&self) -> Option<&Rejection> {
        match self {
            Self::Rejected(r) => Some(r),
            Self::SchemaUnavailable(_) => None,
        }
    }
}

impl From<Rejection> for Unscored {
    fn from(r: Rejection) -> Self {
        Self::Rejected(r)
    }
}

pub struct Transform {
    keyring: SharedKeyring,
    rows: RowDecoder,
    max_record_bytes: usize,
    stats: Arc<Stats>,
}

impl Transform {
    /// Compiles a decoding plan for each Avro writer schema the decoder holds.
    pub fn new(
        keyring: SharedKeyring,
        decoder: InputDecoder,
        plan: FeaturePlan,
        max_record_bytes: usize,
        stats: Arc<Stats>,
    ) -> Self {
        Self {
            keyring,
            rows: RowDecoder::new(decoder, plan),
            max_record_bytes,
            stats,
        }
    }

    pub fn width(&self) -> usize {
        self.rows.width()
    }

    /// The decode step alone: an opened plaintext to its features, appended
    /// to `rows` (left unchanged on error), and its identity.
    pub fn decode(&self, plaintext: &[u8], rows: &mut FeatureRows) -> Result<EventMeta, Unscored> {
        self.rows.decode(plaintext, rows).map_err(|e| match e {
            RowError::Decode(DecodeError::Registry(
                e @ (WriterError::Unavailable { .. } | WriterError::Stopped(_)),
            )) => Unscored::SchemaUnavailable(e),
            RowError::Decode(e) => Unscored::Rejected(e.into()),
            RowError::Features(e) => Unscored::Rejected(e.into()),
        })
    }

    /// Appends the record's features to `rows` and returns its identity, or says why it cannot be scored.
    pub fn apply(
        &self,
        value: Option<&[u8]>,
        key: Option<&[u8]>,
        rows: &mut FeatureRows,
    ) -> Result<EventMeta, Unscored> {
        let value = match value {
            Some(v) if !v.is_empty() => v,
            _ => {
                return Err(Unscored::Rejected(Rejection {
                    reason: Reason::EmptyValue,
                    message: "record has no value (tombstone or empty)".into(),
                }));
            }
        };
        if value.len() > self.max_record_bytes {
            return Err(Unscored::Rejected(Rejection {
                reason: Reason::TooLarge,
                message: format!(
                    "record value is {} bytes, over input.max_record_bytes = {}",
                    value.len(),
                    self.max_record_bytes
                ),
            }));
        }
        let started = Instant::now();
        let plaintext = self.keyring.load().open(value, key);
        let opened = Instant::now();
        self.stats.timed(Step::Decrypt, opened - started);
        let plaintext = plaintext.map_err(Rejection::from)?;
        let meta = self.decode(&plaintext, rows);
        self.stats.timed(Step::Decode, opened.elapsed());
        meta
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::envelope::Keyring;
    use crate::model::VerifiedModel;

    fn transform() -> (Transform, Arc<Keyring>) {
        let model = VerifiedModel::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../models/fraud_mlp.card.json"
        )))
        .unwrap();
        let keyring = Arc::new(Keyring::generate("k").unwrap().0);
        let t = Transform::new(
            crate::envelope::share(keyring.clone()),
            InputDecoder::json(),
            FeaturePlan::new(&model.card),
            4096,
            Arc::default(),
        );
        (t, keyring)
    }

    #[test]
    fn tombstone_and_empty_values_are_rejected_as_empty() {
        let (t, _) = transform();
        let mut row = FeatureRows::default();
        for value in [None, Some(&b""[..])] {
            let r = t.apply(value, Some(b"k"), &mut row).unwrap_err();
            let r = r.rejection().unwrap();
            assert_eq!(r.reason, Reason::EmptyValue);
        }
        assert!(row.is_empty());
    }

    #[test]
    fn oversized_value_is_too_large_before_any_decryption() {
        let (t, _) = transform();
        let mut row = FeatureRows::default();
        let r = t
            .apply(Some(&[1u8; 4097]), Some(b"k"), &mut row)
            .unwrap_err();
        let r = r.rejection().unwrap();
        assert_eq!(r.reason, Reason::TooLarge);
        assert!(
            t.apply(Some(&[1u8; 4096]), Some(b"k"), &mut row)
                .unwrap_err()
                .rejection()
                .unwrap()
                .reason
                != Reason::TooLarge
        );
    }

    #[test]
    fn missing_feature_is_invalid_features_and_leaves_no_partial_row() {
        let (t, keyring) = transform();
        let sealed = keyring.seal(
            br#"{"event_id":"e","event_time":1,"amount":3.0}"#,
            Some(b"k"),
        );
        let mut row = FeatureRows::default();
        let r = t.apply(Some(&sealed), Some(b"k"), &mut row).unwrap_err();
        let r = r.rejection().unwrap();
        assert_eq!(r.reason, Reason::InvalidFeatures);
        assert!(r.message.contains("amount_avg_30d"), "{}", r.message);
        assert!(row.is_empty());
    }
}
