//! Whether a transaction whose commit went unanswered committed after all,
//! read from the transaction's own output.
//!
//! The group coordinator cannot be trusted with that question in a cluster
//! that is failing over: a three-node run with two nodes down asked it, got
//! the offsets of the commit before, rewound, and scored a transaction that
//! had landed a second time. The commit or abort marker on an output
//! partition is the ground truth: a read_committed reader sees one of the
//! transaction's records only if it committed, skips it if it aborted, and
//! cannot get past it while it is undecided (the last stable offset stays
//! at or below it). A partition leader that lags can only make the reader
//! wait, never show it the wrong outcome.
//!
//! The record read back is the transaction's witness: its first delivery the
//! broker acknowledged, recorded by the producer's delivery reports. A
//! transaction with no acknowledged record cannot have committed: the
//! producer flushes every record, and serves every delivery report, before
//! it asks the coordinator to commit.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

/// One record the broker acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delivered {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// The first acknowledged record of the newest transaction that has one,
/// shared by every producer the sink makes (a replacement's reports land in
/// the same place). Transactions are numbered from 1 by the sink, and each
/// record carries its transaction's number as its delivery opaque, so a late
/// report of an earlier transaction can never stand for a later one.
#[derive(Debug, Default)]
pub(crate) struct Witness {
    /// The transaction `first` belongs to: the fast path of every report
    /// after the first reads only this.
    newest: AtomicU64,
    first: Mutex<Option<(u64, Delivered)>>,
}

impl Witness {
    pub(crate) fn note(&self, transaction: u64, topic: &str, partition: i32, offset: i64) {
        if self.newest.load(Ordering::Acquire) >= transaction {
            return;
        }
        let mut first = self.first.lock().unwrap_or_else(|p| p.into_inner());
        if first.as_ref().is_none_or(|(t, _)| *t < transaction) {
            *first = Some((
                transaction,
                Delivered {
                    topic: topic.to_owned(),
                    partition,
                    offset,
                },
            ));
            self.newest.store(transaction, Ordering::Release);
        }
    }

    /// The witness of `transaction`, if one of its records was acknowledged.
    pub(crate) fn of(&self, transaction: u64) -> Option<Delivered> {
        let first = self.first.lock().unwrap_or_else(|p| p.into_inner());
        first
            .as_ref()
            .filter(|(t, _)| *t == transaction)
            .map(|(_, d)| d.clone())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OutcomeError {
    #[error("cannot create the reader of transaction outcomes: {0}")]
    Client(KafkaError),
    #[error(
        "the principal may not Read output topic {topic} ({error}), where a transaction's outcome is read back when a commit's answer is lost; grant it Read, as `streamscore acls` prints"
    )]
    Unauthorized { topic: String, error: KafkaError },
    #[error(
        "{topic} [{partition}] showed no outcome at offset {offset} within {waited:?} (last answer: {last})"
    )]
    Undecided {
        topic: String,
        partition: i32,
        offset: i64,
        waited: Duration,
        last: String,
    },
}

/// Reads `witness` back with a read_committed reader made from `config`:
/// true if its transaction committed, false if it aborted. Waits up to
/// `patience` for the partition's last stable offset to pass it.
pub(crate) fn committed(
    config: &ClientConfig,
    witness: &Delivered,
    timeout: Duration,
    patience: Duration,
) -> Result<bool, OutcomeError> {
    let reader: BaseConsumer<Quiet> = config
        .create_with_context(Quiet)
        .map_err(OutcomeError::Client)?;
    let started = Instant::now();
    loop {
        let last = match decided(&reader, witness, timeout) {
            Ok(Some(landed)) => return Ok(landed),
            Ok(None) => "the transaction is still open there".to_owned(),
            Err(error) if refused(&error) => {
                return Err(OutcomeError::Unauthorized {
                    topic: witness.topic.clone(),
                    error,
                });
            }
            Err(error) => {
                tracing::warn!(%error, topic = %witness.topic, partition = witness.partition, "cannot read a transaction's outcome yet; retrying");
                error.to_string()
            }
        };
        if started.elapsed() > patience {
            return Err(OutcomeError::Undecided {
                topic: witness.topic.clone(),
                partition: witness.partition,
                offset: witness.offset,
                waited: started.elapsed(),
                last,
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The reader's client context: the end of the partition, which it asks
/// librdkafka to report, is an answer here, not an error to log.
struct Quiet;

impl ClientContext for Quiet {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) {
            tracing::debug!(%error, reason, "the outcome reader reached the end of the partition");
        } else {
            tracing::warn!(%error, reason, "the outcome reader's client reported an error");
        }
    }
}

impl ConsumerContext for Quiet {}

/// One look: `None` while the last stable offset has not passed the witness.
fn decided(
    reader: &BaseConsumer<Quiet>,
    witness: &Delivered,
    timeout: Duration,
) -> Result<Option<bool>, KafkaError> {
    // A read_committed client's ListOffsets asks for the last stable offset.
    let (_, stable) = reader.fetch_watermarks(&witness.topic, witness.partition, timeout)?;
    if stable <= witness.offset {
        return Ok(None);
    }
    let mut at = TopicPartitionList::with_capacity(1);
    at.add_partition_offset(
        &witness.topic,
        witness.partition,
        Offset::Offset(witness.offset),
    )?;
    reader.assign(&at)?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match reader.poll(Duration::from_millis(100)) {
            None => {}
            // Committed: the witness itself. Aborted: a later record, the
            // witness filtered out.
            Some(Ok(message)) => return Ok(Some(message.offset() == witness.offset)),
            // The end (the last stable offset) reached from the witness,
            // which is below it, without the witness: filtered out. Asked
            // again, in case a new leader's stable offset had not caught up.
            Some(Err(KafkaError::PartitionEOF(_))) => {
                let (_, stable) =
                    reader.fetch_watermarks(&witness.topic, witness.partition, timeout)?;
                return Ok((stable > witness.offset).then_some(false));
            }
            Some(Err(error)) => return Err(error),
        }
    }
    Err(KafkaError::MessageConsumption(
        RDKafkaErrorCode::RequestTimedOut,
    ))
}

fn refused(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_report_of_an_earlier_transaction_never_stands_for_a_later_one() {
        let w = Witness::default();
        assert_eq!(w.of(1), None);
        w.note(1, "s", 0, 10);
        w.note(1, "s", 1, 11);
        assert_eq!(w.of(1).map(|d| d.offset), Some(10));
        // Transaction 2 had no acknowledged record yet; 1's late report
        // changes nothing.
        w.note(1, "s", 0, 12);
        assert_eq!(w.of(2), None);
        w.note(2, "dlq", 3, 40);
        w.note(1, "s", 0, 13);
        assert_eq!(
            w.of(2),
            Some(Delivered {
                topic: "dlq".into(),
                partition: 3,
                offset: 40
            })
        );
        assert_eq!(w.of(1), None);
    }
}
