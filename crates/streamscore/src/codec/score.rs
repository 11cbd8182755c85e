//! The score result published downstream (schemas/score_result.v1.avsc).

use apache_avro::Schema;
use serde::{Deserialize, Serialize};

use crate::codec::Format;
use crate::codec::{confluent_frame, confluent_unframe};
use crate::item::{EventMeta, Item};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    #[serde(rename = "PASS")]
    Pass,
    #[serde(rename = "FLAG")]
    Flag,
}

impl Decision {
    /// FLAG at or above the threshold, PASS below it.
    pub fn at(score: f64, threshold: f64) -> Self {
        if score >= threshold {
            Decision::Flag
        } else {
            Decision::Pass
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreResult {
    pub event_id: String,
    /// The input record's key as text (the output record carries the exact key bytes).
    pub record_key: Option<String>,
    pub score: f64,
    pub decision: Decision,
    pub threshold: f64,
    pub model_name: String,
    pub model_version: String,
    pub model_sha256: String,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub event_time: i64,
    pub scored_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ScoreCodecError {
    #[error("cannot encode score result as Avro: {0}")]
    Encode(String),
    #[error("cannot decode score result: {0}")]
    Decode(String),
}

/// Encodes (and, for readers such as the verifier, decodes) score results.
pub struct ScoreEncoder {
    format: Format,
    schema: Schema,
    schema_id: u32,
}

impl ScoreEncoder {
    /// The id framed in front of Avro scores.
    pub fn schema_id(&self) -> u32 {
        self.schema_id
    }

    pub fn new(format: Format, schema: Schema, schema_id: u32) -> Self {
        Self {
            format,
            schema,
            schema_id,
        }
    }

    pub fn encode(&self, result: &ScoreResult) -> Result<Vec<u8>, ScoreCodecError> {
        match self.format {
            Format::Json => {
                serde_json::to_vec(result).map_err(|e| ScoreCodecError::Encode(e.to_string()))
            }
            Format::Avro => {
                // Serialised straight against the schema, with no Value tree
                // in between: this runs once per record on the sink thread.
                // (The Decision enum is written by variant index, which the
                // test below holds to the schema's symbol order.)
                let mut out = confluent_frame(self.schema_id, &[]);
                out.reserve(192);
                apache_avro::write_avro_datum_ref(&self.schema, result, &mut out)
                    .map_err(|e| ScoreCodecError::Encode(e.to_string()))?;
                Ok(out)
            }
        }
    }

    pub fn decode(&self, bytes: &[u8]) -> Result<ScoreResult, ScoreCodecError> {
        let err = |m: String| ScoreCodecError::Decode(m);
        match self.format {
            Format::Json => serde_json::from_slice(bytes).map_err(|e| err(e.to_string())),
            Format::Avro => {
                let (id, mut datum) =
                    confluent_unframe(bytes).ok_or_else(|| err("not Confluent-framed".into()))?;
                if id != self.schema_id {
                    return Err(err(format!("schema id {id}, expected {}", self.schema_id)));
                }
                let value = apache_avro::from_avro_datum(&self.schema, &mut datum, None)
                    .map_err(|e| err(e.to_string()))?;
                apache_avro::from_value(&value).map_err(|e| err(e.to_string()))
            }
        }
    }
}

/// What a score result says about the model that made it.
#[derive(Debug, Clone)]
pub(crate) struct ModelIdentity {
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub threshold: f64,
}

/// Builds the value of each score record: the result for one scored event,
/// with the decision and the model that made it, encoded for the score topic.
pub(crate) struct ScoreRecords {
    encoder: ScoreEncoder,
    model: ModelIdentity,
    /// The challenger, with shadow scoring.
    shadow: Option<ModelIdentity>,
}

impl ScoreRecords {
    pub(crate) fn new(encoder: ScoreEncoder, model: ModelIdentity) -> Self {
        Self {
            encoder,
            model,
            shadow: None,
        }
    }

    pub(crate) fn with_shadow(mut self, shadow: Option<ModelIdentity>) -> Self {
        self.shadow = shadow;
        self
    }

    pub(crate) fn shadow(&self) -> Option<&ModelIdentity> {
        self.shadow.as_ref()
    }

    /// The served model's identity for a batch stamped with `model`.
    pub(crate) fn serving<'a>(&'a self, model: Option<&'a ModelIdentity>) -> &'a ModelIdentity {
        model.unwrap_or(&self.model)
    }

    pub(crate) fn value(
        &self,
        item: &Item,
        meta: &EventMeta,
        score: f32,
        scored_at: i64,
        model: Option<&ModelIdentity>,
    ) -> Result<Vec<u8>, ScoreCodecError> {
        let score = f64::from(score);
        // A batch names the model that scored it; the one started with otherwise.
        let model = model.unwrap_or(&self.model);
        self.encoder.encode(&ScoreResult {
            event_id: meta.event_id.clone(),
            record_key: (item.key.as_deref()).map(|k| String::from_utf8_lossy(k).into_owned()),
            score,
            decision: Decision::at(score, model.threshold),
            threshold: model.threshold,
            model_name: model.name.clone(),
            model_version: model.version.clone(),
            model_sha256: model.sha256.clone(),
            source_topic: item.source.topic.to_string(),
            source_partition: item.source.partition,
            source_offset: item.source.offset,
            event_time: meta.event_time,
            scored_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::schemas::load_schema;

    fn sample() -> ScoreResult {
        ScoreResult {
            event_id: "e-1".into(),
            record_key: Some("card-7".into()),
            score: 0.25,
            decision: Decision::Pass,
            threshold: 0.5,
            model_name: "fraud_mlp".into(),
            model_version: "1.0.0".into(),
            model_sha256: "ab".repeat(32),
            source_topic: "transactions".into(),
            source_partition: 3,
            source_offset: 42,
            event_time: 1_790_000_000_000,
            scored_at: 1_790_000_000_050,
        }
    }

    #[test]
    fn the_threshold_itself_flags() {
        assert_eq!(Decision::at(0.5, 0.5), Decision::Flag);
        assert_eq!(Decision::at(0.499_999, 0.5), Decision::Pass);
        assert_eq!(Decision::at(0.9, 0.5), Decision::Flag);
    }

    #[test]
    fn avro_and_json_round_trip() {
        crate::codec::test_allocation_limit();
        let schema = load_schema(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../schemas/score_result.v1.avsc"
        )))
        .unwrap();
        for format in [Format::Avro, Format::Json] {
            let codec = ScoreEncoder::new(format, schema.clone(), 101);
            let bytes = codec.encode(&sample()).unwrap();
            assert_eq!(codec.decode(&bytes).unwrap(), sample());
        }
        let avro = ScoreEncoder::new(Format::Avro, schema, 101)
            .encode(&sample())
            .unwrap();
        assert_eq!(&avro[..5], &[0, 0, 0, 0, 101]);
    }

    #[test]
    fn direct_avro_bytes_equal_the_generic_value_path() {
        let schema = load_schema(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../schemas/score_result.v1.avsc"
        )))
        .unwrap();
        let codec = ScoreEncoder::new(Format::Avro, schema.clone(), 101);
        for (decision, key) in [
            (Decision::Pass, Some("k".to_owned())),
            (Decision::Flag, None),
        ] {
            let result = ScoreResult {
                decision,
                record_key: key,
                ..sample()
            };
            let value = apache_avro::to_value(&result)
                .unwrap()
                .resolve(&schema)
                .unwrap();
            let generic = apache_avro::to_avro_datum(&schema, value).unwrap();
            assert_eq!(
                codec.encode(&result).unwrap()[5..],
                generic[..],
                "{decision:?}"
            );
        }
    }
}
