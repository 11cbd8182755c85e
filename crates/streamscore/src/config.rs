//! Settings: `config/default.toml` < `--config FILE` < `STREAMSCORE__SECTION__KEY`,
//! checked once at start so that a bad value stops the process with one line
//! naming the key, the value and what is allowed.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strum::VariantNames;

pub(crate) use crate::codec::Format;
use crate::envelope::{Keyring, KeyringError};
pub(crate) use crate::inference::DevicePreference;
use crate::inference::{ConvAlgorithmSearch, CudaOptions};

mod registry;
pub use registry::{
    OutputRegistrySettings, RegistryMode, SchemaRegistrySettings, SubjectNameStrategy,
};

/// The shipped defaults, compiled in so the binary runs from any directory.
pub(crate) const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// The least `kafka.max_message_bytes`: the producer's message.max.bytes is
/// that less a 61-byte batch header, and librdkafka takes nothing under 1000.
pub(crate) const MIN_MAX_MESSAGE_BYTES: u64 = 1_061;

/// The upper end of an integer setting's range: a constant, or another
/// setting (whose own range then bounds it at install time, where the other
/// value is not yet combined with this one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Max {
    Value(u64),
    Key(&'static str),
}

/// The allowed values of one integer setting. [`RANGES`] is the one place
/// they are declared: `validate()` enforces them, and unit tests hold
/// config/default.toml's comments and the chart's values.schema.json to them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Range {
    /// Dotted key, as in the TOML and the error line.
    pub key: &'static str,
    pub min: u64,
    pub max: Max,
    /// Where a bound comes from, said in the error line (empty: nothing to add).
    pub why: &'static str,
}

const fn range(key: &'static str, min: u64, max: u64) -> Range {
    Range {
        key,
        min,
        max: Max::Value(max),
        why: "",
    }
}

/// Every integer setting and its range, in the order `validate()` checks them
/// (a bound naming another key comes after that key).
pub(crate) const RANGES: &[Range] = &[
    range("kafka.transaction_timeout_ms", 1_000, 900_000),
    range("kafka.session_timeout_ms", 1_000, 3_600_000),
    range("kafka.request_timeout_ms", 100, 900_000),
    Range {
        key: "kafka.max_message_bytes",
        min: MIN_MAX_MESSAGE_BYTES,
        max: Max::Value(1_000_000_000),
        why: "librdkafka's least message.max.bytes, 1000, plus a 61-byte batch header",
    },
    Range {
        key: "input.max_record_bytes",
        min: 64,
        max: Max::Key("kafka.max_message_bytes"),
        why: "",
    },
    Range {
        key: "output.avro_schema_id",
        min: 0,
        max: Max::Value(u32::MAX as u64),
        why: "a Confluent schema id",
    },
    range("model.sessions", 1, 64),
    range("model.intra_op_threads", 1, 64),
    range("model.cuda.device_id", 0, 64),
    Range {
        key: "model.cuda.memory_limit_bytes",
        min: 0,
        max: Max::Value(1 << 40),
        why: "bytes; 0 for no limit, at most 1 TiB",
    },
    range("batching.max_batch_size", 1, 65_536),
    Range {
        key: "batching.min_batch_size",
        min: 1,
        max: Max::Key("batching.max_batch_size"),
        why: "",
    },
    range("batching.max_batch_delay_ms", 0, 10_000),
    range("batching.latency_target_ms", 1, 60_000),
    range("transactions.commit_interval_ms", 1, 60_000),
    range("shutdown.grace_period_ms", 1_000, 600_000),
    range("telemetry.stall_timeout_ms", 10_000, 3_600_000),
    range("telemetry.exit_linger_ms", 0, 600_000),
    range("input.schema_registry.request_timeout_ms", 100, 60_000),
    Range {
        key: "input.schema_registry.max_wait_ms",
        min: 1_000,
        max: Max::Value(240_000),
        why: "under the consumer's max.poll.interval.ms of 300000, so a wait does not cost the partitions",
    },
    Range {
        key: "input.schema_registry.cache_max_bytes",
        min: 1 << 20,
        max: Max::Value(1 << 34),
        why: "bytes",
    },
];

/// `model.threshold`, the one fractional setting with a range.
pub(crate) const THRESHOLD_RANGE: (f64, f64) = (0.0, 1.0);

impl Range {
    /// What the error line says is allowed, given the resolved upper bound.
    fn allowed(&self, max: u64) -> String {
        let because = match self.max {
            Max::Key(other) if self.why.is_empty() => other,
            _ => self.why,
        };
        if because.is_empty() {
            format!("an integer from {} to {max}", self.min)
        } else {
            format!("an integer from {} to {max} ({because})", self.min)
        }
    }

    /// The static upper bound (for a bound naming another key, that key's).
    fn upper_limit(&self) -> u64 {
        match self.max {
            Max::Value(v) => v,
            Max::Key(other) => RANGES
                .iter()
                .find(|r| r.key == other)
                .map_or(u64::MAX, Range::upper_limit),
        }
    }
}

/// Refuses an integer setting written as anything but an integer, before the
/// `config` crate would convert it silently (12.5 to 13, `true` to 1). A
/// string holding an integer passes: that is how environment variables come.
fn check_integer_types(layers: &config::Config) -> Result<(), ConfigError> {
    use config::ValueKind;
    for r in RANGES {
        let Ok(value) = layers.get::<config::Value>(r.key) else {
            continue; // absent: deserialisation names the missing key
        };
        let shown = match &value.kind {
            ValueKind::I64(_) | ValueKind::I128(_) | ValueKind::U64(_) | ValueKind::U128(_) => {
                continue;
            }
            ValueKind::String(s) if s.trim().parse::<u64>().is_ok() => continue,
            ValueKind::Float(f) => format!("{f:?}"),
            ValueKind::String(s) => format!("{s:?}"),
            ValueKind::Boolean(b) => b.to_string(),
            ValueKind::Nil => "nothing".to_owned(),
            ValueKind::Table(_) => "a table".to_owned(),
            ValueKind::Array(_) => "a list".to_owned(),
        };
        return Err(invalid(r.key, shown, &r.allowed(r.upper_limit())));
    }
    Ok(())
}

/// A rule between settings, beyond each one's own range. Together with the
/// two ranges whose upper bound is another key (`input.max_record_bytes` ≤
/// `kafka.max_message_bytes`, `batching.min_batch_size` ≤
/// `batching.max_batch_size`, in [`RANGES`]), these are every rule the chart's
/// templates must also hold, so `helm install` refuses what the pod would.
pub struct CrossFieldRule {
    pub keys: &'static [&'static str],
    /// The rule as an operator (or a template) states it.
    pub rule: &'static str,
    check: fn(&Settings) -> Result<(), ConfigError>,
}

/// Checked by `validate()` in this order, after every range.
pub const CROSS_FIELD_RULES: &[CrossFieldRule] = &[
    CrossFieldRule {
        keys: &["input.topics", "output.topic", "output.dead_letter_topic"],
        rule: "input.topics contains neither output.topic nor output.dead_letter_topic",
        check: Settings::check_outputs_not_read,
    },
    CrossFieldRule {
        keys: &["output.dead_letter_topic", "output.topic"],
        rule: "output.dead_letter_topic differs from output.topic",
        check: Settings::check_outputs_differ,
    },
    CrossFieldRule {
        keys: &[
            "model.shadow_card",
            "output.shadow_topic",
            "output.topic",
            "output.dead_letter_topic",
            "input.topics",
        ],
        rule: "with model.shadow_card set, output.shadow_topic differs from output.topic and output.dead_letter_topic and is not in input.topics",
        check: Settings::check_shadow_topic,
    },
    CrossFieldRule {
        keys: &["keys.file", "keys.env"],
        rule: "keys.file or keys.env is not empty",
        check: Settings::check_key_source,
    },
    CrossFieldRule {
        keys: &[
            "transactions.commit_interval_ms",
            "kafka.transaction_timeout_ms",
        ],
        rule: "2 * transactions.commit_interval_ms <= kafka.transaction_timeout_ms",
        check: Settings::check_commit_interval,
    },
    CrossFieldRule {
        keys: &[
            "shutdown.leave_group",
            "kafka.group_instance_id",
            "kafka.consumer.group.protocol",
        ],
        rule: "shutdown.leave_group = \"never\" when kafka.group_instance_id is set and group.protocol = \"consumer\"",
        check: Settings::check_leave_group,
    },
    CrossFieldRule {
        keys: &[
            "output.schema_registry.mode",
            "input.schema_registry.urls",
            "output.format",
        ],
        rule: "output.schema_registry.mode is \"auto\" or \"off\" when input.schema_registry.urls is empty or output.format = \"json\"",
        check: registry::check_output_mode,
    },
    CrossFieldRule {
        keys: &[
            "input.schema_registry.basic_auth_user",
            "input.schema_registry.bearer_token_file",
            "input.schema_registry.bearer_token_env",
        ],
        rule: "no bearer token when input.schema_registry.basic_auth_user is set",
        check: registry::check_one_authentication,
    },
    CrossFieldRule {
        keys: &[
            "input.schema_registry.max_wait_ms",
            "kafka.consumer.max.poll.interval.ms",
        ],
        rule: "input.schema_registry.max_wait_ms + 60000 <= the consumer's max.poll.interval.ms (300000 unless set)",
        check: registry::check_max_wait,
    },
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: {key} = {value} is not allowed: {allowed}")]
    Invalid {
        key: String,
        value: String,
        allowed: String,
    },
    #[error("config: {0}")]
    Load(String),
}

fn invalid(key: &str, value: impl ToString, allowed: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        value: value.to_string(),
        allowed: allowed.to_owned(),
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub kafka: KafkaSettings,
    pub input: InputSettings,
    pub output: OutputSettings,
    pub keys: KeySettings,
    pub model: ModelSettings,
    pub onnxruntime: OnnxRuntimeSettings,
    pub batching: BatchingSettings,
    pub transactions: TransactionSettings,
    pub shutdown: ShutdownSettings,
    pub telemetry: TelemetrySettings,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    pub bootstrap_servers: String,
    pub group_id: String,
    pub transactional_id: String,
    #[serde(rename = "transaction_timeout_ms", with = "millis")]
    pub transaction_timeout: Duration,
    /// Static membership (KIP-345) when set; `""` leaves it unset.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub group_instance_id: Option<String>,
    #[serde(rename = "session_timeout_ms", with = "millis")]
    pub session_timeout: Duration,
    #[serde(rename = "request_timeout_ms", with = "millis")]
    pub request_timeout: Duration,
    pub max_message_bytes: u64,
    /// librdkafka properties for every client (consumer, producer, admin, tools).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// For the consumer only; wins over `properties`.
    #[serde(default)]
    pub consumer: BTreeMap<String, String>,
    /// For the transactional producer only; wins over `properties`.
    #[serde(default)]
    pub producer: BTreeMap<String, String>,
    /// librdkafka properties whose values are read from files at start
    /// (`"sasl.password" = "/etc/streamscore/kafka/password"`), for every
    /// client: secrets stay out of the config file and the environment.
    #[serde(default)]
    pub secret_files: BTreeMap<String, PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InputSettings {
    pub topics: Vec<String>,
    pub format: Format,
    pub max_record_bytes: u64,
    pub reader_schema: PathBuf,
    /// Writer schemas by Confluent id (the TOML table's keys are the ids).
    #[serde(default, deserialize_with = "schema_ids")]
    pub avro_schemas: BTreeMap<u32, PathBuf>,
    /// Writer schemas by id from a registry, for the ids `avro_schemas` does not name.
    pub schema_registry: SchemaRegistrySettings,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSettings {
    pub topic: String,
    pub dead_letter_topic: String,
    pub format: Format,
    pub avro_schema_id: u32,
    pub avro_schema: PathBuf,
    /// The challenger's results, with `model.shadow_card`.
    pub shadow_topic: String,
    /// Whether the score schema's id comes from the registry.
    pub schema_registry: OutputRegistrySettings,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeySettings {
    /// A keyring file, watched for rotation; `""` leaves it unset.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub file: Option<PathBuf>,
    /// The variable holding the keyring, when no file is set.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub env: Option<String>,
}

impl KeySettings {
    /// Loads the keyring these settings point at: `keys.file`, else the variable `keys.env`.
    pub fn load(&self) -> Result<Keyring, KeyringError> {
        match (&self.file, &self.env) {
            (Some(file), _) => Keyring::from_file(file),
            (None, Some(var)) => Keyring::from_env(var),
            // validate() refuses settings with neither.
            (None, None) => Err(KeyringError::EnvMissing("keys.env".to_owned())),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    pub card: PathBuf,
    pub device: DevicePreference,
    pub sessions: u32,
    pub intra_op_threads: u32,
    pub threshold: Option<f64>,
    /// A challenger model scored on the same rows (shadow scoring); `""` leaves it unset.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub shadow_card: Option<PathBuf>,
    /// With `device` cuda or auto only.
    pub cuda: CudaOptions,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OnnxRuntimeSettings {
    /// `libonnxruntime.so`; unset (or `""`): `ORT_DYLIB_PATH`, else the set-up copy.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub library: Option<PathBuf>,
}

/// Durations are written in whole milliseconds under `*_ms` keys, as
/// librdkafka and Kubernetes spell them; inside, they are [`Duration`]s.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// An optional setting read as absent when written `""`: how TOML, an
/// environment variable or a chart value leaves a setting unset, so no
/// code downstream has to tell "" from a value.
fn empty_as_none<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: From<String>,
{
    let text: Option<String> = Option::deserialize(deserializer)?;
    Ok(text.filter(|t| !t.trim().is_empty()).map(T::from))
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BatchingSettings {
    pub mode: BatchMode,
    pub max_batch_size: u32,
    pub min_batch_size: u32,
    #[serde(rename = "max_batch_delay_ms", with = "millis")]
    pub max_batch_delay: Duration,
    #[serde(rename = "latency_target_ms", with = "millis")]
    pub latency_target: Duration,
}

/// How the batch size is chosen.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Deserialize,
    Serialize,
    strum::VariantNames,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum BatchMode {
    /// Always close a batch at `max_batch_size` rows (or `max_batch_delay_ms`).
    Fixed,
    /// Move the size between `min_batch_size` and `max_batch_size` so the p99
    /// of batch fill + inference stays under `latency_target_ms`.
    Adaptive,
}

impl BatchMode {
    /// As the config spells it.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TransactionSettings {
    #[serde(rename = "commit_interval_ms", with = "millis")]
    pub commit_interval: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownSettings {
    #[serde(rename = "grace_period_ms", with = "millis")]
    pub grace_period: Duration,
    pub leave_group: LeaveGroup,
}

/// Whether a clean stop takes this member out of the consumer group at once.
/// Only a static member (`kafka.group_instance_id`) has the choice: KIP-345
/// members keep their partitions through a stop until the session times out,
/// so a restart within it gets them back without a rebalance; a dynamic member
/// always leaves.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Deserialize,
    Serialize,
    strum::VariantNames,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum LeaveGroup {
    /// Leave on every clean stop: the partitions move to the other members at
    /// once (a scale-down), and a restart costs a rebalance.
    Always,
    /// Keep the partitions for `kafka.session_timeout_ms` (a rolling restart);
    /// if the member does not come back, they sit unread until then.
    Never,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    pub listen: SocketAddr,
    pub log_format: LogFormat,
    pub log_level: String,
    #[serde(rename = "stall_timeout_ms", with = "millis")]
    pub stall_timeout: Duration,
    #[serde(rename = "exit_linger_ms", with = "millis")]
    pub exit_linger: Duration,
}

/// How log lines are written.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Deserialize,
    Serialize,
    strum::VariantNames,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum LogFormat {
    /// JSON off a terminal, human on one.
    Auto,
    Human,
    Json,
}

/// Settings with a fixed set of spellings, read off their enums (strum's
/// `VariantNames`, spelled as serde spells them: the unit test
/// `every_choice_deserialises` holds the two together). Checked on the raw
/// layers before they are deserialised, so a bad spelling gets the one-line
/// refusal of every other setting rather than a serde message.
const CHOICES: &[(&str, &[&str])] = &[
    ("input.format", Format::VARIANTS),
    ("output.format", Format::VARIANTS),
    ("model.device", DevicePreference::VARIANTS),
    (
        "model.cuda.conv_algorithm_search",
        ConvAlgorithmSearch::VARIANTS,
    ),
    ("batching.mode", BatchMode::VARIANTS),
    ("shutdown.leave_group", LeaveGroup::VARIANTS),
    ("telemetry.log_format", LogFormat::VARIANTS),
    ("output.schema_registry.mode", RegistryMode::VARIANTS),
    (
        "output.schema_registry.subject_name_strategy",
        SubjectNameStrategy::VARIANTS,
    ),
];

/// A credential among the librdkafka properties of the config file: config
/// files get copied, committed and printed; secrets come from the
/// environment (a Kubernetes Secret's variables) or `kafka.secret_files`.
fn refuse_credentials_in_file(file: &config::Config) -> Result<(), ConfigError> {
    for table in ["properties", "consumer", "producer"] {
        let Ok(props) = file.get_table(&format!("kafka.{table}")) else {
            continue;
        };
        if let Some(key) = props.keys().find(|k| is_credential(&librdkafka_name(k))) {
            let variable = format!(
                "STREAMSCORE__KAFKA__{}__{}",
                table.to_uppercase(),
                librdkafka_name(key).replace('.', "_").to_uppercase()
            );
            return Err(invalid(
                &format!("kafka.{table}.{key}"),
                "<redacted>",
                &format!(
                    "not in a config file: a secret comes from the environment ({variable}) or from a file named in kafka.secret_files"
                ),
            ));
        }
    }
    Ok(())
}

/// librdkafka properties that hold a credential itself (not a path to one).
fn is_credential(name: &str) -> bool {
    name.ends_with("password")
        || name.ends_with("secret")
        || name.ends_with("passphrase")
        || name.ends_with("key.pem")
        || matches!(name, "sasl.oauthbearer.config" | "sasl.jaas.config")
}

/// The operator's layers over `builder`: the config file, then the
/// environment (`STREAMSCORE__SECTION__KEY`).
fn user_layers(
    mut builder: config::ConfigBuilder<config::builder::DefaultState>,
    file: Option<&Path>,
    use_env: bool,
) -> config::ConfigBuilder<config::builder::DefaultState> {
    if let Some(path) = file {
        builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
    }
    if use_env {
        builder = builder.add_source(
            config::Environment::with_prefix("STREAMSCORE")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("input.topics")
                .with_list_parse_key("input.schema_registry.urls"),
        );
    }
    builder
}

/// `"a"`, `"a" or "b"`, `"a", "b" or "c"`: what a refusal says is allowed.
fn one_of(spellings: &[&str]) -> String {
    let quoted: Vec<String> = spellings.iter().map(|s| format!("\"{s}\"")).collect();
    match quoted.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// Refuses a key of `input.avro_schemas` that is not a schema id, before
/// deserialisation would refuse it in serde's words.
fn check_schema_ids(layers: &config::Config) -> Result<(), ConfigError> {
    let Ok(table) = layers.get_table("input.avro_schemas") else {
        return Ok(()); // absent, or not a table: deserialisation says so
    };
    let mut seen = std::collections::BTreeSet::new();
    for id in table.keys() {
        let key = format!("input.avro_schemas.{id}");
        let Ok(parsed) = id.parse::<u32>() else {
            return Err(invalid(
                &key,
                id,
                "a Confluent schema id: an integer from 0 to 4294967295",
            ));
        };
        if !seen.insert(parsed) {
            return Err(invalid(
                &key,
                id,
                &format!(
                    "schema id {parsed} once (another key of input.avro_schemas is the same id)"
                ),
            ));
        }
    }
    Ok(())
}

fn schema_ids<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<u32, PathBuf>, D::Error> {
    use serde::de::Error;
    HashMap::<String, PathBuf>::deserialize(d)?
        .into_iter()
        .map(|(id, path)| {
            let parsed = id
                .parse()
                .map_err(|_| D::Error::custom(format!("{id} is not a schema id")))?;
            Ok((parsed, path))
        })
        .collect()
}

/// Refuses a spelling outside [`CHOICES`], and a listen address that is not
/// one, before deserialisation would refuse it in serde's words.
fn check_choices(layers: &config::Config) -> Result<(), ConfigError> {
    for (key, spellings) in CHOICES {
        if let Ok(value) = layers.get_string(key)
            && !spellings.contains(&value.as_str())
        {
            return Err(invalid(key, value, &one_of(spellings)));
        }
    }
    if let Ok(listen) = layers.get_string("telemetry.listen")
        && listen.parse::<SocketAddr>().is_err()
    {
        return Err(invalid(
            "telemetry.listen",
            listen,
            "an address like 0.0.0.0:9464",
        ));
    }
    Ok(())
}

impl Settings {
    /// Loads the layers and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, true)
    }

    /// As [`Settings::load`], optionally ignoring the environment (the demo
    /// and tests build their own settings and must not pick up stray variables).
    pub fn load_with_env(file: Option<&Path>, use_env: bool) -> Result<Self, ConfigError> {
        if let Some(path) = file
            && !path.is_file()
        {
            return Err(ConfigError::Load(format!(
                "config file {} does not exist",
                path.display()
            )));
        }
        let defaults = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        let load_error = |e: config::ConfigError| ConfigError::Load(one_line(&e.to_string()));
        let layers = user_layers(defaults, file, use_env)
            .build()
            .map_err(load_error)?;
        check_integer_types(&layers)?;
        check_choices(&layers)?;
        check_schema_ids(&layers)?;
        if let Some(path) = file {
            let own = config::Config::builder()
                .add_source(config::File::from(path).format(config::FileFormat::Toml))
                .build()
                .map_err(load_error)?;
            refuse_credentials_in_file(&own)?;
        }
        let mut settings: Settings = layers.try_deserialize().map_err(load_error)?;
        // The default file mapping (ids 1 and 2) would win over a
        // registry's ids 1 and 2: with a registry, only the ids the
        // operator maps are files.
        if settings.input.schema_registry.enabled() {
            let own = user_layers(config::Config::builder(), file, use_env)
                .build()
                .map_err(load_error)?;
            let own_ids: Vec<u32> = own
                .get_table("input.avro_schemas")
                .map(|t| t.keys().filter_map(|k| k.trim().parse().ok()).collect())
                .unwrap_or_default();
            settings
                .input
                .avro_schemas
                .retain(|id, _| own_ids.contains(id));
        }
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every value that types alone do not constrain.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let k = &self.kafka;
        non_empty("kafka.bootstrap_servers", &k.bootstrap_servers)?;
        non_empty("kafka.group_id", &k.group_id)?;
        non_empty("kafka.transactional_id", &k.transactional_id)?;
        self.check_ranges()?;

        for (table, props) in [
            ("properties", &k.properties),
            ("consumer", &k.consumer),
            ("producer", &k.producer),
        ] {
            check_pinned(table, props)?;
        }
        self.check_secret_files()?;

        if self.input.topics.is_empty() || self.input.topics.iter().any(|t| !valid_topic(t)) {
            return Err(invalid(
                "input.topics",
                format!("{:?}", self.input.topics),
                "a non-empty list of topic names of 1..=249 characters from [a-zA-Z0-9._-]",
            ));
        }
        if self.input.format == Format::Avro
            && self.input.avro_schemas.is_empty()
            && !self.input.schema_registry.enabled()
        {
            return Err(invalid(
                "input.avro_schemas",
                "{}",
                "at least one schema id mapped to a schema file when input.format = \"avro\" and input.schema_registry.urls is empty",
            ));
        }
        registry::check_connection(&self.input.schema_registry)?;
        for (key, topic) in [
            ("output.topic", &self.output.topic),
            ("output.dead_letter_topic", &self.output.dead_letter_topic),
        ] {
            if !valid_topic(topic) {
                return Err(invalid(
                    key,
                    topic,
                    "a topic name of 1..=249 characters from [a-zA-Z0-9._-]",
                ));
            }
        }
        if let Some(t) = self.model.threshold
            && !(THRESHOLD_RANGE.0..=THRESHOLD_RANGE.1).contains(&t)
        {
            return Err(invalid(
                "model.threshold",
                t,
                &format!(
                    "a number from {} to {}",
                    THRESHOLD_RANGE.0, THRESHOLD_RANGE.1
                ),
            ));
        }
        for rule in CROSS_FIELD_RULES {
            (rule.check)(self)?;
        }
        if tracing_subscriber::EnvFilter::try_new(&self.telemetry.log_level).is_err() {
            return Err(invalid(
                "telemetry.log_level",
                &self.telemetry.log_level,
                "a tracing filter such as \"info\" or \"streamscore=debug,warn\"",
            ));
        }
        Ok(())
    }

    /// Reading our own output would score scores and dead letters again,
    /// without end.
    fn check_outputs_not_read(&self) -> Result<(), ConfigError> {
        for (key, topic) in [
            ("output.topic", &self.output.topic),
            ("output.dead_letter_topic", &self.output.dead_letter_topic),
        ] {
            if self.input.topics.contains(topic) {
                return Err(invalid(
                    "input.topics",
                    format!("{:?}", self.input.topics),
                    &format!(
                        "topics other than {key} ({topic:?}): scoring its own output would loop"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A dead letter among the scores breaks every reader of the scores.
    fn check_outputs_differ(&self) -> Result<(), ConfigError> {
        if self.output.topic == self.output.dead_letter_topic {
            return Err(invalid(
                "output.dead_letter_topic",
                &self.output.dead_letter_topic,
                "a topic other than output.topic, so scores and dead letters stay apart",
            ));
        }
        Ok(())
    }

    /// Shadow results in the score or dead-letter topic would read as
    /// duplicates there; read back as input, they would loop.
    fn check_shadow_topic(&self) -> Result<(), ConfigError> {
        if self.model.shadow_card.is_none() {
            return Ok(());
        }
        let topic = &self.output.shadow_topic;
        if topic == &self.output.topic || topic == &self.output.dead_letter_topic {
            return Err(invalid(
                "output.shadow_topic",
                topic,
                "a topic other than output.topic and output.dead_letter_topic, so the challenger's results stay apart",
            ));
        }
        if self.input.topics.contains(topic) {
            return Err(invalid(
                "output.shadow_topic",
                topic,
                "a topic input.topics does not contain: scoring the challenger's results would loop",
            ));
        }
        Ok(())
    }

    fn check_key_source(&self) -> Result<(), ConfigError> {
        if self.keys.file.is_none() && self.keys.env.is_none() {
            return Err(invalid(
                "keys.file",
                "\"\"",
                "a keyring file path, or keys.env naming a variable",
            ));
        }
        Ok(())
    }

    /// A transaction must commit well before the broker aborts it.
    fn check_commit_interval(&self) -> Result<(), ConfigError> {
        let timeout = self.kafka.transaction_timeout.as_millis();
        let interval = self.transactions.commit_interval.as_millis();
        if interval.saturating_mul(2) > timeout {
            return Err(invalid(
                "transactions.commit_interval_ms",
                interval,
                &format!(
                    "at most half of kafka.transaction_timeout_ms ({timeout}), so a transaction commits well before the broker aborts it"
                ),
            ));
        }
        Ok(())
    }

    /// Enforces [`RANGES`], in their order.
    fn check_ranges(&self) -> Result<(), ConfigError> {
        let values = serde_json::to_value(self).map_err(|e| ConfigError::Load(e.to_string()))?;
        let integer = |key: &str| {
            values
                .pointer(&format!("/{}", key.replace('.', "/")))
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(|| ConfigError::Load(format!("{key} is not an integer setting")))
        };
        for r in RANGES {
            let value = integer(r.key)?;
            let max = match r.max {
                Max::Value(v) => v,
                Max::Key(other) => integer(other)?,
            };
            if !(r.min..=max).contains(&value) {
                return Err(invalid(r.key, value, &r.allowed(max)));
            }
        }
        Ok(())
    }

    /// The effective settings as JSON, with secret-looking librdkafka
    /// properties (passwords, secrets, tokens, PEM material, JAAS) redacted.
    pub fn redacted(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        for table in ["/kafka/properties", "/kafka/consumer", "/kafka/producer"] {
            let Some(props) = value
                .pointer_mut(table)
                .and_then(serde_json::Value::as_object_mut)
            else {
                continue;
            };
            for (key, v) in props.iter_mut() {
                if is_secret_property(key) {
                    *v = "<redacted>".into();
                }
            }
        }
        value
    }

    /// Refuses the combination in which leaving would silently not happen.
    /// (`never` for a dynamic member is only warned about when the pipeline
    /// starts: the chart's ConfigMap is checked without the pod's
    /// group.instance.id, which comes from the environment.)
    fn check_leave_group(&self) -> Result<(), ConfigError> {
        let k = &self.kafka;
        let static_member = k.group_instance_id.is_some();
        match self.shutdown.leave_group {
            // KIP-848's protocol takes a static member's leave as temporary
            // (member epoch -2): it would keep its partitions anyway.
            LeaveGroup::Always if static_member && self.consumer_group_protocol() == "consumer" => {
                Err(invalid(
                    "shutdown.leave_group",
                    "always",
                    "\"never\" with group.protocol = \"consumer\" (KIP-848) and a kafka.group_instance_id: that protocol keeps a static member's partitions through its leave",
                ))
            }
            _ => Ok(()),
        }
    }

    /// Each secret file names a property no other table also sets, is not
    /// one exactly-once rests on, and can be read now; one every user of the
    /// machine can read draws a warning, as a shared keyring does.
    fn check_secret_files(&self) -> Result<(), ConfigError> {
        let k = &self.kafka;
        for (key, path) in &k.secret_files {
            let name = librdkafka_name(key);
            let key_path = format!("kafka.secret_files.{key}");
            // Its value is not known here, so none of the properties
            // exactly-once rests on may come from a file at all.
            if PINNED_PROPERTIES.contains(&name.as_str()) {
                return Err(invalid(
                    &key_path,
                    path.display(),
                    &format!(
                        "a property other than {name}, which exactly-once rests on (kafka.* sets it, or its value is fixed)"
                    ),
                ));
            }
            if let Some(table) = [
                ("properties", &k.properties),
                ("consumer", &k.consumer),
                ("producer", &k.producer),
            ]
            .into_iter()
            .find(|(_, t)| t.keys().any(|other| librdkafka_name(other) == name))
            .map(|(table, _)| table)
            {
                return Err(invalid(
                    &key_path,
                    path.display(),
                    &format!(
                        "a property kafka.{table} does not also set ({name}): one source for a secret"
                    ),
                ));
            }
            if let Err(e) = std::fs::read(path) {
                return Err(invalid(
                    &key_path,
                    path.display(),
                    &format!("a file this process can read ({e})"),
                ));
            }
            crate::envelope::warn_if_shared(path, "a Kafka secret file");
        }
        for (key, value) in k.properties.iter().chain(&k.consumer).chain(&k.producer) {
            if librdkafka_name(key) == "ssl.key.location" {
                crate::envelope::warn_if_shared(
                    Path::new(value),
                    "the TLS key file (ssl.key.location)",
                );
            }
        }
        Ok(())
    }

    /// The consumer's `group.protocol` as the librdkafka property tables set it.
    fn consumer_group_protocol(&self) -> String {
        self.consumer_property("group.protocol")
            .map(|v| v.to_ascii_lowercase())
            .unwrap_or_default()
    }

    /// A librdkafka property of the consumer as the tables set it (the
    /// consumer table wins), spelled with dots or underscores.
    pub(crate) fn consumer_property(&self, name: &str) -> Option<String> {
        [&self.kafka.properties, &self.kafka.consumer]
            .into_iter()
            .flat_map(|t| t.iter())
            .filter(|(key, _)| librdkafka_name(key) == name)
            .map(|(_, v)| v.trim().to_owned())
            .next_back()
    }

    /// The ONNX Runtime library: the config key, else `ORT_DYLIB_PATH`, else the set-up copy.
    pub fn onnxruntime_library(&self) -> PathBuf {
        if let Some(library) = &self.onnxruntime.library {
            return library.clone();
        }
        match std::env::var_os("ORT_DYLIB_PATH") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => PathBuf::from(".local/onnxruntime/lib/libonnxruntime.so"),
        }
    }
}

/// Whether a `kafka.*` property looks like a secret (a password, secret,
/// token, PEM material or JAAS config), whose value is never printed.
pub(crate) fn is_secret_property(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "pem",
        "jaas",
        "passphrase",
        "oauthbearer.config",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// The librdkafka name of a property key from one of the `kafka.*` tables:
/// environment variables cannot hold dots, so `ssl_ca_location` is accepted
/// for `ssl.ca.location` (librdkafka property names have no underscores).
pub(crate) fn librdkafka_name(key: &str) -> String {
    key.replace('_', ".")
}

/// The librdkafka properties that exactly-once pins: [`check_pinned`]
/// refuses them (or some of their values) in every `kafka.*` table, and
/// ignores every other name. The chart's templates/_validate.tpl refuses the
/// same at render time; tests/helm_chart.rs compares the two for each name.
pub const PINNED_PROPERTIES: &[&str] = &[
    "isolation.level",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.idempotence",
    "transactional.id",
    "transaction.timeout.ms",
    "message.max.bytes",
    "auto.offset.reset",
    "statistics.interval.ms",
];

/// Refuses a property in `kafka.<table>` that would silently undo what
/// exactly-once rests on, the way Kafka Streams refuses overriding its EOS
/// settings: the clients would start and lose or duplicate records quietly.
/// Repeating our own value is harmless and allowed.
fn check_pinned(table: &str, props: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    let is = |value: &str, spellings: &[&str]| {
        spellings
            .iter()
            .any(|s| value.trim().eq_ignore_ascii_case(s))
    };
    // librdkafka reads a boolean from any of these.
    const TRUE: &[&str] = &["true", "t", "1"];
    const FALSE: &[&str] = &["false", "f", "0"];
    for (key, value) in props {
        let name = librdkafka_name(key);
        // A name refused below but missing from the list is not refused at
        // all, so the list cannot leave one out unnoticed.
        if !PINNED_PROPERTIES.contains(&name.as_str()) {
            continue;
        }
        let why = match name.as_str() {
            "isolation.level" if !is(value, &["read_committed"]) => {
                "exactly-once needs read_committed"
            }
            "enable.auto.commit" if !is(value, FALSE) => {
                "exactly-once commits offsets inside its transactions, so enable.auto.commit stays false"
            }
            "enable.auto.offset.store" if !is(value, FALSE) => {
                "exactly-once stores offsets only for records its transactions wrote, so enable.auto.offset.store stays false"
            }
            "enable.idempotence" if !is(value, TRUE) => "transactions need the idempotent producer",
            "transactional.id" => {
                "set kafka.transactional_id instead, the one identity that fences a zombie"
            }
            "transaction.timeout.ms" => {
                "set kafka.transaction_timeout_ms instead, which transactions.commit_interval_ms is checked against"
            }
            "message.max.bytes" => {
                "set kafka.max_message_bytes instead, which the start-time topic check compares with the output topics"
            }
            "auto.offset.reset" if is(value, &["latest", "largest", "end"]) => {
                "a new group would skip every record written before it joined; earliest (or error) only"
            }
            "statistics.interval.ms" if value.trim().parse::<u64>() == Ok(0) => {
                "1 or more: the consumer lag, the broker reachability of /readyz and the liveness signals come from librdkafka's statistics, which 0 turns off"
            }
            _ => continue,
        };
        // These two may be set, within what is said; the others not at all.
        let allowed = if matches!(
            librdkafka_name(key).as_str(),
            "auto.offset.reset" | "statistics.interval.ms"
        ) {
            why.to_owned()
        } else {
            format!("{why}; this property cannot be overridden")
        };
        return Err(invalid(
            &format!("kafka.{table}.{key}"),
            format!("{value:?}"),
            &allowed,
        ));
    }
    Ok(())
}

fn non_empty(key: &str, value: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        return Err(invalid(key, "\"\"", "a non-empty string"));
    }
    Ok(())
}

fn valid_topic(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn with_file(toml: &str) -> Result<Settings, ConfigError> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(toml.as_bytes()).unwrap();
        Settings::load_with_env(Some(f.path()), false)
    }

    /// A password in the config file is refused, naming the variable to use;
    /// from the environment, or a file in kafka.secret_files, it is taken.
    #[test]
    fn credentials_come_from_the_environment_or_files_never_the_config_file() {
        let err = with_file("[kafka.properties]\n\"sasl.password\" = \"hunter2\"\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "config: kafka.properties.sasl.password = <redacted> is not allowed: not in a config file: a secret comes from the environment (STREAMSCORE__KAFKA__PROPERTIES__SASL_PASSWORD) or from a file named in kafka.secret_files"
        );
        let err = with_file("[kafka.producer]\nssl_key_password = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("config: kafka.producer.ssl_key_password = <redacted>"),
            "{err}"
        );
        with_file(
            "[kafka.properties]\n\"ssl.ca.location\" = \"/ca.pem\"\n\"sasl.username\" = \"u\"\n",
        )
        .unwrap();

        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("password");
        std::fs::write(&secret, "hunter2\n").unwrap();
        let s = with_file(&format!(
            "[kafka.secret_files]\n\"sasl.password\" = {:?}\n",
            secret.display().to_string()
        ))
        .unwrap();
        let config = crate::kafka::client::client_config(&s, crate::kafka::client::Role::Admin);
        assert_eq!(config.get("sasl.password"), Some("hunter2"));
        let err = with_file("[kafka.secret_files]\n\"sasl.password\" = \"/no/such/file\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("config: kafka.secret_files.sasl.password = /no/such/file is not allowed: a file this process can read"),
            "{err}"
        );
        for pinned in [
            "isolation.level",
            "auto.offset.reset",
            "statistics.interval.ms",
        ] {
            let err = with_file(&format!(
                "[kafka.secret_files]\n\"{pinned}\" = {:?}\n",
                secret.display().to_string()
            ))
            .unwrap_err()
            .to_string();
            assert!(
                err.starts_with(&format!("config: kafka.secret_files.{pinned} = ")),
                "{err}"
            );
        }
        let err = with_file(
            "[kafka.properties]\n\"sasl.oauthbearer.assertion.private.key.passphrase\" = \"p\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("is not allowed: not in a config file"),
            "{err}"
        );
    }

    /// With a registry, the defaults' file mapping (ids 1 and 2) would
    /// shadow the registry's ids 1 and 2: only the operator's own mapping stays.
    #[test]
    fn a_registry_drops_the_default_file_mapping_but_not_the_operators() {
        let registry = "[input.schema_registry]\nurls = [\"http://r:8081\"]\n";
        let s = with_file(registry).unwrap();
        assert!(
            s.input.avro_schemas.is_empty(),
            "{:?}",
            s.input.avro_schemas
        );
        let s = with_file(&format!(
            "{registry}[input.avro_schemas]\n7 = \"schemas/card_transaction.v2.avsc\"\n"
        ))
        .unwrap();
        assert_eq!(s.input.avro_schemas.keys().collect::<Vec<_>>(), [&7]);
        let s = with_file("").unwrap();
        assert_eq!(
            s.input.avro_schemas.len(),
            2,
            "no registry: the defaults stay"
        );
    }

    /// Every spelling [`CHOICES`] lets through (strum's names of each enum)
    /// deserialises into its enum and serialises back to itself, and every
    /// variant has a spelling, so the pre-check and serde agree; each key's
    /// wrong spelling gets the one-line refusal.
    #[test]
    fn every_choice_deserialises() {
        fn names<T: serde::de::DeserializeOwned + Serialize + VariantNames>(
            spellings: &[&str],
        ) -> Vec<String> {
            assert_eq!(spellings, T::VARIANTS);
            spellings
                .iter()
                .map(|s| {
                    let v: T = serde_json::from_value(serde_json::json!(s))
                        .unwrap_or_else(|e| panic!("{s}: {e}"));
                    serde_json::to_value(v)
                        .unwrap()
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
                .collect()
        }
        for (key, spellings) in CHOICES {
            let back = match *key {
                "input.format" | "output.format" => names::<Format>(spellings),
                "model.device" => names::<DevicePreference>(spellings),
                "model.cuda.conv_algorithm_search" => names::<ConvAlgorithmSearch>(spellings),
                "batching.mode" => names::<BatchMode>(spellings),
                "shutdown.leave_group" => names::<LeaveGroup>(spellings),
                "telemetry.log_format" => names::<LogFormat>(spellings),
                "output.schema_registry.mode" => names::<RegistryMode>(spellings),
                "output.schema_registry.subject_name_strategy" => {
                    names::<SubjectNameStrategy>(spellings)
                }
                other => panic!("{other} has no enum in this test"),
            };
            assert_eq!(back, spellings.to_vec(), "{key}");
        }
        assert_eq!(one_of(&["a"]), "\"a\"");
        assert_eq!(one_of(&["a", "b", "c"]), "\"a\", \"b\" or \"c\"");
        // A spelling outside the list is refused in the one-line form.
        let err = with_file("[model]\ndevice = \"gpu\"\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "config: model.device = gpu is not allowed: \"cpu\", \"cuda\" or \"auto\""
        );
        for (key, spellings) in CHOICES {
            let (table, name) = key.split_once('.').unwrap();
            let err = with_file(&format!("[{table}]\n{name} = \"bogus\"\n")).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "config: {key} = bogus is not allowed: {}",
                    one_of(spellings)
                )
            );
        }
        let err = with_file("[telemetry]\nlisten = \"localhost\"\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "config: telemetry.listen = localhost is not allowed: an address like 0.0.0.0:9464"
        );
    }

    /// `as_str` writes what serde reads: test configs and the bench report
    /// are written with it.
    #[test]
    fn as_str_is_the_config_spelling() {
        for f in [Format::Avro, Format::Json] {
            assert_eq!(serde_json::to_value(f).unwrap(), f.as_str());
        }
        for m in [BatchMode::Fixed, BatchMode::Adaptive] {
            assert_eq!(serde_json::to_value(m).unwrap(), m.as_str());
        }
    }

    /// An optional setting written "" is unset, as if absent; a value is kept.
    #[test]
    fn optional_settings_read_empty_as_unset() {
        let s = Settings::load_with_env(None, false).unwrap();
        assert_eq!(s.kafka.group_instance_id, None);
        assert_eq!(s.onnxruntime.library, None);
        let s = with_file("[kafka]\ngroup_instance_id = \"p-0\"\n[onnxruntime]\nlibrary = \" \"\n")
            .unwrap();
        assert_eq!(s.kafka.group_instance_id.as_deref(), Some("p-0"));
        assert_eq!(s.onnxruntime.library, None);
        let err = with_file("[keys]\nfile = \"\"\nenv = \"\"\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "config: keys.file = \"\" is not allowed: a keyring file path, or keys.env naming a variable"
        );
    }

    /// Schema ids are numbers once loaded; a key that is not one is refused
    /// in the one-line form, whatever the input format.
    #[test]
    fn avro_schema_ids_are_typed() {
        let s =
            with_file("[input.avro_schemas]\n7 = \"schemas/card_transaction.v2.avsc\"\n").unwrap();
        assert!(s.input.avro_schemas.contains_key(&7));
        let err = with_file("[input.avro_schemas]\n7 = \"a.avsc\"\n07 = \"b.avsc\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("config: input.avro_schemas.") && err.contains("schema id 7 once"),
            "{err}"
        );
        for format in ["avro", "json"] {
            let err = with_file(&format!(
                "[input]\nformat = \"{format}\"\n[input.avro_schemas]\nv2 = \"x.avsc\"\n"
            ))
            .unwrap_err();
            assert_eq!(
                err.to_string(),
                "config: input.avro_schemas.v2 = v2 is not allowed: a Confluent schema id: an integer from 0 to 4294967295"
            );
        }
    }

    #[test]
    fn defaults_are_valid() {
        let s = Settings::load_with_env(None, false).unwrap();
        assert_eq!(s.batching.max_batch_size, 256);
        assert_eq!(s.input.avro_schemas.keys().next(), Some(&1));
        assert_eq!(s.model.device, DevicePreference::Cpu);
    }

    #[test]
    fn file_overrides_defaults() {
        let s = with_file("[batching]\nmax_batch_size = 64\n").unwrap();
        assert_eq!(s.batching.max_batch_size, 64);
        assert_eq!(s.batching.max_batch_delay, Duration::from_millis(5));
    }

    #[test]
    fn out_of_range_names_key_value_and_range() {
        let err = with_file("[batching]\nmax_batch_size = 0\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "config: batching.max_batch_size = 0 is not allowed: an integer from 1 to 65536"
        );
    }

    #[test]
    fn batching_mode_and_bounds_are_checked() {
        let s = with_file("[batching]\nmode = \"adaptive\"\nmin_batch_size = 8\n").unwrap();
        assert_eq!(s.batching.mode, BatchMode::Adaptive);
        let err = with_file("[batching]\nmode = \"dynamic\"\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "config: batching.mode = dynamic is not allowed: \"fixed\" or \"adaptive\""
        );
        let err = with_file("[batching]\nmax_batch_size = 16\nmin_batch_size = 32\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "config: batching.min_batch_size = 32 is not allowed: an integer from 1 to 16 (batching.max_batch_size)"
        );
        let err = with_file("[batching]\nlatency_target_ms = 0\n").unwrap_err();
        assert!(err.to_string().contains("batching.latency_target_ms = 0"));
    }

    #[test]
    fn leave_group_is_checked_against_the_membership() {
        let s = Settings::load_with_env(None, false).unwrap();
        assert_eq!(s.shutdown.leave_group, LeaveGroup::Always);
        let static_member = "[kafka]\ngroup_instance_id = \"streamscore-0\"\n";
        let s = with_file(&format!(
            "{static_member}[shutdown]\nleave_group = \"never\"\n"
        ))
        .unwrap();
        assert_eq!(s.shutdown.leave_group, LeaveGroup::Never);
        let err = with_file("[shutdown]\nleave_group = \"sometimes\"\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "config: shutdown.leave_group = sometimes is not allowed: \"always\" or \"never\""
        );
        let kip848 = format!("{static_member}[kafka.consumer]\ngroup_protocol = \"consumer\"\n");
        let err = with_file(&kip848).unwrap_err();
        assert!(err.to_string().contains("group.protocol"), "{err}");
        with_file(&format!("{kip848}[shutdown]\nleave_group = \"never\"\n")).unwrap();
    }

    #[test]
    fn bad_enum_names_choices() {
        let err = with_file("[model]\ndevice = \"tpu\"\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "config: model.device = tpu is not allowed: \"cpu\", \"cuda\" or \"auto\""
        );
    }

    #[test]
    fn wrong_type_and_unknown_key_are_one_line_naming_the_key() {
        let err = with_file("[batching]\nmax_batch_size = \"big\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("batching.max_batch_size") && err.contains("big"),
            "{err}"
        );
        assert!(!err.contains('\n'));
        let err = with_file("[batching]\nmax_batch_sise = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_batch_sise"), "{err}");
    }

    #[test]
    fn commit_interval_must_leave_room_before_transaction_timeout() {
        let err = with_file(
            "[kafka]\ntransaction_timeout_ms = 1000\n[transactions]\ncommit_interval_ms = 900\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("config: transactions.commit_interval_ms = 900 is not allowed"),
            "{err}"
        );
    }

    #[test]
    fn redacted_settings_hide_secret_properties() {
        let mut s = Settings::load_with_env(None, false).unwrap();
        s.kafka
            .properties
            .insert("sasl.password".into(), "hunter2".into());
        s.kafka
            .properties
            .insert("ssl_key_pem".into(), "-----BEGIN".into());
        s.kafka
            .properties
            .insert("security.protocol".into(), "SASL_SSL".into());
        s.kafka
            .consumer
            .insert("sasl_oauthbearer_client_secret".into(), "s3cret".into());
        let text = s.redacted().to_string();
        assert!(
            !text.contains("hunter2") && !text.contains("BEGIN") && !text.contains("s3cret"),
            "{text}"
        );
        assert!(text.contains("SASL_SSL") && text.contains("max_batch_size"));
    }

    #[test]
    fn exactly_once_properties_cannot_be_overridden_in_any_table() {
        for (toml, line) in [
            (
                "[kafka.consumer]\n\"isolation.level\" = \"read_uncommitted\"\n",
                "config: kafka.consumer.isolation.level = \"read_uncommitted\" is not allowed: exactly-once needs read_committed; this property cannot be overridden",
            ),
            (
                "[kafka.properties]\nenable_auto_commit = \"true\"\n",
                "config: kafka.properties.enable_auto_commit = \"true\" is not allowed: exactly-once commits offsets inside its transactions, so enable.auto.commit stays false; this property cannot be overridden",
            ),
            (
                "[kafka.consumer]\n\"enable.auto.offset.store\" = \"true\"\n",
                "config: kafka.consumer.enable.auto.offset.store = \"true\" is not allowed: exactly-once stores offsets only for records its transactions wrote, so enable.auto.offset.store stays false; this property cannot be overridden",
            ),
            (
                "[kafka.producer]\n\"transactional.id\" = \"other\"\n",
                "config: kafka.producer.transactional.id = \"other\" is not allowed: set kafka.transactional_id instead, the one identity that fences a zombie; this property cannot be overridden",
            ),
            (
                "[kafka.producer]\nenable_idempotence = \"false\"\n",
                "config: kafka.producer.enable_idempotence = \"false\" is not allowed: transactions need the idempotent producer; this property cannot be overridden",
            ),
            (
                "[kafka.consumer]\n\"auto.offset.reset\" = \"latest\"\n",
                "config: kafka.consumer.auto.offset.reset = \"latest\" is not allowed: a new group would skip every record written before it joined; earliest (or error) only",
            ),
            (
                "[kafka.properties]\n\"message.max.bytes\" = \"2000000\"\n",
                "config: kafka.properties.message.max.bytes = \"2000000\" is not allowed: set kafka.max_message_bytes instead, which the start-time topic check compares with the output topics; this property cannot be overridden",
            ),
            (
                "[kafka.producer]\n\"transaction.timeout.ms\" = \"900000\"\n",
                "config: kafka.producer.transaction.timeout.ms = \"900000\" is not allowed: set kafka.transaction_timeout_ms instead, which transactions.commit_interval_ms is checked against; this property cannot be overridden",
            ),
            (
                "[kafka.consumer]\n\"statistics.interval.ms\" = \"0\"\n",
                "config: kafka.consumer.statistics.interval.ms = \"0\" is not allowed: 1 or more: the consumer lag, the broker reachability of /readyz and the liveness signals come from librdkafka's statistics, which 0 turns off",
            ),
        ] {
            assert_eq!(with_file(toml).unwrap_err().to_string(), line, "{toml}");
        }
        // Our own values, and the other resets, are harmless to repeat.
        let s = with_file(
            "[kafka.consumer]\n\"isolation.level\" = \"read_committed\"\n\
             \"auto.offset.reset\" = \"earliest\"\nenable_auto_commit = \"false\"\n\
             [kafka.producer]\n\"enable.idempotence\" = \"true\"\n\"linger.ms\" = \"5\"\n",
        )
        .unwrap();
        assert_eq!(s.kafka.producer["linger.ms"], "5");
    }

    /// Every pinned name is refused for some value, in every table and in
    /// its `_` spelling too; a name off the list is not refused at all.
    #[test]
    fn every_pinned_property_is_refused_and_no_other() {
        let refused = |table: &str, key: &str, value: &str| {
            let props = BTreeMap::from([(key.to_owned(), value.to_owned())]);
            check_pinned(table, &props).is_err()
        };
        for name in PINNED_PROPERTIES {
            for table in ["properties", "consumer", "producer"] {
                for key in [name.to_string(), name.replace('.', "_")] {
                    assert!(
                        ["x", "0", "true", "false", "latest"]
                            .iter()
                            .any(|v| refused(table, &key, v)),
                        "kafka.{table}.{key} is never refused"
                    );
                }
            }
        }
        for other in [
            "linger.ms",
            "group.protocol",
            "security.protocol",
            "ISOLATION.LEVEL",
        ] {
            assert!(!refused("properties", other, "x"), "{other}");
        }
    }

    #[test]
    fn message_size_bounds_name_what_they_follow_from() {
        let err = with_file("[kafka]\nmax_message_bytes = 1060\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "config: kafka.max_message_bytes = 1060 is not allowed: an integer from 1061 to 1000000000 (librdkafka's least message.max.bytes, 1000, plus a 61-byte batch header)"
        );
        with_file("[kafka]\nmax_message_bytes = 1061\n[input]\nmax_record_bytes = 1061\n").unwrap();
        let err =
            with_file("[kafka]\nmax_message_bytes = 4096\n[input]\nmax_record_bytes = 4097\n")
                .unwrap_err()
                .to_string();
        assert_eq!(
            err,
            "config: input.max_record_bytes = 4097 is not allowed: an integer from 64 to 4096 (kafka.max_message_bytes)"
        );
    }

    #[test]
    fn input_and_output_topics_must_all_differ() {
        let err = with_file("[input]\ntopics = [\"a\", \"scores\"]\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "config: input.topics = [\"a\", \"scores\"] is not allowed: topics other than output.topic (\"scores\"): scoring its own output would loop"
        );
        let err = with_file("[input]\ntopics = [\"scores-dlq\"]\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "config: input.topics = [\"scores-dlq\"] is not allowed: topics other than output.dead_letter_topic (\"scores-dlq\"): scoring its own output would loop"
        );
        let err = with_file("[output]\ndead_letter_topic = \"scores\"\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "config: output.dead_letter_topic = scores is not allowed: a topic other than output.topic, so scores and dead letters stay apart"
        );
    }

    #[test]
    fn grace_period_is_checked() {
        let err = with_file("[shutdown]\ngrace_period_ms = 0\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "config: shutdown.grace_period_ms = 0 is not allowed: an integer from 1000 to 600000"
        );
    }

    #[test]
    fn integers_refuse_fractions_and_other_types() {
        for (toml, line) in [
            (
                "[batching]\nmax_batch_size = 12.5\n",
                "config: batching.max_batch_size = 12.5 is not allowed: an integer from 1 to 65536",
            ),
            (
                "[batching]\nmax_batch_size = 13.0\n",
                "config: batching.max_batch_size = 13.0 is not allowed: an integer from 1 to 65536",
            ),
            (
                "[model]\nsessions = true\n",
                "config: model.sessions = true is not allowed: an integer from 1 to 64",
            ),
            (
                "[shutdown]\ngrace_period_ms = \"yes\"\n",
                "config: shutdown.grace_period_ms = \"yes\" is not allowed: an integer from 1000 to 600000",
            ),
        ] {
            assert_eq!(with_file(toml).unwrap_err().to_string(), line, "{toml}");
        }
        // An integer in a string (as an environment variable gives it) is an integer.
        let s = with_file("[batching]\nmax_batch_size = \"64\"\n").unwrap();
        assert_eq!(s.batching.max_batch_size, 64);
    }

    /// The ends of every declared range are enforced, one value outside each.
    #[test]
    fn every_declared_range_is_enforced_at_both_ends() {
        let defaults = serde_json::to_value(Settings::load_with_env(None, false).unwrap()).unwrap();
        for r in RANGES {
            let max = match r.max {
                Max::Value(v) => v,
                Max::Key(other) => integer_at(&defaults, other).unwrap(),
            };
            let (section, name) = r.key.split_once('.').unwrap();
            let mut outside = vec![max + 1];
            if r.min > 0 {
                outside.push(r.min - 1);
            }
            for value in outside {
                // Past u32::MAX the type refuses before the range does.
                if value > u64::from(u32::MAX) && max == u64::from(u32::MAX) {
                    continue;
                }
                let Err(err) = with_file(&format!("[{section}]\n{name} = {value}\n")) else {
                    panic!("{} = {value} was accepted", r.key);
                };
                let err = err.to_string();
                assert!(
                    err.starts_with(&format!(
                        "config: {} = {value} is not allowed: an integer from {} to {max}",
                        r.key, r.min
                    )),
                    "{}: {err}",
                    r.key
                );
            }
        }
    }

    /// Every integer setting has a declared range (a new one cannot be left out).
    #[test]
    fn every_integer_setting_is_declared() {
        let defaults = serde_json::to_value(Settings::load_with_env(None, false).unwrap()).unwrap();
        fn walk(path: &str, value: &serde_json::Value, integers: &mut Vec<String>) {
            match value {
                serde_json::Value::Object(table) => {
                    for (name, value) in table {
                        let path = if path.is_empty() {
                            name.clone()
                        } else {
                            format!("{path}.{name}")
                        };
                        walk(&path, value, integers);
                    }
                }
                v if v.is_u64() || v.is_i64() => integers.push(path.to_owned()),
                _ => {}
            }
        }
        let mut integers = Vec::new();
        walk("", &defaults, &mut integers);
        let mut declared: Vec<String> = RANGES.iter().map(|r| r.key.to_owned()).collect();
        integers.sort();
        declared.sort();
        assert_eq!(integers, declared);
    }

    fn integer_at(settings: &serde_json::Value, key: &str) -> Option<u64> {
        settings
            .pointer(&format!("/{}", key.replace('.', "/")))
            .and_then(serde_json::Value::as_u64)
    }

    /// The range each key's comment in config/default.toml documents, as
    /// `MIN..=MAX` (MAX a number or another key).
    fn documented_ranges() -> BTreeMap<String, (u64, String)> {
        let mut found = BTreeMap::new();
        let (mut section, mut comments) = (String::new(), Vec::new());
        for line in DEFAULT_TOML.lines().map(str::trim) {
            if let Some(comment) = line.strip_prefix('#') {
                comments.push(comment.to_owned());
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
            } else if let Some((name, _)) = line.split_once(" = ") {
                let text = comments.join(" ");
                let mut ranges = text.match_indices("..=").map(|(at, _)| {
                    let min: String = text[..at]
                        .chars()
                        .rev()
                        .take_while(char::is_ascii_digit)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    let max: String = text[at + 3..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
                        .collect();
                    (min.parse::<u64>().unwrap(), max)
                });
                if let Some(range) = ranges.next() {
                    assert!(
                        ranges.next().is_none(),
                        "{section}.{name}: two ranges in {text}"
                    );
                    found.insert(format!("{section}.{}", name.trim()), range);
                }
            }
            comments.clear();
        }
        found
    }

    #[test]
    fn default_toml_documents_every_declared_range() {
        let documented = documented_ranges();
        let declared: BTreeMap<String, (u64, String)> = RANGES
            .iter()
            .map(|r| {
                let max = match r.max {
                    Max::Value(v) => v.to_string(),
                    Max::Key(k) => k.to_owned(),
                };
                (r.key.to_owned(), (r.min, max))
            })
            .collect();
        assert_eq!(documented, declared);
    }

    /// Chart value path (e.g. `batching.maxBatchSize`) by config key, from
    /// the ConfigMap template's `key = {{ .Values.x.y | … }}` lines.
    fn chart_values_by_key() -> BTreeMap<String, String> {
        let template = include_str!("../../../helm/streamscore/templates/configmap.yaml");
        let mut map = BTreeMap::new();
        let mut section = String::new();
        for line in template.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
            } else if let Some((name, rhs)) = line.split_once(" = ")
                && let Some(path) = rhs.strip_prefix("{{ .Values.")
            {
                let path: String = path
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '.')
                    .collect();
                map.insert(format!("{section}.{name}"), path);
            }
        }
        map
    }

    fn schema_of(path: &str) -> serde_json::Value {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../../helm/streamscore/values.schema.json"))
                .unwrap();
        let mut node = &schema;
        for part in path.split('.') {
            node = &node["properties"][part];
        }
        node.clone()
    }

    fn static_max(r: &Range) -> u64 {
        match r.max {
            Max::Value(v) => v,
            Max::Key(other) => static_max(RANGES.iter().find(|o| o.key == other).unwrap()),
        }
    }

    #[test]
    fn chart_schema_matches_every_declared_range() {
        let chart = chart_values_by_key();
        let mut compared = 0;
        for (key, path) in &chart {
            let schema = schema_of(path);
            if key == "model.threshold" {
                assert_eq!(
                    schema["minimum"].as_f64(),
                    Some(THRESHOLD_RANGE.0),
                    "{path}"
                );
                assert_eq!(
                    schema["maximum"].as_f64(),
                    Some(THRESHOLD_RANGE.1),
                    "{path}"
                );
                continue;
            }
            let Some(r) = RANGES.iter().find(|r| r.key == key) else {
                assert!(
                    schema["type"] != "integer",
                    "{path} is an integer in the chart but {key} has no declared range"
                );
                continue;
            };
            let found = (
                schema["type"].as_str(),
                schema["minimum"].as_u64(),
                schema["maximum"].as_u64(),
            );
            assert_eq!(
                found,
                (Some("integer"), Some(r.min), Some(static_max(r))),
                "values.schema.json {path} against {key}"
            );
            compared += 1;
        }
        // The template parse found the chart's integer settings.
        assert!(
            compared >= 13,
            "only {compared} chart values compared: {chart:?}"
        );
    }

    #[test]
    fn missing_config_file_is_named() {
        let err = Settings::load_with_env(Some(Path::new("/no/such.toml")), false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config: config file /no/such.toml does not exist"
        );
    }
}
