//! The features a matrix's columns are, each checked against the reader
//! schema: the field exists and holds a number or a boolean.

use std::path::Path;

use apache_avro::Schema;
use serde::Serialize;

use super::CardWriteError;

/// One column: the feature's name and the record field it is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureMapping {
    pub name: String,
    pub field: String,
}

impl std::str::FromStr for FeatureMapping {
    type Err = String;

    /// `name` (read from the field of that name) or `name=field`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, field) = s.split_once('=').unwrap_or((s, s));
        let (name, field) = (name.trim(), field.trim());
        if name.is_empty() || field.is_empty() {
            return Err(format!("{s:?}: a feature is name or name=field"));
        }
        Ok(Self {
            name: name.to_owned(),
            field: field.to_owned(),
        })
    }
}

/// A card's feature, as written.
#[derive(Debug, Serialize)]
pub(super) struct FeatureDocument {
    name: String,
    field: String,
    #[serde(rename = "type")]
    avro_type: &'static str,
}

const NUMERIC: &str = "int, long, float, double or boolean (or a union of one with null)";

/// Each feature with whether its input takes strings.
pub(super) fn check(
    mapping: &[(FeatureMapping, bool)],
    schema: &Schema,
    path: &Path,
) -> Result<Vec<FeatureDocument>, CardWriteError> {
    let Schema::Record(record) = schema else {
        return Err(CardWriteError::Schema {
            path: path.display().to_string(),
            message: "is not a record".into(),
        });
    };
    let mut seen = std::collections::HashSet::new();
    mapping
        .iter()
        .map(|(m, text)| {
            if !seen.insert(m.name.as_str()) {
                return Err(CardWriteError::Feature(format!(
                    "feature {:?} is named twice in --features",
                    m.name
                )));
            }
            let field = record
                .lookup
                .get(&m.field)
                .and_then(|&i| record.fields.get(i))
                .ok_or_else(|| {
                    CardWriteError::Feature(format!(
                        "feature {:?}: the schema {} has no field {:?}",
                        m.name,
                        path.display(),
                        m.field
                    ))
                })?;
            let (avro_type, takes) = if *text {
                (string(&field.schema), STRING)
            } else {
                (numeric(&field.schema), NUMERIC)
            };
            let avro_type = avro_type.ok_or_else(|| {
                CardWriteError::Feature(format!(
                    "feature {:?}: field {:?} is {} in {}; a {} input takes {takes}",
                    m.name,
                    m.field,
                    type_name(&field.schema),
                    path.display(),
                    if *text { "string" } else { "float32" }
                ))
            })?;
            Ok(FeatureDocument {
                name: m.name.clone(),
                field: m.field.clone(),
                avro_type,
            })
        })
        .collect()
}

const STRING: &str = "string or enum (or a union of one with null: a null is fed as \"\")";

/// The card's type of a field that can feed a string column.
fn string(schema: &Schema) -> Option<&'static str> {
    match schema {
        Schema::String | Schema::Enum(_) => Some("string"),
        Schema::Union(u) => {
            let mut kinds = u.variants().iter().filter(|v| !matches!(v, Schema::Null));
            match (kinds.next(), kinds.next()) {
                (Some(one), None) => string(one),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The Avro type of a field that can feed a float32 column.
fn numeric(schema: &Schema) -> Option<&'static str> {
    match schema {
        Schema::Date => Some("date"),
        Schema::TimeMillis => Some("time-millis"),
        Schema::TimestampMillis => Some("timestamp-millis"),
        Schema::TimestampMicros => Some("timestamp-micros"),
        Schema::Int => Some("int"),
        Schema::Long => Some("long"),
        Schema::Float => Some("float"),
        Schema::Double => Some("double"),
        Schema::Boolean => Some("boolean"),
        Schema::Union(u) => {
            let mut kinds = u.variants().iter().filter(|v| !matches!(v, Schema::Null));
            match (kinds.next(), kinds.next()) {
                (Some(one), None) => numeric(one),
                _ => None,
            }
        }
        _ => None,
    }
}

fn type_name(schema: &Schema) -> String {
    match schema {
        Schema::Union(u) => format!(
            "a union of {}",
            u.variants()
                .iter()
                .map(type_name)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Schema::Record(r) => format!("the record {}", r.name),
        Schema::Enum(e) => format!("the enum {}", e.name),
        other => {
            let kind: apache_avro::schema::SchemaKind = other.into();
            format!("{kind:?}").to_ascii_lowercase()
        }
    }
}
