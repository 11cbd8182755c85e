//! The per-record work of the source stage: open the envelope, decode the
//! plaintext, build the feature row. Every failure is a [`Rejection`] that
//! sends the record to the dead-letter topic; nothing here can panic on input.

use std::sync::Arc;
use std::time::Instant;

use metrics::Histogram;

use crate::codec::InputDecoder;
use crate::dead_letter::{Reason, Rejection};
use crate::envelope::Keyring;
use crate::features::{EventMeta, FeaturePlan};
use crate::telemetry::metrics::{STAGE_DURATION, stage};

pub struct Transform {
    keyring: Arc<Keyring>,
    decoder: InputDecoder,
    plan: FeaturePlan,
    decrypt_seconds: Histogram,
    decode_seconds: Histogram,
}

impl Transform {
    pub fn new(keyring: Arc<Keyring>, decoder: InputDecoder, plan: FeaturePlan) -> Self {
        Self {
            keyring,
            decoder,
            plan,
            decrypt_seconds: metrics::histogram!(STAGE_DURATION, "stage" => stage::DECRYPT),
            decode_seconds: metrics::histogram!(STAGE_DURATION, "stage" => stage::DECODE),
        }
    }

    pub fn width(&self) -> usize {
        self.plan.width()
    }

    /// Appends the record's features to `row` and returns its identity, or says why it cannot be scored.
    pub fn apply(
        &self,
        value: Option<&[u8]>,
        key: Option<&[u8]>,
        row: &mut Vec<f32>,
    ) -> Result<EventMeta, Rejection> {
        let value = match value {
            Some(v) if !v.is_empty() => v,
            _ => {
                return Err(Rejection {
                    reason: Reason::EmptyValue,
                    message: "record has no value (tombstone or empty)".into(),
                });
            }
        };
        let started = Instant::now();
        let plaintext = self.keyring.open(value, key);
        let opened = Instant::now();
        self.decrypt_seconds.record(opened - started);
        let plaintext = plaintext?;
        let fields = self.decoder.decode(&plaintext);
        let meta = fields
            .map_err(Rejection::from)
            .and_then(|f| Ok(self.plan.extract(&f, row)?));
        self.decode_seconds.record(opened.elapsed());
        meta
    }
}
