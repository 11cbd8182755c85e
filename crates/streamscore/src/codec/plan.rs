//! A decoding plan compiled once per writer schema: Avro binary straight into
//! the feature row and the event's identity, with no `Value` in between.
//!
//! The plan is apache-avro's `from_avro_datum` (decode with the writer
//! schema, resolve against the reader schema) followed by `FeaturePlan`'s
//! Avro rules, worked out ahead of time: for each writer field, in writer
//! order, either skip its value or read a scalar and resolve it to the
//! reader's type; for each reader field the writer lacks, the default the
//! library would resolve, already through the feature rules. The outcome
//! classes come in the library's order: a datum that does not decode, then a
//! value that does not resolve, then trailing bytes, then the first feature
//! error in `FeaturePlan`'s order (event id, event time, features in card
//! order). Feature errors and the framing errors are the same values;
//! decoding and resolution errors are `DecodeError::Avro` with messages of
//! our own (the dead-letter reason is the same, `decode_failed`).
//!
//! What it does not compile, [`Unsupported`], stays on the apache-avro path
//! for that writer id (`rows::RowDecoder`): a field both schemas have whose
//! type is not a scalar (or a union of scalars) on either side, a conversion
//! the library decides by the value (a string read as a double or a bytes
//! value read as a string), a skipped field with a recursive type or a uuid
//! or big-decimal value, a default of a non-scalar type, and a reader record
//! that lacks a field the model reads.

use std::collections::{BTreeMap, HashMap, HashSet};

use apache_avro::Schema;
use apache_avro::schema::{RecordField, RecordSchema, ResolvedSchema};
use apache_avro::types::Value as AvroValue;

use super::DecodeError;
use super::binary::{BinaryError, Cursor};
use super::rows::RowError;
use super::scalar::{Kind, Resolves, Scalar};
use super::skip::Skip;
use crate::features::{
    EVENT_ID_FIELD, EVENT_TIME_FIELD, FeatureError, avro_event_id, avro_event_time, avro_feature,
    finite,
};
use crate::item::EventMeta;

/// Why a writer schema stays on the apache-avro path.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Unsupported(pub(crate) String);

/// What a reader field's value is for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    EventId,
    EventTime,
    Feature(usize),
}

impl Role {
    /// `FeaturePlan::extract`'s order, in which the first error is reported.
    fn rank(self) -> usize {
        match self {
            Role::EventId => 0,
            Role::EventTime => 1,
            Role::Feature(k) => 2 + k,
        }
    }
}

/// The reader kind a writer value of some kind resolves to; `None`: it does not.
type Target = Option<Kind>;

/// How a kept field is written: one scalar type, or a union of them. `null`
/// is where a null goes, including the library's end-of-datum nulls.
#[derive(Debug)]
enum Read {
    One {
        kind: Kind,
        target: Target,
        null: Target,
    },
    Union {
        branches: Box<[(Kind, Target)]>,
        null: Target,
    },
}

#[derive(Debug)]
enum Op {
    Skip(Skip),
    Keep {
        name: Box<str>,
        read: Read,
        roles: Box<[Role]>,
    },
}

/// A reader field the writer lacks: its default, through the feature rules.
#[derive(Debug)]
enum Fill {
    EventId(Result<String, FeatureError>),
    EventTime(Result<i64, FeatureError>),
    Feature(usize, Result<f32, FeatureError>),
}

#[derive(Debug)]
pub(crate) struct RecordPlan {
    ops: Box<[Op]>,
    fills: Box<[Fill]>,
    /// A reader field the writer lacks without a default that resolves:
    /// every datum that decodes fails resolution with this message.
    always_fails: Option<String>,
}

impl RecordPlan {
    /// Compiles the plan for records written with `writer`, read with
    /// `reader`, into rows of the `features` fields.
    pub(crate) fn compile(
        writer: &Schema,
        reader: &Schema,
        features: &[String],
    ) -> Result<Self, Unsupported> {
        let (Schema::Record(w), Schema::Record(r)) = (writer, reader) else {
            return Err(Unsupported(
                "a writer or reader schema that is not a record".into(),
            ));
        };
        let roles = roles(r, features)?;
        let reader_fields: HashMap<&str, usize> = r
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.as_str(), i))
            .collect();
        let written: HashSet<&str> = w.fields.iter().map(|f| f.name.as_str()).collect();
        if written.len() != w.fields.len() {
            return Err(Unsupported("a writer with two fields of one name".into()));
        }
        let resolved = ResolvedSchema::try_from(writer).map_err(|e| Unsupported(e.to_string()))?;
        let namespace = w.name.fully_qualified_name(&None).namespace;
        let ops = w
            .fields
            .iter()
            .map(|f| match reader_fields.get(f.name.as_str()) {
                Some(&i) => keep(f, &r.fields[i], &roles[i]),
                None => Skip::compile(&f.schema, resolved.get_names(), &namespace).map(Op::Skip),
            })
            .collect::<Result<_, _>>()?;
        let mut fills = Vec::new();
        let mut always_fails = None;
        for (field, roles) in r.fields.iter().zip(&roles) {
            if written.contains(field.name.as_str()) {
                continue;
            }
            match default_of(r, field)? {
                Ok(value) => fills.extend(roles.iter().map(|&role| fill(role, &value, features))),
                Err(message) => {
                    always_fails.get_or_insert(message);
                }
            }
        }
        Ok(Self {
            ops,
            fills: fills.into(),
            always_fails,
        })
    }

    /// Appends the record's features to `row` (left unchanged on error) and
    /// returns its identity. `features` are the fields the plan was compiled for.
    pub(crate) fn run(
        &self,
        datum: &[u8],
        features: &[String],
        row: &mut Vec<f32>,
    ) -> Result<EventMeta, RowError> {
        // Read per record, as the library reads it; set once at start (prepare).
        let max_len = apache_avro::util::max_allocation_bytes(
            apache_avro::util::DEFAULT_MAX_ALLOCATION_BYTES,
        );
        let start = row.len();
        row.resize(start + features.len(), 0.0);
        let result = self.fill_row(Cursor::new(datum, max_len), features, &mut row[start..]);
        if result.is_err() {
            row.truncate(start);
        }
        result
    }

    fn fill_row(
        &self,
        mut cur: Cursor<'_>,
        features: &[String],
        slots: &mut [f32],
    ) -> Result<EventMeta, RowError> {
        let mut out = Outcome {
            features,
            slots,
            event_id: None,
            event_time: None,
            first_error: None,
        };
        let mut unresolved: Option<&str> = None;
        for op in &*self.ops {
            match op {
                Op::Skip(skip) => skip.run(&mut cur).map_err(decode_error)?,
                Op::Keep { name, read, roles } => {
                    match read.read(&mut cur).map_err(decode_error)? {
                        Some(value) if unresolved.is_none() => {
                            roles.iter().for_each(|&role| out.take(role, value));
                        }
                        Some(_) => {}
                        None => {
                            unresolved.get_or_insert(name);
                        }
                    }
                }
            }
        }
        if let Some(message) = &self.always_fails {
            return Err(DecodeError::Avro(message.clone()).into());
        }
        if let Some(name) = unresolved {
            return Err(DecodeError::Avro(format!(
                "field {name:?}: the written value does not resolve to the reader schema's type"
            ))
            .into());
        }
        if cur.remaining() > 0 {
            return Err(DecodeError::TrailingBytes(cur.remaining()).into());
        }
        for fill in &*self.fills {
            out.fill(fill);
        }
        out.finish()
    }
}

impl Read {
    /// One value, resolved; `None` when it does not resolve.
    fn read<'a>(&self, cur: &mut Cursor<'a>) -> Result<Option<Scalar<'a>>, BinaryError> {
        let (value, kind, target, null) = match self {
            Read::One { kind, target, null } => (kind.read(cur)?, *kind, *target, *null),
            Read::Union { branches, null } => match cur.union_index(branches.len())? {
                None => return Ok(null.and_then(|t| Scalar::Null.resolve(t))),
                Some(i) => match branches.get(i) {
                    Some(&(kind, target)) => (kind.read(cur)?, kind, target, *null),
                    None => return Ok(None),
                },
            },
        };
        Ok(match (value, target) {
            (Scalar::Null, _) => null.and_then(|t| value.resolve(t)),
            // Most fields: the reader's type is the writer's (a value of
            // `kind` that is not null is of that kind), nothing to convert.
            (_, Some(t)) if t == kind => Some(value),
            (_, Some(t)) => value.resolve(t),
            (_, None) => None,
        })
    }
}

/// A record's row and identity as they are read, and its first feature error.
struct Outcome<'p, 'r> {
    features: &'p [String],
    slots: &'r mut [f32],
    event_id: Option<String>,
    event_time: Option<i64>,
    first_error: Option<(usize, FeatureError)>,
}

impl Outcome<'_, '_> {
    fn take(&mut self, role: Role, value: Scalar<'_>) {
        let done = match (role, value) {
            (Role::EventId, Scalar::String(s)) => {
                self.event_id = Some(s.to_owned());
                Ok(())
            }
            (Role::EventId, other) => avro_event_id(&other.to_value()).map(|id| {
                self.event_id = Some(id.to_owned());
            }),
            (Role::EventTime, v) => event_time(v).map(|t| {
                self.event_time = Some(t);
            }),
            (Role::Feature(k), v) => self.feature(k, v),
        };
        if let Err(e) = done {
            self.error(role, e);
        }
    }

    fn feature(&mut self, k: usize, value: Scalar<'_>) -> Result<(), FeatureError> {
        let (Some(field), Some(slot)) = (self.features.get(k), self.slots.get_mut(k)) else {
            return Ok(());
        };
        *slot = feature(field, value)?;
        Ok(())
    }

    fn fill(&mut self, fill: &Fill) {
        let (role, done) = match fill {
            Fill::EventId(id) => (Role::EventId, id.clone().map(|id| self.event_id = Some(id))),
            Fill::EventTime(t) => (
                Role::EventTime,
                t.clone().map(|t| self.event_time = Some(t)),
            ),
            Fill::Feature(k, x) => (
                Role::Feature(*k),
                x.clone().map(|x| {
                    if let Some(slot) = self.slots.get_mut(*k) {
                        *slot = x;
                    }
                }),
            ),
        };
        if let Err(e) = done {
            self.error(role, e);
        }
    }

    fn error(&mut self, role: Role, error: FeatureError) {
        let rank = role.rank();
        if self.first_error.as_ref().is_none_or(|(r, _)| rank < *r) {
            self.first_error = Some((rank, error));
        }
    }

    fn finish(self) -> Result<EventMeta, RowError> {
        if let Some((_, e)) = self.first_error {
            return Err(e.into());
        }
        // Every role is assigned by compilation; a gap would be a plan bug,
        // reported as the field missing rather than a panic.
        let event_id = self
            .event_id
            .ok_or_else(|| FeatureError::Missing(EVENT_ID_FIELD.into()))?;
        let event_time = self
            .event_time
            .ok_or_else(|| FeatureError::Missing(EVENT_TIME_FIELD.into()))?;
        Ok(EventMeta {
            event_id,
            event_time,
        })
    }
}

/// `avro_feature` of the value, without building a `Value` for a number
/// (a third of the plan's time when it did); `plan_tests` holds the two equal.
pub(super) fn feature(field: &str, value: Scalar<'_>) -> Result<f32, FeatureError> {
    let x = match value {
        Scalar::Int(n) | Scalar::Date(n) | Scalar::TimeMillis(n) => f64::from(n),
        Scalar::Long(n) | Scalar::TimestampMillis(n) | Scalar::TimestampMicros(n) => n as f64,
        Scalar::Float(x) => f64::from(x),
        Scalar::Double(x) => x,
        Scalar::Boolean(b) => f64::from(u8::from(b)),
        other => return avro_feature(field, &other.to_value()),
    };
    finite(field, x)
}

/// `avro_event_time` of the value, likewise.
pub(super) fn event_time(value: Scalar<'_>) -> Result<i64, FeatureError> {
    match value {
        Scalar::Long(t) | Scalar::TimestampMillis(t) => Ok(t),
        Scalar::Int(t) => Ok(i64::from(t)),
        other => avro_event_time(&other.to_value()),
    }
}

fn decode_error(e: BinaryError) -> RowError {
    DecodeError::Avro(e.to_string()).into()
}

/// The roles of each reader field, by the reader's field order.
fn roles(reader: &RecordSchema, features: &[String]) -> Result<Vec<Vec<Role>>, Unsupported> {
    let mut roles = vec![Vec::new(); reader.fields.len()];
    let wanted = [
        (EVENT_ID_FIELD, Role::EventId),
        (EVENT_TIME_FIELD, Role::EventTime),
    ]
    .into_iter()
    .chain(
        features
            .iter()
            .enumerate()
            .map(|(k, f)| (f.as_str(), Role::Feature(k))),
    );
    for (field, role) in wanted {
        let i = reader
            .fields
            .iter()
            .position(|f| f.name == field)
            .ok_or_else(|| Unsupported(format!("a reader schema without the field {field:?}")))?;
        roles[i].push(role);
    }
    Ok(roles)
}

/// The reader's type of a kept field: a scalar or a union of scalars.
enum ReaderType {
    One(Kind),
    Union(Vec<Kind>),
}

impl ReaderType {
    fn of(field: &RecordField) -> Result<Self, Unsupported> {
        let unsupported = || {
            Unsupported(format!(
                "the reader's field {:?}, neither a scalar nor a union of scalars",
                field.name
            ))
        };
        match &field.schema {
            Schema::Union(u) => u
                .variants()
                .iter()
                .map(|v| Kind::of(v).ok_or_else(unsupported))
                .collect::<Result<_, _>>()
                .map(ReaderType::Union),
            s => Kind::of(s).map(ReaderType::One).ok_or_else(unsupported),
        }
    }

    /// Where a writer value of `kind` goes: the union branch of the same kind
    /// if there is one, else the first it resolves to (the library's
    /// `find_schema_with_known_schemata`).
    fn target(&self, kind: Kind, field: &str) -> Result<Target, Unsupported> {
        let by_value = || {
            Unsupported(format!(
                "field {field:?}, where {kind:?} resolves by the value"
            ))
        };
        match self {
            ReaderType::One(r) => match kind.resolves_to(*r) {
                Resolves::Always => Ok(Some(*r)),
                Resolves::Never => Ok(None),
                Resolves::DependsOnValue => Err(by_value()),
            },
            ReaderType::Union(branches) if branches.contains(&kind) => Ok(Some(kind)),
            ReaderType::Union(branches) => {
                for &b in branches {
                    match kind.resolves_to(b) {
                        Resolves::Always => return Ok(Some(b)),
                        Resolves::Never => {}
                        Resolves::DependsOnValue => return Err(by_value()),
                    }
                }
                Ok(None)
            }
        }
    }
}

/// A field both schemas have.
fn keep(writer: &RecordField, reader: &RecordField, roles: &[Role]) -> Result<Op, Unsupported> {
    let to = ReaderType::of(reader)?;
    let name = writer.name.as_str();
    let kind_of = |s: &Schema| {
        Kind::of(s).ok_or_else(|| {
            Unsupported(format!(
                "the writer's field {name:?}, neither a scalar nor a union of scalars"
            ))
        })
    };
    let null = to.target(Kind::Null, name)?;
    let read = match &writer.schema {
        Schema::Union(u) => Read::Union {
            branches: u
                .variants()
                .iter()
                .map(|v| {
                    let kind = kind_of(v)?;
                    Ok((kind, to.target(kind, name)?))
                })
                .collect::<Result<_, _>>()?,
            null,
        },
        s => {
            let kind = kind_of(s)?;
            Read::One {
                kind,
                target: to.target(kind, name)?,
                null,
            }
        }
    };
    Ok(Op::Keep {
        name: name.into(),
        read,
        roles: roles.into(),
    })
}

/// The value apache-avro resolves for a reader field the writer lacks (its
/// default, or the error it gives), found by asking the library: resolve an
/// empty record against a record of that one field.
fn default_of(
    reader: &RecordSchema,
    field: &RecordField,
) -> Result<Result<AvroValue, String>, Unsupported> {
    ReaderType::of(field)?;
    let one = Schema::Record(RecordSchema {
        fields: vec![RecordField {
            position: 0,
            ..field.clone()
        }],
        lookup: BTreeMap::from([(field.name.clone(), 0)]),
        ..reader.clone()
    });
    Ok(match AvroValue::Record(Vec::new()).resolve(&one) {
        Ok(AvroValue::Record(mut fields)) => match fields.pop() {
            Some((_, value)) => Ok(value),
            None => Err(format!("field {:?} resolved to nothing", field.name)),
        },
        Ok(other) => Err(format!("field {:?} resolved to {other:?}", field.name)),
        Err(e) => Err(e.to_string()),
    })
}

fn fill(role: Role, value: &AvroValue, features: &[String]) -> Fill {
    match role {
        Role::EventId => Fill::EventId(avro_event_id(value).map(str::to_owned)),
        Role::EventTime => Fill::EventTime(avro_event_time(value)),
        Role::Feature(k) => Fill::Feature(
            k,
            features
                .get(k)
                .map_or(Ok(0.0), |field| avro_feature(field, value)),
        ),
    }
}
