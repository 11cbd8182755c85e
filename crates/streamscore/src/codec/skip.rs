//! Reading past a writer's value the reader does not keep. apache-avro still
//! decodes such a value (and refuses it when it is malformed), so skipping
//! checks what decoding would: boolean bytes, UTF-8, union and enum indexes,
//! lengths against the allocation limit.

use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::schema::{Name, Namespace};

use super::binary::{BinaryError, Cursor};
use super::plan::Unsupported;

/// A writer schema compiled for skipping: named references resolved, logical
/// types reduced to what they are written as.
#[derive(Debug, Clone)]
pub(crate) enum Skip {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Fixed(usize),
    Enum(usize),
    Array(Box<Skip>),
    Map(Box<Skip>),
    Union(Box<[Skip]>),
    Record(Box<[Skip]>),
}

/// The writer's named types, by full name.
pub(crate) type Names<'s> = HashMap<Name, &'s Schema>;

impl Skip {
    /// Compiles `schema`, refusing a recursive type (the library would recurse
    /// as deep as the data asks) and the logical types whose decoding parses
    /// the bytes (uuid, big-decimal).
    pub(crate) fn compile(
        schema: &Schema,
        names: &Names<'_>,
        namespace: &Namespace,
    ) -> Result<Self, Unsupported> {
        Compiler {
            names,
            open: Vec::new(),
        }
        .compile(schema, namespace)
    }

    /// Reads past one value.
    pub(crate) fn run(&self, cur: &mut Cursor<'_>) -> Result<(), BinaryError> {
        match self {
            Skip::Null => Ok(()),
            Skip::Boolean => cur.boolean().map(drop),
            Skip::Int => cur.int().map(drop),
            Skip::Long => cur.long().map(drop),
            Skip::Float => cur.float().map(drop),
            Skip::Double => cur.double().map(drop),
            Skip::Bytes => cur.bytes().map(drop),
            Skip::String => cur.string().map(drop),
            Skip::Fixed(size) => cur.fixed(*size),
            Skip::Enum(symbols) => cur.enum_index(*symbols).map(drop),
            Skip::Array(item) => blocks(cur, |cur| item.run(cur)),
            Skip::Map(value) => blocks(cur, |cur| match cur.string()? {
                Some(_) => value.run(cur),
                None => Err(BinaryError::MapKey),
            }),
            Skip::Union(branches) => match cur.union_index(branches.len())? {
                Some(i) => branches.get(i).map_or(Ok(()), |b| b.run(cur)),
                None => Ok(()),
            },
            Skip::Record(fields) => fields.iter().try_for_each(|f| f.run(cur)),
        }
    }
}

/// An array's or map's blocks. An item that reads no bytes leaves the cursor
/// as it found it, so the rest of its block would read the same: they are
/// skipped at once rather than counted through (a block may claim as many
/// items as the allocation limit allows).
fn blocks(
    cur: &mut Cursor<'_>,
    mut item: impl FnMut(&mut Cursor<'_>) -> Result<(), BinaryError>,
) -> Result<(), BinaryError> {
    loop {
        let count = cur.block_len()?;
        if count == 0 {
            return Ok(());
        }
        for _ in 0..count {
            let before = cur.remaining();
            item(cur)?;
            if cur.remaining() == before {
                break;
            }
        }
    }
}

struct Compiler<'n, 's> {
    names: &'n Names<'s>,
    /// The named types being compiled, to find recursion.
    open: Vec<Name>,
}

impl Compiler<'_, '_> {
    fn compile(&mut self, schema: &Schema, ns: &Namespace) -> Result<Skip, Unsupported> {
        Ok(match schema {
            Schema::Null => Skip::Null,
            Schema::Boolean => Skip::Boolean,
            Schema::Int | Schema::Date | Schema::TimeMillis => Skip::Int,
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => Skip::Long,
            Schema::Float => Skip::Float,
            Schema::Double => Skip::Double,
            Schema::Bytes => Skip::Bytes,
            Schema::String => Skip::String,
            Schema::Fixed(f) => Skip::Fixed(f.size),
            Schema::Duration => Skip::Fixed(12),
            Schema::Decimal(d) => match *d.inner {
                Schema::Fixed(ref f) => Skip::Fixed(f.size),
                Schema::Bytes => Skip::Bytes,
                _ => return Err(Unsupported("a decimal on neither fixed nor bytes".into())),
            },
            Schema::Enum(e) => Skip::Enum(e.symbols.len()),
            Schema::Array(a) => Skip::Array(Box::new(self.compile(&a.items, ns)?)),
            Schema::Map(m) => Skip::Map(Box::new(self.compile(&m.types, ns)?)),
            Schema::Union(u) => Skip::Union(
                u.variants()
                    .iter()
                    .map(|v| self.compile(v, ns))
                    .collect::<Result<_, _>>()?,
            ),
            Schema::Record(r) => {
                let full = r.name.fully_qualified_name(ns);
                self.enter(&full)?;
                let fields = r
                    .fields
                    .iter()
                    .map(|f| self.compile(&f.schema, &full.namespace))
                    .collect::<Result<_, _>>();
                self.open.pop();
                Skip::Record(fields?)
            }
            Schema::Ref { name } => {
                let full = name.fully_qualified_name(ns);
                let target = *self.names.get(&full).ok_or_else(|| {
                    Unsupported(format!("a reference to {full}, which it does not define"))
                })?;
                // Recursion always passes through a record, which `enter`s.
                self.compile(target, &full.namespace)?
            }
            Schema::Uuid | Schema::BigDecimal => {
                return Err(Unsupported(format!(
                    "a {:?} value, which decoding parses",
                    apache_avro::schema::SchemaKind::from(schema)
                )));
            }
        })
    }

    fn enter(&mut self, name: &Name) -> Result<(), Unsupported> {
        if self.open.contains(name) {
            return Err(Unsupported(format!("the recursive type {name}")));
        }
        self.open.push(name.clone());
        Ok(())
    }
}
