//! The scalar values a compiled plan reads into the row, and schema
//! resolution between scalar types as apache-avro 0.21 performs it
//! (`Value::resolve`), which is value-driven and not quite the spec: a long
//! read as an int is truncated, a timestamp is not a long, a string may
//! resolve to a double. The table here is that code, not the spec; the
//! property test in `plan_tests` holds the two together.

use apache_avro::Schema;
use apache_avro::types::Value as AvroValue;

use super::binary::{BinaryError, Cursor};

/// A scalar type: the schema types (and the kinds of `Value`) a plan reads
/// without building a `Value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Date,
    TimeMillis,
    TimeMicros,
    TimestampMillis,
    TimestampMicros,
    TimestampNanos,
    LocalTimestampMillis,
    LocalTimestampMicros,
    LocalTimestampNanos,
}

/// One value read from the datum, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Scalar<'a> {
    Null,
    Boolean(bool),
    Int(i32),
    Long(i64),
    Float(f32),
    Double(f64),
    Bytes(&'a [u8]),
    String(&'a str),
    Date(i32),
    TimeMillis(i32),
    TimeMicros(i64),
    TimestampMillis(i64),
    TimestampMicros(i64),
    TimestampNanos(i64),
    LocalTimestampMillis(i64),
    LocalTimestampMicros(i64),
    LocalTimestampNanos(i64),
}

/// Whether a value of one kind resolves to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolves {
    Always,
    Never,
    /// Only for some values (a string as a double: "NaN" does, "x" does not).
    /// A plan does not compile these.
    DependsOnValue,
}

impl Kind {
    /// The kind of a scalar schema; `None` for anything else.
    pub(crate) fn of(schema: &Schema) -> Option<Kind> {
        Some(match schema {
            Schema::Null => Kind::Null,
            Schema::Boolean => Kind::Boolean,
            Schema::Int => Kind::Int,
            Schema::Long => Kind::Long,
            Schema::Float => Kind::Float,
            Schema::Double => Kind::Double,
            Schema::Bytes => Kind::Bytes,
            Schema::String => Kind::String,
            Schema::Date => Kind::Date,
            Schema::TimeMillis => Kind::TimeMillis,
            Schema::TimeMicros => Kind::TimeMicros,
            Schema::TimestampMillis => Kind::TimestampMillis,
            Schema::TimestampMicros => Kind::TimestampMicros,
            Schema::TimestampNanos => Kind::TimestampNanos,
            Schema::LocalTimestampMillis => Kind::LocalTimestampMillis,
            Schema::LocalTimestampMicros => Kind::LocalTimestampMicros,
            Schema::LocalTimestampNanos => Kind::LocalTimestampNanos,
            _ => return None,
        })
    }

    /// Reads a value written with this kind's schema. A boolean or string cut
    /// off by the end of the datum reads as null, as in the library.
    pub(crate) fn read<'a>(self, cur: &mut Cursor<'a>) -> Result<Scalar<'a>, BinaryError> {
        Ok(match self {
            Kind::Null => Scalar::Null,
            Kind::Boolean => cur.boolean()?.map_or(Scalar::Null, Scalar::Boolean),
            Kind::Int => Scalar::Int(cur.int()?),
            Kind::Long => Scalar::Long(cur.long()?),
            Kind::Float => Scalar::Float(cur.float()?),
            Kind::Double => Scalar::Double(cur.double()?),
            Kind::Bytes => Scalar::Bytes(cur.bytes()?),
            Kind::String => cur.string()?.map_or(Scalar::Null, Scalar::String),
            Kind::Date => Scalar::Date(cur.int()?),
            Kind::TimeMillis => Scalar::TimeMillis(cur.int()?),
            Kind::TimeMicros => Scalar::TimeMicros(cur.long()?),
            Kind::TimestampMillis => Scalar::TimestampMillis(cur.long()?),
            Kind::TimestampMicros => Scalar::TimestampMicros(cur.long()?),
            Kind::TimestampNanos => Scalar::TimestampNanos(cur.long()?),
            Kind::LocalTimestampMillis => Scalar::LocalTimestampMillis(cur.long()?),
            Kind::LocalTimestampMicros => Scalar::LocalTimestampMicros(cur.long()?),
            Kind::LocalTimestampNanos => Scalar::LocalTimestampNanos(cur.long()?),
        })
    }

    /// Whether a value of kind `self` resolves against a reader schema of kind
    /// `reader` (`Value::resolve_*` in apache-avro's types.rs).
    pub(crate) fn resolves_to(self, reader: Kind) -> Resolves {
        use Kind as K;
        let always = match (reader, self) {
            (r, w) if r == w => true,
            (K::Int | K::Long, K::Int | K::Long) => true,
            (K::Float | K::Double, K::Int | K::Long | K::Float | K::Double) => true,
            (K::Float | K::Double, K::String) => return Resolves::DependsOnValue,
            (K::Bytes, K::String) => true,
            (K::String, K::Bytes) => return Resolves::DependsOnValue,
            (K::Date | K::TimeMillis | K::TimeMicros, K::Int) => true,
            (K::TimeMicros, K::Long) => true,
            (
                K::TimestampMillis
                | K::TimestampMicros
                | K::TimestampNanos
                | K::LocalTimestampMillis
                | K::LocalTimestampMicros
                | K::LocalTimestampNanos,
                K::Int | K::Long,
            ) => true,
            _ => false,
        };
        if always {
            Resolves::Always
        } else {
            Resolves::Never
        }
    }
}

impl<'a> Scalar<'a> {
    /// This value resolved against a reader schema of kind `reader`, for a
    /// pair [`Kind::resolves_to`] says always resolves; `None` otherwise.
    pub(crate) fn resolve(self, reader: Kind) -> Option<Scalar<'a>> {
        use Kind as K;
        use Scalar as S;
        Some(match (reader, self) {
            (K::Null, S::Null) => S::Null,
            (K::Boolean, S::Boolean(b)) => S::Boolean(b),
            (K::Int, S::Int(n)) => S::Int(n),
            (K::Int, S::Long(n)) => S::Int(n as i32),
            (K::Long, S::Int(n)) => S::Long(i64::from(n)),
            (K::Long, S::Long(n)) => S::Long(n),
            (K::Float, S::Int(n)) => S::Float(n as f32),
            (K::Float, S::Long(n)) => S::Float(n as f32),
            (K::Float, S::Float(x)) => S::Float(x),
            (K::Float, S::Double(x)) => S::Float(x as f32),
            (K::Double, S::Int(n)) => S::Double(f64::from(n)),
            (K::Double, S::Long(n)) => S::Double(n as f64),
            (K::Double, S::Float(x)) => S::Double(f64::from(x)),
            (K::Double, S::Double(x)) => S::Double(x),
            (K::Bytes, S::Bytes(b)) => S::Bytes(b),
            (K::Bytes, S::String(s)) => S::Bytes(s.as_bytes()),
            (K::String, S::String(s)) => S::String(s),
            (K::Date, S::Date(n) | S::Int(n)) => S::Date(n),
            (K::TimeMillis, S::TimeMillis(n) | S::Int(n)) => S::TimeMillis(n),
            (K::TimeMicros, S::TimeMicros(n) | S::Long(n)) => S::TimeMicros(n),
            (K::TimeMicros, S::Int(n)) => S::TimeMicros(i64::from(n)),
            (K::TimestampMillis, S::TimestampMillis(n) | S::Long(n)) => S::TimestampMillis(n),
            (K::TimestampMillis, S::Int(n)) => S::TimestampMillis(i64::from(n)),
            (K::TimestampMicros, S::TimestampMicros(n) | S::Long(n)) => S::TimestampMicros(n),
            (K::TimestampMicros, S::Int(n)) => S::TimestampMicros(i64::from(n)),
            (K::TimestampNanos, S::TimestampNanos(n) | S::Long(n)) => S::TimestampNanos(n),
            (K::TimestampNanos, S::Int(n)) => S::TimestampNanos(i64::from(n)),
            (K::LocalTimestampMillis, S::LocalTimestampMillis(n) | S::Long(n)) => {
                S::LocalTimestampMillis(n)
            }
            (K::LocalTimestampMillis, S::Int(n)) => S::LocalTimestampMillis(i64::from(n)),
            (K::LocalTimestampMicros, S::LocalTimestampMicros(n) | S::Long(n)) => {
                S::LocalTimestampMicros(n)
            }
            (K::LocalTimestampMicros, S::Int(n)) => S::LocalTimestampMicros(i64::from(n)),
            (K::LocalTimestampNanos, S::LocalTimestampNanos(n) | S::Long(n)) => {
                S::LocalTimestampNanos(n)
            }
            (K::LocalTimestampNanos, S::Int(n)) => S::LocalTimestampNanos(i64::from(n)),
            _ => return None,
        })
    }

    /// The library's `Value` for this scalar, for the feature rules that
    /// `FeaturePlan` applies to decoded fields (so both paths share them).
    /// Only strings and bytes allocate.
    pub(crate) fn to_value(self) -> AvroValue {
        match self {
            Scalar::Null => AvroValue::Null,
            Scalar::Boolean(b) => AvroValue::Boolean(b),
            Scalar::Int(n) => AvroValue::Int(n),
            Scalar::Long(n) => AvroValue::Long(n),
            Scalar::Float(x) => AvroValue::Float(x),
            Scalar::Double(x) => AvroValue::Double(x),
            Scalar::Bytes(b) => AvroValue::Bytes(b.to_vec()),
            Scalar::String(s) => AvroValue::String(s.to_owned()),
            Scalar::Date(n) => AvroValue::Date(n),
            Scalar::TimeMillis(n) => AvroValue::TimeMillis(n),
            Scalar::TimeMicros(n) => AvroValue::TimeMicros(n),
            Scalar::TimestampMillis(n) => AvroValue::TimestampMillis(n),
            Scalar::TimestampMicros(n) => AvroValue::TimestampMicros(n),
            Scalar::TimestampNanos(n) => AvroValue::TimestampNanos(n),
            Scalar::LocalTimestampMillis(n) => AvroValue::LocalTimestampMillis(n),
            Scalar::LocalTimestampMicros(n) => AvroValue::LocalTimestampMicros(n),
            Scalar::LocalTimestampNanos(n) => AvroValue::LocalTimestampNanos(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Kind; 17] = [
        Kind::Null,
        Kind::Boolean,
        Kind::Int,
        Kind::Long,
        Kind::Float,
        Kind::Double,
        Kind::Bytes,
        Kind::String,
        Kind::Date,
        Kind::TimeMillis,
        Kind::TimeMicros,
        Kind::TimestampMillis,
        Kind::TimestampMicros,
        Kind::TimestampNanos,
        Kind::LocalTimestampMillis,
        Kind::LocalTimestampMicros,
        Kind::LocalTimestampNanos,
    ];

    fn sample(kind: Kind) -> Scalar<'static> {
        match kind {
            Kind::Null => Scalar::Null,
            Kind::Boolean => Scalar::Boolean(true),
            Kind::Int => Scalar::Int(-7),
            Kind::Long => Scalar::Long(1 << 40),
            Kind::Float => Scalar::Float(1.5),
            Kind::Double => Scalar::Double(1e300),
            Kind::Bytes => Scalar::Bytes(b"\xff"),
            Kind::String => Scalar::String("NaN"),
            Kind::Date => Scalar::Date(3),
            Kind::TimeMillis => Scalar::TimeMillis(4),
            Kind::TimeMicros => Scalar::TimeMicros(5),
            Kind::TimestampMillis => Scalar::TimestampMillis(6),
            Kind::TimestampMicros => Scalar::TimestampMicros(7),
            Kind::TimestampNanos => Scalar::TimestampNanos(8),
            Kind::LocalTimestampMillis => Scalar::LocalTimestampMillis(9),
            Kind::LocalTimestampMicros => Scalar::LocalTimestampMicros(10),
            Kind::LocalTimestampNanos => Scalar::LocalTimestampNanos(11),
        }
    }

    fn schema(kind: Kind) -> Schema {
        let logical = |t: &str, l: &str| {
            Schema::parse_str(&format!(r#"{{"type":"{t}","logicalType":"{l}"}}"#)).unwrap()
        };
        match kind {
            Kind::Null => Schema::Null,
            Kind::Boolean => Schema::Boolean,
            Kind::Int => Schema::Int,
            Kind::Long => Schema::Long,
            Kind::Float => Schema::Float,
            Kind::Double => Schema::Double,
            Kind::Bytes => Schema::Bytes,
            Kind::String => Schema::String,
            Kind::Date => logical("int", "date"),
            Kind::TimeMillis => logical("int", "time-millis"),
            Kind::TimeMicros => logical("long", "time-micros"),
            Kind::TimestampMillis => logical("long", "timestamp-millis"),
            Kind::TimestampMicros => logical("long", "timestamp-micros"),
            Kind::TimestampNanos => logical("long", "timestamp-nanos"),
            Kind::LocalTimestampMillis => logical("long", "local-timestamp-millis"),
            Kind::LocalTimestampMicros => logical("long", "local-timestamp-micros"),
            Kind::LocalTimestampNanos => logical("long", "local-timestamp-nanos"),
        }
    }

    /// Every pair of kinds, against the library: where the table says a pair
    /// always resolves, the value resolves to the same thing; where it says
    /// never, the library refuses.
    #[test]
    fn the_resolution_table_is_the_librarys() {
        for reader in ALL {
            let reader_schema = schema(reader);
            assert_eq!(Kind::of(&reader_schema), Some(reader));
            for writer in ALL {
                let value = sample(writer);
                let library = value.to_value().resolve(&reader_schema);
                match writer.resolves_to(reader) {
                    Resolves::Always => {
                        let ours = value.resolve(reader).map(Scalar::to_value);
                        assert_eq!(ours, library.ok(), "{writer:?} as {reader:?}");
                    }
                    Resolves::Never => {
                        assert!(library.is_err(), "{writer:?} as {reader:?}");
                        assert_eq!(value.resolve(reader), None);
                    }
                    Resolves::DependsOnValue => {}
                }
            }
        }
    }
}
