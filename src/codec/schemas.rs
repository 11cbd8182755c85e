//! Loading Avro schema files named in the configuration.

use std::path::Path;

use apache_avro::Schema;

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("cannot read Avro schema {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("Avro schema {path} is not valid: {message}")]
    Parse { path: String, message: String },
}

pub fn load_schema(path: &Path) -> Result<Schema, SchemaError> {
    let text = std::fs::read_to_string(path).map_err(|source| SchemaError::Read {
        path: path.display().to_string(),
        source,
    })?;
    Schema::parse_str(&text).map_err(|e| SchemaError::Parse {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}
