//! A plain (non-transactional, idempotent) producer for synthetic input, as an
//! upstream team would run one.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::demo::events::OutRecord;

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
    let mut base: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).key(record.key.as_slice());
    if let Some(v) = record.value.as_deref() {
        base = base.payload(v);
    }
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
