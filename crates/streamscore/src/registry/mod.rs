//! A schema registry speaking the Confluent API: writer schemas fetched by
//! the id in a record's framing, the score schema's id registered under its
//! subject at start, and whether the registry answers (for /readyz).

mod client;
mod output;
mod status;

pub use client::{RegisteredSchema, RegistryClient, RegistryError};
pub use output::score_schema_id;
pub use status::RegistryStatus;
