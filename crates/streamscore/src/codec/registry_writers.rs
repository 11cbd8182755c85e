//! Writer schemas from a schema registry, by the id in a record's framing:
//! fetched once, parsed once, compiled once, and cached within a memory
//! bound rather than a count of ids.
//!
//! A record is dead-lettered for its schema only when the registry answered
//! about the id: it has none (`40403`), or what it has is not an Avro schema
//! this processor can parse. A registry that does not answer holds the
//! record (and the source stage behind it) with backoff until it does, or
//! until `input.schema_registry.max_wait_ms`, when the processor stops and
//! its restart reads the record again.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apache_avro::Schema;

use super::plan::RecordPlan;
use crate::registry::{RegistryClient, RegistryError, RegistryStatus};
use crate::telemetry::metrics::SCHEMA_REGISTRY_FETCHES;

/// First pause between tries of a registry that does not answer; doubled
/// each time, up to [`BACKOFF_MAX`].
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How long "the registry has no such id" is believed before it is asked
/// again: a flood of records with one bad id asks once, and an id registered
/// a little after its first record is not refused for ever.
const NOT_FOUND_FOR: Duration = Duration::from_secs(30);

/// A writer schema, and its compiled plan where the plan handles it.
pub(crate) struct Writer {
    pub schema: Schema,
    pub plan: Option<RecordPlan>,
    /// The schema's text length: what the memory bound weighs.
    text_bytes: usize,
}

#[derive(Clone)]
enum Cached {
    Found(Arc<Writer>),
    /// The registry's schema under this id cannot be read here (believed
    /// for [`NOT_FOUND_FOR`] too: a fixed registry, or a reference
    /// registered late, is asked again).
    Invalid(Arc<str>, Instant),
    /// The registry answered that it has no schema with this id.
    NotFound(Instant),
}

/// Weighs an entry by an estimate of the memory it holds: a parsed schema
/// and its plan take several times the schema's text.
#[derive(Clone)]
struct Weight;

impl quick_cache::Weighter<u32, Cached> for Weight {
    fn weight(&self, _id: &u32, value: &Cached) -> u64 {
        match value {
            Cached::Found(w) => 512 + 8 * w.text_bytes as u64,
            Cached::Invalid(m, _) => 64 + m.len() as u64,
            Cached::NotFound(_) => 64,
        }
    }
}

/// Why no writer schema came for an id.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WriterError {
    #[error("the schema registry has no schema id {0}")]
    NotFound(u32),
    #[error("schema id {id} in the schema registry cannot be read: {reason}")]
    Invalid { id: u32, reason: Arc<str> },
    /// Not the record's fault: the processor must stop, not dead-letter it.
    #[error(
        "the schema registry did not answer for schema id {id} within input.schema_registry.max_wait_ms ({waited_ms} ms); the last try: {last}"
    )]
    Unavailable {
        id: u32,
        waited_ms: u128,
        last: String,
    },
    #[error("stopped while waiting for the schema registry (schema id {0})")]
    Stopped(u32),
}

pub struct RegistryWriters {
    client: RegistryClient,
    cache: quick_cache::sync::Cache<u32, Cached, Weight>,
    /// One fetch at a time: threads after the same id find it cached.
    fetching: Mutex<()>,
    status: Arc<RegistryStatus>,
    max_wait: Duration,
}

impl RegistryWriters {
    pub fn new(
        client: RegistryClient,
        status: Arc<RegistryStatus>,
        max_wait: Duration,
        max_bytes: u64,
    ) -> Self {
        Self {
            client,
            cache: quick_cache::sync::Cache::with_options(
                quick_cache::OptionsBuilder::new()
                    // One shard: the whole bound for every schema (each
                    // shard holds only its share, and a schema heavier
                    // than that share would never be cached). Lookups are
                    // a read lock, and a drain's records mostly share an id.
                    .shards(1)
                    .estimated_items_capacity(256)
                    .weight_capacity(max_bytes)
                    .build()
                    .expect("every option is set"),
                Weight,
                quick_cache::DefaultHashBuilder::default(),
                quick_cache::sync::DefaultLifecycle::default(),
            ),
            fetching: Mutex::new(()),
            status,
            max_wait,
        }
    }

    /// The writer schema of `id`, fetched if it is not cached; `compile`
    /// makes its plan (once, when fetched).
    pub(crate) fn get(
        &self,
        id: u32,
        compile: &dyn Fn(&Schema) -> Option<RecordPlan>,
    ) -> Result<Arc<Writer>, WriterError> {
        if let Some(known) = self.cached(id) {
            return known;
        }
        // From here the caller waits on the registry (or on another
        // thread's request to it): the source stage is held, not stuck.
        let _waiting = self.status.wait();
        let _one_at_a_time = self.fetching.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(known) = self.cached(id) {
            return known;
        }
        let fetched = self.fetch(id)?;
        let entry = match fetched {
            None => Cached::NotFound(Instant::now()),
            Some(registered) => match read(&registered) {
                Ok(schema) => {
                    let plan = compile(&schema);
                    Cached::Found(Arc::new(Writer {
                        schema,
                        plan,
                        text_bytes: registered.schema.len(),
                    }))
                }
                Err(reason) => {
                    tracing::warn!(
                        schema_id = id,
                        "schema id {id} in the schema registry cannot be read: {reason}; its records go to the dead-letter topic"
                    );
                    Cached::Invalid(reason.into(), Instant::now())
                }
            },
        };
        let outcome = match &entry {
            Cached::Found(_) => "found",
            Cached::Invalid(..) => "invalid",
            Cached::NotFound(_) => "not_found",
        };
        metrics::counter!(SCHEMA_REGISTRY_FETCHES, "outcome" => outcome).increment(1);
        self.cache.insert(id, entry.clone());
        answer(id, entry)
    }

    fn cached(&self, id: u32) -> Option<Result<Arc<Writer>, WriterError>> {
        match self.cache.get(&id)? {
            Cached::NotFound(at) | Cached::Invalid(_, at) if at.elapsed() >= NOT_FOUND_FOR => None,
            entry => Some(answer(id, entry)),
        }
    }

    /// Asks until the registry answers about `id`, with backoff, for at most
    /// `max_wait`. Any failure to answer (no connection, a timeout, a 5xx, a
    /// refusal such as 401) is waited out: none of them says the record is bad.
    fn fetch(&self, id: u32) -> Result<Option<crate::registry::RegisteredSchema>, WriterError> {
        let started = Instant::now();
        let mut backoff = BACKOFF_FIRST;
        let mut warned = false;
        loop {
            // Checked before every request: a thread that queued behind one
            // that gave up (or behind a stop) does not wait its own round.
            if self.status.stopping() {
                return Err(WriterError::Stopped(id));
            }
            if self.status.given_up() {
                return Err(WriterError::Unavailable {
                    id,
                    waited_ms: started.elapsed().as_millis(),
                    last: "an earlier record's wait for the registry reached max_wait_ms".into(),
                });
            }
            let last: RegistryError = match self.client.schema_by_id(id) {
                Ok(answer) => {
                    self.status.answered();
                    return Ok(answer);
                }
                Err(e) => e,
            };
            self.status.unanswered();
            if !warned {
                tracing::warn!(
                    schema_id = id,
                    "waiting for the schema registry (schema id {id} is not cached): {last}"
                );
                warned = true;
            }
            let waited = started.elapsed();
            if waited + backoff > self.max_wait {
                self.status.give_up();
                metrics::counter!(SCHEMA_REGISTRY_FETCHES, "outcome" => "unanswered").increment(1);
                return Err(WriterError::Unavailable {
                    id,
                    waited_ms: waited.as_millis(),
                    last: last.to_string(),
                });
            }
            if !self.pause(backoff) {
                return Err(WriterError::Stopped(id));
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Sleeps `how_long` in short slices; false when the pipeline stops meanwhile.
    fn pause(&self, how_long: Duration) -> bool {
        let until = Instant::now() + how_long;
        while Instant::now() < until {
            if self.status.stopping() {
                return false;
            }
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
        }
        !self.status.stopping()
    }
}

fn answer(id: u32, entry: Cached) -> Result<Arc<Writer>, WriterError> {
    match entry {
        Cached::Found(w) => Ok(w),
        Cached::Invalid(reason, _) => Err(WriterError::Invalid { id, reason }),
        Cached::NotFound(_) => Err(WriterError::NotFound(id)),
    }
}

/// An Avro schema from the registry's answer.
fn read(registered: &crate::registry::RegisteredSchema) -> Result<Schema, String> {
    match registered.schema_type.as_deref() {
        None | Some("AVRO") => {}
        Some(other) => return Err(format!("it is a {other} schema; the input is Avro")),
    }
    Schema::parse_str(&registered.schema).map_err(|e| format!("not a valid Avro schema: {e}"))
}
