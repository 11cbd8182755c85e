//! Loading Avro schema files named in the configuration.

use std::path::Path;

use apache_avro::Schema;

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The OS error is in the message, not a `source`: with both, a
    /// printed chain says it twice.
    #[error("cannot read Avro schema {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("Avro schema {path} is not valid: {message}")]
    Parse { path: String, message: String },
}

pub fn load_schema(path: &Path) -> Result<Schema, SchemaError> {
    let text = std::fs::read_to_string(path).map_err(|error| SchemaError::Read {
        path: path.display().to_string(),
        error,
    })?;
    Schema::parse_str(&text).map_err(|e| SchemaError::Parse {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}
