//! Decoded fields → one row of model input, in the order the model card gives.

use apache_avro::Schema;
use apache_avro::types::Value as AvroValue;

use crate::codec::Fields;
use crate::item::EventMeta;
use crate::model::ModelCard;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum FeatureError {
    #[error("field {0:?} is missing")]
    Missing(String),
    #[error("field {field:?} is not numeric or boolean ({found})")]
    NotNumeric { field: String, found: String },
    #[error("field {field:?} is not a string ({found})")]
    NotText { field: String, found: String },
    #[error("field {0:?} is not a finite number")]
    NotFinite(String),
    #[error("model feature {feature:?} reads field {field:?}, which the reader schema lacks")]
    SchemaLacksField { feature: String, field: String },
    #[error(
        "model feature {feature:?} is {wanted} and reads field {field:?}, which the reader schema types otherwise: every record would be dead-lettered"
    )]
    SchemaFieldType {
        feature: String,
        field: String,
        wanted: &'static str,
    },
}

pub(crate) const EVENT_ID_FIELD: &str = "event_id";
pub(crate) const EVENT_TIME_FIELD: &str = "event_time";

/// The features of one or more rows, appended row by row: `numbers` holds
/// every feature of a row in card order (a string feature's slot holds 0),
/// `texts` the row's string features in card order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeatureRows {
    pub numbers: Vec<f32>,
    pub texts: Vec<String>,
}

impl FeatureRows {
    pub fn clear(&mut self) {
        self.numbers.clear();
        self.texts.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.numbers.is_empty() && self.texts.is_empty()
    }

    /// Appends `other`'s rows.
    pub fn extend_from(&mut self, other: &FeatureRows) {
        self.numbers.extend_from_slice(&other.numbers);
        self.texts.extend_from_slice(&other.texts);
    }

    fn mark(&self) -> (usize, usize) {
        (self.numbers.len(), self.texts.len())
    }

    fn truncate_to(&mut self, (numbers, texts): (usize, usize)) {
        self.numbers.truncate(numbers);
        self.texts.truncate(texts);
    }
}

/// Where each feature comes from. For Avro the field positions in the reader
/// schema are worked out once, so building a row does no name look-ups.
#[derive(Debug, Clone)]
pub struct FeaturePlan {
    fields: Vec<String>,
    /// Which features are strings.
    texts: Vec<bool>,
    avro_positions: Option<Vec<usize>>,
    avro_meta: Option<(usize, usize)>,
}

impl FeaturePlan {
    pub fn new(card: &ModelCard) -> Self {
        Self {
            fields: card.features.iter().map(|f| f.field.clone()).collect(),
            texts: card.features.iter().map(|f| f.is_text()).collect(),
            avro_positions: None,
            avro_meta: None,
        }
    }

    /// Binds the plan to an Avro reader schema, refusing one that lacks a field the model needs.
    pub fn for_avro_reader(
        mut self,
        card: &ModelCard,
        reader: &Schema,
    ) -> Result<Self, FeatureError> {
        let lookup: &std::collections::BTreeMap<String, usize> = match reader {
            Schema::Record(record) => &record.lookup,
            _ => {
                return Err(FeatureError::SchemaLacksField {
                    feature: "*".into(),
                    field: "(reader schema is not a record)".into(),
                });
            }
        };
        let position = |feature: &str, field: &str| {
            lookup
                .get(field)
                .copied()
                .ok_or_else(|| FeatureError::SchemaLacksField {
                    feature: feature.to_owned(),
                    field: field.to_owned(),
                })
        };
        let positions = card
            .features
            .iter()
            .map(|f| position(&f.name, &f.field))
            .collect::<Result<Vec<_>, _>>()?;
        if let Schema::Record(record) = reader {
            for (f, &p) in card.features.iter().zip(&positions) {
                let Some(field) = record.fields.get(p) else {
                    continue;
                };
                if !reads_as(&field.schema, f.is_text()) {
                    return Err(FeatureError::SchemaFieldType {
                        feature: f.name.clone(),
                        field: f.field.clone(),
                        wanted: if f.is_text() { "a string" } else { "a number" },
                    });
                }
            }
        }
        self.avro_meta = Some((
            position(EVENT_ID_FIELD, EVENT_ID_FIELD)?,
            position(EVENT_TIME_FIELD, EVENT_TIME_FIELD)?,
        ));
        self.avro_positions = Some(positions);
        Ok(self)
    }

    pub fn width(&self) -> usize {
        self.fields.len()
    }

    /// String features per row.
    pub fn text_width(&self) -> usize {
        self.texts.iter().filter(|t| **t).count()
    }

    /// The record field each feature reads, in row order.
    pub(crate) fn fields(&self) -> &[String] {
        &self.fields
    }

    /// Appends this event's features to `rows` (left unchanged on error).
    pub fn extract(
        &self,
        fields: &Fields,
        rows: &mut FeatureRows,
    ) -> Result<EventMeta, FeatureError> {
        let start = rows.mark();
        let result = match fields {
            Fields::Avro(record) => self.extract_avro(record, rows),
            Fields::Json(map) => self.extract_json(map, rows),
        };
        if result.is_err() {
            rows.truncate_to(start);
        }
        result
    }

    fn extract_avro(
        &self,
        record: &[(String, AvroValue)],
        rows: &mut FeatureRows,
    ) -> Result<EventMeta, FeatureError> {
        // Resolution against the reader schema yields fields in reader order;
        // check the name anyway so a mismatch can never read the wrong field.
        let get = |pos: Option<usize>, name: &str| -> Option<&AvroValue> {
            match pos.and_then(|p| record.get(p)) {
                Some((n, v)) if n == name => Some(v),
                _ => record.iter().find(|(n, _)| n == name).map(|(_, v)| v),
            }
        };
        let (id_pos, time_pos) = self.avro_meta.unzip();
        let event_id = get(id_pos, EVENT_ID_FIELD)
            .ok_or_else(|| FeatureError::Missing(EVENT_ID_FIELD.into()))
            .and_then(avro_event_id)?
            .to_owned();
        let event_time = get(time_pos, EVENT_TIME_FIELD)
            .ok_or_else(|| FeatureError::Missing(EVENT_TIME_FIELD.into()))
            .and_then(avro_event_time)?;
        for (i, field) in self.fields.iter().enumerate() {
            let pos = self.avro_positions.as_ref().map(|p| p[i]);
            let value = get(pos, field).ok_or_else(|| FeatureError::Missing(field.clone()))?;
            if self.texts[i] {
                rows.texts.push(avro_text(field, value)?);
                rows.numbers.push(0.0);
            } else {
                rows.numbers.push(avro_feature(field, value)?);
            }
        }
        Ok(EventMeta {
            event_id,
            event_time,
        })
    }

    fn extract_json(
        &self,
        map: &serde_json::Map<String, serde_json::Value>,
        rows: &mut FeatureRows,
    ) -> Result<EventMeta, FeatureError> {
        use serde_json::Value;
        let event_id = match map.get(EVENT_ID_FIELD) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => return Err(not_numeric(EVENT_ID_FIELD, other)),
            None => return Err(FeatureError::Missing(EVENT_ID_FIELD.into())),
        };
        let event_time = match map.get(EVENT_TIME_FIELD) {
            Some(Value::Number(n)) => n
                .as_i64()
                .ok_or_else(|| FeatureError::NotFinite(EVENT_TIME_FIELD.into()))?,
            Some(other) => return Err(not_numeric(EVENT_TIME_FIELD, other)),
            None => return Err(FeatureError::Missing(EVENT_TIME_FIELD.into())),
        };
        for (field, &text) in self.fields.iter().zip(&self.texts) {
            if text {
                rows.texts.push(match map.get(field) {
                    Some(Value::String(s)) => checked_text(field, s)?,
                    Some(Value::Null) | None => String::new(),
                    Some(other) => return Err(not_text(field, other)),
                });
                rows.numbers.push(0.0);
                continue;
            }
            let v = match map.get(field) {
                Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
                Some(Value::Bool(b)) => f64::from(u8::from(*b)),
                Some(other) => return Err(not_numeric(field, other)),
                None => return Err(FeatureError::Missing(field.clone())),
            };
            rows.numbers.push(finite(field, v)?);
        }
        Ok(EventMeta {
            event_id,
            event_time,
        })
    }
}

/// Whether a reader field's values can feed a feature: strings and enums a
/// string one, numbers and booleans (logical types of them too) a number;
/// a union with null as well (a null number is refused per record).
fn reads_as(schema: &Schema, text: bool) -> bool {
    match schema {
        Schema::Union(u) => {
            let mut branches = u
                .variants()
                .iter()
                .filter(|v| !matches!(v, Schema::Null))
                .peekable();
            branches.peek().is_some() && branches.all(|b| reads_as(b, text))
        }
        Schema::String | Schema::Enum(_) => text,
        // A named type used again by name: resolved per record.
        Schema::Ref { .. } => true,
        Schema::Int
        | Schema::Long
        | Schema::Float
        | Schema::Double
        | Schema::Boolean
        | Schema::Date
        | Schema::TimeMillis
        | Schema::TimestampMillis
        | Schema::TimestampMicros => !text,
        _ => false,
    }
}

fn unwrap_union(v: &AvroValue) -> &AvroValue {
    match v {
        AvroValue::Union(_, inner) => inner,
        other => other,
    }
}

/// The event id from a resolved Avro value: a string, nothing else.
pub(crate) fn avro_event_id(value: &AvroValue) -> Result<&str, FeatureError> {
    match unwrap_union(value) {
        AvroValue::String(s) => Ok(s),
        other => Err(not_numeric(EVENT_ID_FIELD, other)),
    }
}

/// The event time from a resolved Avro value: an int, a long or a timestamp in milliseconds.
pub(crate) fn avro_event_time(value: &AvroValue) -> Result<i64, FeatureError> {
    match unwrap_union(value) {
        AvroValue::Long(t) | AvroValue::TimestampMillis(t) => Ok(*t),
        AvroValue::Int(t) => Ok(i64::from(*t)),
        other => Err(not_numeric(EVENT_TIME_FIELD, other)),
    }
}

/// One feature from a resolved Avro value. Both Avro paths (decoded fields
/// and the compiled plan) apply this, so they cannot drift apart.
pub(crate) fn avro_feature(field: &str, value: &AvroValue) -> Result<f32, FeatureError> {
    let v = match unwrap_union(value) {
        AvroValue::Int(i) | AvroValue::Date(i) | AvroValue::TimeMillis(i) => f64::from(*i),
        AvroValue::Long(i) | AvroValue::TimestampMillis(i) | AvroValue::TimestampMicros(i) => {
            *i as f64
        }
        AvroValue::Float(f) => f64::from(*f),
        AvroValue::Double(f) => *f,
        AvroValue::Boolean(b) => f64::from(u8::from(*b)),
        AvroValue::Null => return Err(FeatureError::Missing(field.to_owned())),
        other => return Err(not_numeric(field, other)),
    };
    finite(field, v)
}

/// A string feature from a resolved Avro value: a string or an enum's
/// symbol; null (a missing optional field) is fed as "".
pub(crate) fn avro_text(field: &str, value: &AvroValue) -> Result<String, FeatureError> {
    match unwrap_union(value) {
        AvroValue::String(s) | AvroValue::Enum(_, s) => checked_text(field, s),
        AvroValue::Null => Ok(String::new()),
        other => Err(not_text(field, other)),
    }
}

/// ONNX Runtime takes strings as C strings: one with a NUL inside would fail
/// the whole batch's inference and stop the pipeline, on every restart; it
/// is this record's fault, so it is refused here and dead-lettered.
fn checked_text(field: &str, s: &str) -> Result<String, FeatureError> {
    if s.contains('\0') {
        return Err(not_text(field, &s));
    }
    Ok(s.to_owned())
}

fn not_text(field: &str, found: &impl std::fmt::Debug) -> FeatureError {
    let mut found = format!("{found:?}");
    found.truncate(found.floor_char_boundary(40));
    FeatureError::NotText {
        field: field.to_owned(),
        found,
    }
}

pub(crate) fn finite(field: &str, v: f64) -> Result<f32, FeatureError> {
    let f = v as f32;
    if f.is_finite() {
        Ok(f)
    } else {
        Err(FeatureError::NotFinite(field.to_owned()))
    }
}

fn not_numeric(field: &str, found: &impl std::fmt::Debug) -> FeatureError {
    let mut found = format!("{found:?}");
    // At a character boundary: the value is the sender's, any text at all.
    found.truncate(found.floor_char_boundary(40));
    FeatureError::NotNumeric {
        field: field.to_owned(),
        found,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> FeaturePlan {
        let model = crate::model::VerifiedModel::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../models/fraud_mlp.card.json"
        )))
        .unwrap();
        FeaturePlan::new(&model.card)
    }

    /// The value quoted in the error is cut short, never inside a character
    /// (it panicked when the 40th byte fell inside one).
    #[test]
    fn a_long_non_numeric_text_is_quoted_cut_at_a_character() {
        let plan = plan();
        let field = plan.fields()[0].clone();
        let mut map = serde_json::Map::new();
        map.insert(EVENT_ID_FIELD.into(), "e".into());
        map.insert(EVENT_TIME_FIELD.into(), 1.into());
        map.insert(field.clone(), "€".repeat(30).into());
        let mut row = FeatureRows::default();
        match plan.extract(&Fields::Json(map), &mut row) {
            Err(FeatureError::NotNumeric { field: f, found }) => {
                assert_eq!(f, field);
                assert!(
                    found.len() <= 40 && found.starts_with("String(\"€"),
                    "{found}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(row.is_empty());
    }

    /// A string feature: a string as it is, null or absent as "" (a v1
    /// writer has no merchant_country), anything else refused by name.
    #[test]
    fn a_string_feature_takes_strings_and_feeds_a_null_as_empty() {
        let model = crate::model::VerifiedModel::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../models/zoo/country_pipeline.card.json"
        )))
        .unwrap();
        let plan = FeaturePlan::new(&model.card);
        let mut base = serde_json::Map::new();
        base.insert(EVENT_ID_FIELD.into(), "e".into());
        base.insert(EVENT_TIME_FIELD.into(), 1.into());
        for f in &model.card.features {
            base.insert(f.field.clone(), 1.into());
        }
        let mut rows = FeatureRows::default();
        for (country, fed) in [
            (Some(serde_json::json!("NG")), "NG"),
            (Some(serde_json::Value::Null), ""),
            (None, ""),
        ] {
            let mut event = base.clone();
            match country {
                Some(c) => event.insert("merchant_country".into(), c),
                None => event.remove("merchant_country"),
            };
            plan.extract(&Fields::Json(event), &mut rows).unwrap();
            assert_eq!(rows.texts.last().map(String::as_str), Some(fed));
        }
        assert_eq!((rows.numbers.len(), rows.texts.len()), (75, 3));
        let mut event = base.clone();
        event.insert("merchant_country".into(), "US\u{0}".into());
        let err = plan.extract(&Fields::Json(event), &mut rows).unwrap_err();
        assert!(matches!(&err, FeatureError::NotText { .. }), "{err}");
        let nul = AvroValue::Union(1, Box::new(AvroValue::String("US\u{0}".into())));
        assert!(avro_text("merchant_country", &nul).is_err());
        let mut event = base.clone();
        event.insert("merchant_country".into(), 49.into());
        let err = plan.extract(&Fields::Json(event), &mut rows).unwrap_err();
        assert!(
            matches!(&err, FeatureError::NotText { field, .. } if field == "merchant_country"),
            "{err}"
        );
        assert_eq!(
            (rows.numbers.len(), rows.texts.len()),
            (75, 3),
            "no partial row"
        );
    }

    /// A feature whose field the reader schema types otherwise would
    /// dead-letter every record while the service looks healthy: refused at
    /// start instead.
    #[test]
    fn a_feature_whose_field_has_another_type_is_refused_at_start() {
        let reader = crate::codec::schemas::load_schema(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../schemas/card_transaction.v2.avsc"
        )))
        .unwrap();
        let model = crate::model::VerifiedModel::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../models/fraud_mlp.card.json"
        )))
        .unwrap();
        let mut card = model.card.clone();
        assert!(
            FeaturePlan::new(&card)
                .for_avro_reader(&card, &reader)
                .is_ok()
        );
        card.features[0].field = "card_id".into();
        let err = FeaturePlan::new(&card)
            .for_avro_reader(&card, &reader)
            .unwrap_err();
        assert!(
            matches!(&err, FeatureError::SchemaFieldType { field, wanted: "a number", .. } if field == "card_id"),
            "{err}"
        );
        let mut card = model.card.clone();
        card.features[0].avro_type = Some("string".into());
        let err = FeaturePlan::new(&card)
            .for_avro_reader(&card, &reader)
            .unwrap_err();
        assert!(
            matches!(
                &err,
                FeatureError::SchemaFieldType {
                    wanted: "a string",
                    ..
                }
            ),
            "{err}"
        );
    }
}
