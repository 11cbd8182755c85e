//! A plain (non-transactional, idempotent) producer for synthetic input, as an
//! upstream team would run one.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use crate::events::{BadKind, EventFactory, OutRecord};
use streamscore::Settings;
use streamscore::clients::{Role, TOOL_MESSAGE_TIMEOUT_MS, client_config};

pub type Publisher = ThreadedProducer<Deliveries>;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot create the Kafka producer: {0}")]
    Create(KafkaError),
    #[error("cannot enqueue a record: {0}")]
    Enqueue(KafkaError),
    #[error("{failed} of {sent} records were not delivered: {errors}")]
    NotDelivered {
        failed: u64,
        sent: u64,
        /// Each distinct delivery error with how many records it failed.
        errors: String,
    },
    #[error(
        "{pending} of {sent} records were still unacknowledged after {} s",
        FLUSH_TIMEOUT.as_secs()
    )]
    Unacknowledged { pending: i32, sent: u64 },
}

/// Counts librdkafka's delivery reports, one per record, so that a record
/// the broker never acknowledged is never counted as published.
#[derive(Default)]
pub struct Deliveries {
    sent: AtomicU64,
    failed: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
            *errors.entry(error.to_string()).or_default() += 1;
        }
    }
}

impl Deliveries {
    fn outcome(&self) -> Result<u64, PublishError> {
        let sent = self.sent.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        if failed == 0 {
            return Ok(sent);
        }
        let errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        let errors = errors
            .iter()
            .map(|(e, n)| format!("{e} ({n})"))
            .collect::<Vec<_>>()
            .join("; ");
        Err(PublishError::NotDelivered {
            failed,
            sent,
            errors,
        })
    }
}

/// A plain idempotent producer that reaches the cluster as the processor
/// does (bootstrap and `kafka.properties`: TLS, SASL).
pub fn publisher(settings: &Settings) -> Result<Publisher, PublishError> {
    client_config(settings, Role::ToolProducer)
        .create_with_context(Deliveries::default())
        .map_err(PublishError::Create)
}

/// Longer than a record may wait for its acknowledgement, so that a flush
/// ends with every record reported, delivered or failed.
const FLUSH_TIMEOUT: Duration = Duration::from_millis(TOOL_MESSAGE_TIMEOUT_MS + 30_000);

/// Enqueues one record, waiting while the local queue is full.
pub fn publish(producer: &Publisher, topic: &str, record: &OutRecord) -> Result<(), PublishError> {
    send(producer, base_record(topic, record))
}

/// As [`publish`], to one partition regardless of the key: for a partition
/// the key would never reach (e.g. one just added to the topic).
pub fn publish_to_partition(
    producer: &Publisher,
    topic: &str,
    partition: i32,
    record: &OutRecord,
) -> Result<(), PublishError> {
    send(producer, base_record(topic, record).partition(partition))
}

fn base_record<'a>(topic: &'a str, record: &'a OutRecord) -> BaseRecord<'a, [u8], [u8]> {
    let base: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).key(record.key.as_slice());
    match record.value.as_deref() {
        Some(v) => base.payload(v),
        None => base,
    }
}

fn send(producer: &Publisher, mut base: BaseRecord<'_, [u8], [u8]>) -> Result<(), PublishError> {
    loop {
        match producer.send(base) {
            Ok(()) => {
                producer.context().sent.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                base = back;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err((e, _)) => return Err(PublishError::Enqueue(e)),
        }
    }
}

/// Waits until every record enqueued so far has its delivery report; returns
/// how many were enqueued, or how many of them failed and why.
pub fn flush(producer: &Publisher) -> Result<u64, PublishError> {
    if producer.flush(FLUSH_TIMEOUT).is_err() {
        return Err(PublishError::Unacknowledged {
            pending: producer.in_flight_count(),
            sent: producer.context().sent.load(Ordering::Relaxed),
        });
    }
    producer.context().outcome()
}

/// A steady stream: how many records (None: until stopped), how fast, and how
/// many in a thousand are deliberately bad.
pub struct StreamPlan {
    pub events: Option<u64>,
    pub rate: u64,
    pub bad_per_mille: u64,
}

/// Whether record `n` of a stream is bad, and which kind: bad when the
/// running count of bad records steps up, so they are spread evenly, and each
/// bad one takes the next kind in turn.
pub fn bad_kind_at(n: u64, bad_per_mille: u64) -> Option<BadKind> {
    let bad_before = n * bad_per_mille / 1000;
    ((n + 1) * bad_per_mille / 1000 > bad_before)
        .then(|| BadKind::ALL[bad_before as usize % BadKind::ALL.len()])
}

/// Publishes the plan's records at its rate until done or `stop`; bad ones
/// are spread evenly and cycle through every [`BadKind`]. `produced` counts
/// as it goes; returns the total once everything is acknowledged.
pub fn stream(
    producer: &Publisher,
    topic: &str,
    mut factory: EventFactory,
    plan: &StreamPlan,
    produced: &AtomicU64,
    stop: &AtomicBool,
) -> Result<u64, PublishError> {
    let rate = plan.rate.max(1) as f64;
    let started = Instant::now();
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) && plan.events.is_none_or(|n| sent < n) {
        if sent as f64 >= started.elapsed().as_secs_f64() * rate {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        let bad = bad_kind_at(sent, plan.bad_per_mille);
        publish(producer, topic, &factory.next(bad))?;
        sent += 1;
        produced.store(sent, Ordering::Relaxed);
    }
    flush(producer).map(|_| sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_records_are_spread_evenly_and_cycle_through_every_kind() {
        let bad: Vec<(u64, BadKind)> = (0..1000)
            .filter_map(|n| bad_kind_at(n, 30).map(|k| (n, k)))
            .collect();
        assert_eq!(bad.len(), 30);
        assert!(
            bad.windows(2)
                .all(|w| (33..=34).contains(&(w[1].0 - w[0].0))),
            "{bad:?}"
        );
        for (i, kind) in BadKind::ALL.iter().enumerate() {
            assert_eq!(bad[i].1, *kind);
        }
        assert_eq!((0..1000).filter_map(|n| bad_kind_at(n, 0)).count(), 0);
    }
}
