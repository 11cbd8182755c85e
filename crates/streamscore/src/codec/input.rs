//! Decoding the plaintext of an envelope into named fields.

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::types::Value as AvroValue;

use crate::codec::Format;
use crate::codec::confluent_unframe;
use crate::codec::registry_writers::{RegistryWriters, WriterError};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("value is not Confluent-framed Avro (expected magic byte 0 and a 4-byte schema id)")]
    NotFramed,
    #[error("unknown Avro schema id {0}")]
    UnknownSchema(u32),
    /// From the schema registry: an unknown or unreadable id (the record's
    /// fault), or no answer (not the record's: it must not be dead-lettered).
    #[error(transparent)]
    Registry(WriterError),
    #[error("Avro decoding failed: {0}")]
    Avro(String),
    #[error("Avro datum has {0} trailing bytes")]
    TrailingBytes(usize),
    #[error("JSON decoding failed: {0}")]
    Json(String),
    #[error("decoded value is not a record/object")]
    NotARecord,
}

/// A decoded event: the fields of an Avro record (in reader-schema order) or a JSON object.
#[derive(Debug)]
pub enum Fields {
    Avro(Vec<(String, AvroValue)>),
    Json(serde_json::Map<String, serde_json::Value>),
}

/// Decodes input plaintext. For Avro, the writer schema is chosen by the
/// framing's schema id and resolved against one reader schema, so producers
/// can evolve their schema compatibly.
pub struct InputDecoder {
    format: Format,
    writers: HashMap<u32, Schema>,
    reader: Option<Schema>,
    /// Writer schemas for the ids `writers` does not name.
    registry: Option<Arc<RegistryWriters>>,
}

impl InputDecoder {
    pub fn avro(writers: HashMap<u32, Schema>, reader: Schema) -> Self {
        Self {
            format: Format::Avro,
            writers,
            reader: Some(reader),
            registry: None,
        }
    }

    /// Ids `writers` does not name are looked up in this registry.
    pub fn with_registry(mut self, registry: Arc<RegistryWriters>) -> Self {
        self.registry = Some(registry);
        self
    }

    pub(crate) fn registry(&self) -> Option<&RegistryWriters> {
        self.registry.as_deref()
    }

    pub fn json() -> Self {
        Self {
            format: Format::Json,
            writers: HashMap::new(),
            reader: None,
            registry: None,
        }
    }

    pub(crate) fn format(&self) -> Format {
        self.format
    }

    /// For Avro: the writer schemas by id and the reader schema.
    pub(crate) fn avro_schemas(&self) -> Option<(&HashMap<u32, Schema>, &Schema)> {
        self.reader.as_ref().map(|reader| (&self.writers, reader))
    }

    pub fn decode(&self, plaintext: &[u8]) -> Result<Fields, DecodeError> {
        match self.format {
            Format::Avro => self.decode_avro(plaintext),
            Format::Json => match serde_json::from_slice::<serde_json::Value>(plaintext) {
                Ok(serde_json::Value::Object(map)) => Ok(Fields::Json(map)),
                Ok(_) => Err(DecodeError::NotARecord),
                Err(e) => Err(DecodeError::Json(e.to_string())),
            },
        }
    }

    fn decode_avro(&self, plaintext: &[u8]) -> Result<Fields, DecodeError> {
        let (id, datum) = confluent_unframe(plaintext).ok_or(DecodeError::NotFramed)?;
        if let Some(writer) = self.writers.get(&id) {
            return self.decode_datum(writer, datum);
        }
        let registry = self
            .registry
            .as_ref()
            .ok_or(DecodeError::UnknownSchema(id))?;
        let writer = registry.get(id, &|_| None).map_err(DecodeError::Registry)?;
        self.decode_datum(&writer.schema, datum)
    }

    /// One Avro datum written with `writer`, resolved against the reader schema.
    pub(crate) fn decode_datum(
        &self,
        writer: &Schema,
        mut datum: &[u8],
    ) -> Result<Fields, DecodeError> {
        let value = apache_avro::from_avro_datum(writer, &mut datum, self.reader.as_ref())
            .map_err(|e| DecodeError::Avro(e.to_string()))?;
        if !datum.is_empty() {
            return Err(DecodeError::TrailingBytes(datum.len()));
        }
        match value {
            AvroValue::Record(fields) => Ok(Fields::Avro(fields)),
            _ => Err(DecodeError::NotARecord),
        }
    }
}
