//! `input.schema_registry` and `output.schema_registry`: where writer schemas
//! come from besides `input.avro_schemas`, and how the score schema gets the
//! id written in front of every score.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Format, Settings, empty_as_none, invalid, millis};

const KEY: &str = "input.schema_registry";

/// A registry speaking the Confluent Schema Registry API (Confluent,
/// Apicurio's `/apis/ccompat/v7`, Karapace, Redpanda). Secrets come from
/// files or the environment, as the keyring does, never from this file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRegistrySettings {
    /// Base URLs, tried in turn; empty: no registry.
    #[serde(default)]
    pub urls: Vec<String>,
    #[serde(default, deserialize_with = "empty_as_none")]
    pub basic_auth_user: Option<String>,
    #[serde(default, deserialize_with = "empty_as_none")]
    pub basic_auth_password_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "empty_as_none")]
    pub basic_auth_password_env: Option<String>,
    #[serde(default, deserialize_with = "empty_as_none")]
    pub bearer_token_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "empty_as_none")]
    pub bearer_token_env: Option<String>,
    /// PEM bundle of the CAs to trust instead of the built-in web roots.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) and key, for mutual TLS.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub certificate_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "empty_as_none")]
    pub key_file: Option<PathBuf>,
    #[serde(rename = "request_timeout_ms", with = "millis")]
    pub request_timeout: Duration,
    /// How long a record whose writer schema is not cached waits for an
    /// unreachable registry before the processor stops.
    #[serde(rename = "max_wait_ms", with = "millis")]
    pub max_wait: Duration,
    /// Memory the fetched writer schemas may hold, estimated.
    pub cache_max_bytes: u64,
}

impl SchemaRegistrySettings {
    pub fn enabled(&self) -> bool {
        !self.urls.is_empty()
    }
}

/// Whether the score schema is registered under its subject at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, strum::VariantNames)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum RegistryMode {
    /// `register` when `input.schema_registry.urls` is set and the output is
    /// Avro, else `off`.
    Auto,
    /// Registered (or found) under its subject; its id is framed.
    Register,
    /// Must already be registered under its subject; its id is framed.
    Lookup,
    /// `output.avro_schema_id` is framed; no registry is asked.
    Off,
}

/// How the subject of a topic's values is named (the Confluent serializer's
/// `value.subject.name.strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, strum::VariantNames)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum SubjectNameStrategy {
    /// `<topic>-value`
    TopicName,
    /// The record's full name.
    RecordName,
    /// `<topic>-<record full name>`
    TopicRecordName,
}

impl SubjectNameStrategy {
    pub fn subject(self, topic: &str, record_name: &str) -> String {
        match self {
            Self::TopicName => format!("{topic}-value"),
            Self::RecordName => record_name.to_owned(),
            Self::TopicRecordName => format!("{topic}-{record_name}"),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutputRegistrySettings {
    pub mode: RegistryMode,
    pub subject_name_strategy: SubjectNameStrategy,
}

/// The connection's own keys: URLs, one source per secret, a user with a
/// password, a certificate with its key.
pub(super) fn check_connection(registry: &SchemaRegistrySettings) -> Result<(), ConfigError> {
    for url in &registry.urls {
        check_url(url)?;
    }
    let one_of = |a: (&str, bool), b: (&str, bool)| {
        if a.1 && b.1 {
            Err(invalid(
                &format!("{KEY}.{}", b.0),
                "(set)",
                &format!("empty when {KEY}.{} is set: one source for a secret", a.0),
            ))
        } else {
            Ok(())
        }
    };
    one_of(
        (
            "basic_auth_password_file",
            registry.basic_auth_password_file.is_some(),
        ),
        (
            "basic_auth_password_env",
            registry.basic_auth_password_env.is_some(),
        ),
    )?;
    one_of(
        ("bearer_token_file", registry.bearer_token_file.is_some()),
        ("bearer_token_env", registry.bearer_token_env.is_some()),
    )?;
    let password =
        registry.basic_auth_password_file.is_some() || registry.basic_auth_password_env.is_some();
    if registry.basic_auth_user.is_some() != password {
        return Err(invalid(
            &format!("{KEY}.basic_auth_user"),
            format!("{:?}", registry.basic_auth_user.as_deref().unwrap_or("")),
            &format!(
                "set together with {KEY}.basic_auth_password_file or {KEY}.basic_auth_password_env"
            ),
        ));
    }
    if registry.certificate_file.is_some() != registry.key_file.is_some() {
        return Err(invalid(
            &format!("{KEY}.key_file"),
            format!(
                "{:?}",
                registry
                    .key_file
                    .as_deref()
                    .unwrap_or("".as_ref())
                    .display()
            ),
            &format!("set together with {KEY}.certificate_file, for mutual TLS"),
        ));
    }
    Ok(())
}

/// Basic auth or a bearer token, not both.
pub(super) fn check_one_authentication(settings: &Settings) -> Result<(), ConfigError> {
    let registry = &settings.input.schema_registry;
    let token = registry.bearer_token_file.is_some() || registry.bearer_token_env.is_some();
    if registry.basic_auth_user.is_some() && token {
        return Err(invalid(
            &format!("{KEY}.bearer_token_file"),
            "(set)",
            "empty when basic auth is set: one way to authenticate",
        ));
    }
    Ok(())
}

/// Registering or looking up the score schema needs a registry and Avro scores.
pub(super) fn check_output_mode(settings: &Settings) -> Result<(), ConfigError> {
    let mode = settings.output.schema_registry.mode;
    let named = || format!("{mode:?}").to_lowercase();
    match mode {
        RegistryMode::Register | RegistryMode::Lookup
            if !settings.input.schema_registry.enabled() =>
        {
            Err(invalid(
                "output.schema_registry.mode",
                named(),
                "\"auto\" or \"off\" when input.schema_registry.urls is empty: the score schema is registered in that registry",
            ))
        }
        RegistryMode::Register | RegistryMode::Lookup if settings.output.format == Format::Json => {
            Err(invalid(
                "output.schema_registry.mode",
                named(),
                "\"auto\" or \"off\" when output.format = \"json\": only Avro scores carry a schema id",
            ))
        }
        _ => Ok(()),
    }
}

/// The source polls nothing while a record waits on the registry: past the
/// consumer's `max.poll.interval.ms` it would leave the group, and its
/// partitions with it, mid-wait. A minute is kept for the requests
/// themselves and the records behind the waiting one.
pub(super) fn check_max_wait(settings: &Settings) -> Result<(), ConfigError> {
    let wait = settings.input.schema_registry.max_wait.as_millis();
    let poll = settings
        .consumer_property("max.poll.interval.ms")
        .and_then(|v| v.parse::<u128>().ok())
        .unwrap_or(300_000);
    if wait + 60_000 > poll {
        return Err(invalid(
            &format!("{KEY}.max_wait_ms"),
            wait,
            &format!(
                "at most the consumer's max.poll.interval.ms ({poll}) less 60000: the source polls nothing while a record waits"
            ),
        ));
    }
    Ok(())
}

/// An http(s) base URL with no credentials, query or fragment in it.
fn check_url(url: &str) -> Result<(), ConfigError> {
    let refuse = |why: &str| {
        Err(invalid(
            "input.schema_registry.urls",
            format!("{:?}", without_credentials(url)),
            &format!("http:// or https:// base URLs {why}"),
        ))
    };
    let Ok(uri) = url.parse::<ureq::http::Uri>() else {
        return refuse("(this one does not parse)");
    };
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return refuse("with a host");
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return refuse(
            "without user:password in them (basic_auth_user and basic_auth_password_file or _env)",
        );
    }
    if uri.query().is_some() || url.contains('#') {
        return refuse("without a query or fragment");
    }
    Ok(())
}

/// The URL with any `user:password@` replaced by `***@`, for a refusal.
fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(urls: &[&str]) -> SchemaRegistrySettings {
        let mut r = Settings::load_with_env(None, false)
            .unwrap()
            .input
            .schema_registry;
        r.urls = urls.iter().map(|u| (*u).to_owned()).collect();
        r
    }

    fn settings(urls: &[&str]) -> Settings {
        let mut s = Settings::load_with_env(None, false).unwrap();
        s.input.schema_registry = registry(urls);
        s
    }

    #[test]
    fn subjects_follow_the_confluent_strategies() {
        let name = "streamscore.ScoreResult";
        assert_eq!(
            SubjectNameStrategy::TopicName.subject("scores", name),
            "scores-value"
        );
        assert_eq!(
            SubjectNameStrategy::RecordName.subject("scores", name),
            name
        );
        assert_eq!(
            SubjectNameStrategy::TopicRecordName.subject("scores", name),
            "scores-streamscore.ScoreResult"
        );
    }

    #[test]
    fn urls_with_credentials_or_other_schemes_are_refused() {
        check_connection(&registry(&["http://r:8080/apis/ccompat/v7"])).unwrap();
        for bad in [
            "ftp://r/",
            "http://u:p@r:8080/",
            "r:8080",
            "http://r/?a=1",
            "",
        ] {
            let err = check_connection(&registry(&[bad])).unwrap_err().to_string();
            assert!(
                err.starts_with("config: input.schema_registry.urls = "),
                "{bad}: {err}"
            );
            assert!(!err.contains(":p@"), "a password is never echoed: {err}");
        }
    }

    #[test]
    fn secrets_have_one_source_and_a_user_needs_a_password() {
        let mut s = settings(&["http://r/"]);
        let r = &mut s.input.schema_registry;
        r.basic_auth_user = Some("u".into());
        let err = check_connection(r).unwrap_err().to_string();
        assert!(
            err.contains("input.schema_registry.basic_auth_user"),
            "{err}"
        );
        r.basic_auth_password_env = Some("P".into());
        check_connection(r).unwrap();
        r.basic_auth_password_file = Some("/p".into());
        let err = check_connection(r).unwrap_err().to_string();
        assert!(err.contains("basic_auth_password_env"), "{err}");
        r.basic_auth_password_file = None;
        r.bearer_token_env = Some("T".into());
        let err = check_one_authentication(&s).unwrap_err().to_string();
        assert!(err.contains("bearer_token_file"), "{err}");
    }

    #[test]
    fn registering_needs_a_registry_and_avro_scores() {
        let mut s = settings(&[]);
        s.output.schema_registry.mode = RegistryMode::Register;
        let err = check_output_mode(&s).unwrap_err().to_string();
        assert!(
            err.starts_with("config: output.schema_registry.mode = register"),
            "{err}"
        );
        s.input.schema_registry = registry(&["http://r/"]);
        check_output_mode(&s).unwrap();
        s.output.format = Format::Json;
        let err = check_output_mode(&s).unwrap_err().to_string();
        assert!(err.contains("output.format = \"json\""), "{err}");
    }

    #[test]
    fn a_wait_stays_under_the_consumers_poll_interval() {
        let mut s = settings(&["http://r/"]);
        s.input.schema_registry.max_wait = std::time::Duration::from_secs(240);
        check_max_wait(&s).unwrap();
        s.kafka
            .consumer
            .insert("max_poll_interval_ms".into(), "120000".into());
        let err = check_max_wait(&s).unwrap_err().to_string();
        assert!(
            err.starts_with("config: input.schema_registry.max_wait_ms = 240000 is not allowed: at most the consumer's max.poll.interval.ms (120000) less 60000"),
            "{err}"
        );
        s.input.schema_registry.max_wait = std::time::Duration::from_secs(60);
        check_max_wait(&s).unwrap();
    }
}
