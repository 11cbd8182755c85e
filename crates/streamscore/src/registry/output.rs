//! The id framed in front of Avro scores: `output.avro_schema_id`, or the
//! registry's id for the score schema under the output topic's subject.

use apache_avro::Schema;

use super::{RegistryClient, RegistryError};
use crate::codec::Format;
use crate::config::{RegistryMode, Settings};

/// Registers (or looks up) the score schema under the subject of every
/// topic scores are written to, and returns its id; `output.avro_schema_id`
/// when no registry is asked. `check` calls this as `run` does, so a
/// registry that refuses the schema refuses it there first. A reader of the
/// scores passes `readers_lookup`: it looks the id up, never registers.
///
/// The schema is registered as its file is written (not re-serialised), so
/// a team that registers or looks up the same file meets the same schema.
pub fn score_schema_id(
    settings: &Settings,
    client: Option<&RegistryClient>,
    readers_lookup: bool,
) -> Result<u32, RegistryError> {
    let output = &settings.output;
    let mode = match output.schema_registry.mode {
        RegistryMode::Auto
            if settings.input.schema_registry.enabled() && output.format == Format::Avro =>
        {
            RegistryMode::Register
        }
        RegistryMode::Auto => RegistryMode::Off,
        mode => mode,
    };
    let mode = match mode {
        RegistryMode::Register if readers_lookup => RegistryMode::Lookup,
        mode => mode,
    };
    let client = match (mode, client) {
        (RegistryMode::Off, _) | (_, None) => return Ok(output.avro_schema_id),
        (_, Some(client)) => client,
    };
    let path = &output.avro_schema;
    let text = std::fs::read_to_string(path).map_err(|e| {
        RegistryError::Setup(format!(
            "cannot read output.avro_schema {}: {e}",
            path.display()
        ))
    })?;
    let schema = Schema::parse_str(&text).map_err(|e| {
        RegistryError::Setup(format!(
            "output.avro_schema {} is not valid: {e}",
            path.display()
        ))
    })?;
    let record_name = match &schema {
        Schema::Record(r) => r.name.fullname(None),
        _ => String::new(),
    };
    let mut topics = vec![output.topic.as_str()];
    if settings.model.shadow_card.is_some() {
        topics.push(output.shadow_topic.as_str());
    }
    let mut id: Option<(u32, String)> = None;
    for topic in topics {
        let subject = output
            .schema_registry
            .subject_name_strategy
            .subject(topic, &record_name);
        let this = if mode == RegistryMode::Lookup {
            client.lookup(&subject, &text)?.ok_or_else(|| {
                RegistryError::Setup(format!(
                    "output.schema_registry.mode = \"lookup\": the score schema is not registered under subject {subject}"
                ))
            })?
        } else {
            client.register(&subject, &text)?
        };
        tracing::info!(subject, schema_id = this, "score schema registered");
        match &id {
            Some((first, first_subject)) if *first != this => {
                return Err(RegistryError::Setup(format!(
                    "the score schema has id {first} under {first_subject} and {this} under {subject}; scores and shadow results share one encoder, so they need one id"
                )));
            }
            Some(_) => {}
            None => id = Some((this, subject)),
        }
    }
    Ok(id.map_or(output.avro_schema_id, |(id, _)| id))
}
