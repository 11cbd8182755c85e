//! A plain (non-transactional, idempotent) producer for synthetic input, as an
//! upstream team would run one.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use crate::demo::events::{BadKind, EventFactory, OutRecord};

pub type Publisher = ThreadedProducer<DefaultProducerContext>;

pub fn publisher(bootstrap: &str) -> Result<Publisher, KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
}

/// Enqueues one record, waiting while the local queue is full.
pub fn publish(producer: &Publisher, topic: &str, record: &OutRecord) -> Result<(), KafkaError> {
    send(producer, base_record(topic, record))
}

/// As [`publish`], to one partition regardless of the key: for a partition
/// the key would never reach (e.g. one just added to the topic).
pub fn publish_to_partition(
    producer: &Publisher,
    topic: &str,
    partition: i32,
    record: &OutRecord,
) -> Result<(), KafkaError> {
    send(producer, base_record(topic, record).partition(partition))
}

fn base_record<'a>(topic: &'a str, record: &'a OutRecord) -> BaseRecord<'a, [u8], [u8]> {
    let base: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).key(record.key.as_slice());
    match record.value.as_deref() {
        Some(v) => base.payload(v),
        None => base,
    }
}

fn send(producer: &Publisher, mut base: BaseRecord<'_, [u8], [u8]>) -> Result<(), KafkaError> {
    loop {
        match producer.send(base) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                base = back;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Waits until everything enqueued is acknowledged by the broker.
pub fn flush(producer: &Publisher) -> Result<(), KafkaError> {
    producer.flush(Duration::from_secs(60))
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
) -> Result<u64, KafkaError> {
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
    // A broker that was down for a while needs longer than one flush timeout.
    let mut flushed = flush(producer);
    for _ in 0..4 {
        if flushed.is_ok() {
            break;
        }
        flushed = flush(producer);
    }
    flushed.map(|()| sent)
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
