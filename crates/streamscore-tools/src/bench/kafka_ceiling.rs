//! Ceiling (a): the raw Kafka path. The same consumer and transactional
//! producer settings as the pipeline, the same commit interval, exactly-once
//! on, and no work at all: each record's bytes are produced as they came.
//! No pipeline can be faster than this on the same broker.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use crate::bench::BenchError;
use streamscore::Settings;
use streamscore::clients::await_deliveries;
use streamscore::clients::{consumer_config, producer_config};

/// How long the path may stay without a record before the run is given up.
const STALL: Duration = Duration::from_secs(60);

/// Rows moved and the time from the first record read to the last commit.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    pub rows: u64,
    pub seconds: f64,
}

impl Throughput {
    pub fn rows_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.rows as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Copies `expected` records from the settings' input topics to `output`,
/// in transactions of one commit interval each.
pub(super) fn raw_path(
    settings: &Settings,
    output: &str,
    expected: u64,
) -> Result<Throughput, BenchError> {
    let kafka = |e: KafkaError| BenchError::Kafka(e.to_string());
    let consumer: BaseConsumer = consumer_config(settings).create().map_err(kafka)?;
    let producer: ThreadedProducer<DefaultProducerContext> =
        producer_config(settings).create().map_err(kafka)?;
    let timeout = settings.kafka.request_timeout;
    producer.init_transactions(timeout).map_err(kafka)?;
    let topics: Vec<&str> = settings.input.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).map_err(kafka)?;

    let interval = settings.transactions.commit_interval;
    let mut offsets: HashMap<(String, i32), i64> = HashMap::new();
    let (mut moved, mut committed) = (0u64, 0u64);
    let mut first: Option<Instant> = None;
    let mut began: Option<Instant> = None;
    let mut last_record = Instant::now();
    while committed < expected {
        if let Some(m) = consumer.poll(Duration::from_millis(10)) {
            let m = m.map_err(kafka)?;
            last_record = Instant::now();
            first.get_or_insert(last_record);
            if began.is_none() {
                producer.begin_transaction().map_err(kafka)?;
                began = Some(Instant::now());
            }
            let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(output);
            if let Some(k) = m.key() {
                record = record.key(k);
            }
            if let Some(v) = m.payload() {
                record = record.payload(v);
            }
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err((e, _)) => return Err(kafka(e)),
                }
            }
            offsets.insert((m.topic().to_owned(), m.partition()), m.offset() + 1);
            moved += 1;
        } else if last_record.elapsed() > STALL {
            return Err(BenchError::Stalled {
                phase: "kafka ceiling",
                done: committed,
                expected,
            });
        }
        let due = began.is_some_and(|b| b.elapsed() >= interval) || (moved >= expected);
        if due && began.is_some() {
            let mut tpl = TopicPartitionList::with_capacity(offsets.len());
            for ((topic, partition), next) in &offsets {
                tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))
                    .map_err(kafka)?;
            }
            let group = consumer
                .group_metadata()
                .ok_or_else(|| BenchError::Kafka("the consumer has no group metadata".into()))?;
            producer
                .send_offsets_to_transaction(&tpl, &group, timeout)
                .map_err(kafka)?;
            await_deliveries(&producer, timeout);
            producer.commit_transaction(timeout).map_err(kafka)?;
            committed = moved;
            began = None;
        }
    }
    let seconds = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    consumer.unsubscribe();
    Ok(Throughput {
        rows: committed,
        seconds,
    })
}
