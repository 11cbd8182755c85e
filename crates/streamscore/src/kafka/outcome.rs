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
///
/// Only a report with an offset can be read back. librdkafka acknowledges
/// some records without one (acknowledged implicitly by a later record's
/// answer, or answered DUPLICATE_SEQUENCE_NUMBER after a retry): those are
/// counted as acknowledged, so a transaction with only such records is not
/// taken for one that cannot have landed.
#[derive(Debug, Default)]
pub(crate) struct Witness {
    /// The transaction `first` belongs to: the fast path of every report
    /// after the first reads only this.
    newest: AtomicU64,
    first: Mutex<Option<(u64, Delivered)>>,
    /// The newest transaction with any record acknowledged.
    acknowledged: AtomicU64,
}

/// What the delivery reports say of one transaction.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Acknowledged {
    /// Its first record acknowledged with an offset.
    Witness(Delivered),
    /// Records acknowledged, none with an offset.
    WithoutOffset,
    /// None of its records acknowledged: it cannot have committed.
    Nothing,
}

impl Witness {
    pub(crate) fn note(&self, transaction: u64, topic: &str, partition: i32, offset: i64) {
        if self.acknowledged.load(Ordering::Acquire) < transaction {
            self.acknowledged.fetch_max(transaction, Ordering::AcqRel);
        }
        if offset < 0 || self.newest.load(Ordering::Acquire) >= transaction {
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

    /// What was acknowledged of `transaction`.
    pub(crate) fn of(&self, transaction: u64) -> Acknowledged {
        let first = self.first.lock().unwrap_or_else(|p| p.into_inner());
        match first.as_ref() {
            Some((t, d)) if *t == transaction => Acknowledged::Witness(d.clone()),
            _ if self.acknowledged.load(Ordering::Acquire) == transaction => {
                Acknowledged::WithoutOffset
            }
            _ => Acknowledged::Nothing,
        }
    }
}

/// Why the outcome of an unanswered commit could not be read.
#[derive(Debug, thiserror::Error)]
pub enum OutcomeError {
    #[error("cannot create the reader of transaction outcomes: {0}")]
    Client(KafkaError),
    #[error(
        "the principal may not Read output topic {topic} ({error}), where a transaction's outcome is read back when a commit's answer is lost; grant it Read, as `streamscore acls` prints"
    )]
    Unauthorized { topic: String, error: KafkaError },
    #[error(
        "the broker acknowledged the transaction's records without their offsets (after retries), so none can be read back, and the group coordinator's committed offsets gave no clear answer"
    )]
    NoWitness,
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
/// `patience` for the partition's last stable offset to pass it: held back
/// by this transaction while the coordinator writes its markers, or by
/// another producer's open transaction on the same partition (another
/// replica's, up to the transaction timeout). No call runs past `patience`.
pub(crate) fn committed(
    config: &ClientConfig,
    witness: &Delivered,
    timeout: Duration,
    patience: Duration,
) -> Result<bool, OutcomeError> {
    let reader: BaseConsumer<Quiet> = config
        .create_with_context(Quiet)
        .map_err(OutcomeError::Client)?;
    let deadline = Instant::now() + patience;
    let started = Instant::now();
    loop {
        let wait = timeout.min(deadline.saturating_duration_since(Instant::now()));
        let last = match look(&reader, witness, wait) {
            Ok(Look::Committed) => return Ok(true),
            Ok(Look::Aborted) => return Ok(false),
            Ok(Look::Waiting(why)) => why.to_owned(),
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
        if Instant::now() + Duration::from_millis(200) >= deadline {
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

/// What one look at the partition showed.
enum Look {
    Committed,
    Aborted,
    /// Nothing decided yet, and why.
    Waiting(&'static str),
}

/// One look, within `wait`.
fn look(
    reader: &BaseConsumer<Quiet>,
    witness: &Delivered,
    wait: Duration,
) -> Result<Look, KafkaError> {
    let deadline = Instant::now() + wait;
    // A read_committed client's ListOffsets asks for the last stable offset.
    let (_, stable) = reader.fetch_watermarks(&witness.topic, witness.partition, wait)?;
    if stable <= witness.offset {
        return Ok(Look::Waiting(
            "an open transaction (this one while its markers are written, or another producer's) holds the last stable offset at or below it",
        ));
    }
    let mut at = TopicPartitionList::with_capacity(1);
    at.add_partition_offset(
        &witness.topic,
        witness.partition,
        Offset::Offset(witness.offset),
    )?;
    reader.assign(&at)?;
    while Instant::now() < deadline {
        match reader.poll(Duration::from_millis(100)) {
            None => {}
            // Committed: the witness itself. Aborted: a later record, the
            // witness filtered out (a fetch never skips a committed record).
            Some(Ok(message)) if message.offset() == witness.offset => return Ok(Look::Committed),
            Some(Ok(_)) => return Ok(Look::Aborted),
            // The end of what is stable. Aborted only if the reader got
            // past the witness: its position moves past the abort marker
            // (a control record librdkafka serves without showing it). A
            // broker whose stable offset lags (a new leader, a follower)
            // can end the partition at the witness itself: look again.
            Some(Err(KafkaError::PartitionEOF(_))) => {
                return Ok(if past(reader, witness)? {
                    Look::Aborted
                } else {
                    Look::Waiting(
                        "the partition ended at the witness on a broker whose stable offset lags",
                    )
                });
            }
            Some(Err(error)) => return Err(error),
        }
    }
    Ok(Look::Waiting(
        "no record and no end of the partition read yet",
    ))
}

/// Whether the reader's position is past the witness.
fn past(reader: &BaseConsumer<Quiet>, witness: &Delivered) -> Result<bool, KafkaError> {
    let position = reader.position()?;
    Ok(position
        .find_partition(&witness.topic, witness.partition)
        .is_some_and(|p| matches!(p.offset(), Offset::Offset(o) if o > witness.offset)))
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
        let at = |offset| {
            Acknowledged::Witness(Delivered {
                topic: "s".into(),
                partition: 0,
                offset,
            })
        };
        assert_eq!(w.of(1), Acknowledged::Nothing);
        w.note(1, "s", 0, 10);
        w.note(1, "s", 1, 11);
        assert_eq!(w.of(1), at(10));
        // Transaction 2 had no acknowledged record yet; 1's late report
        // changes nothing.
        w.note(1, "s", 0, 12);
        assert_eq!(w.of(2), Acknowledged::Nothing);
        w.note(2, "dlq", 3, 40);
        w.note(1, "s", 0, 13);
        assert_eq!(
            w.of(2),
            Acknowledged::Witness(Delivered {
                topic: "dlq".into(),
                partition: 3,
                offset: 40
            })
        );
        assert_eq!(w.of(1), Acknowledged::Nothing);
    }

    #[test]
    fn a_report_without_an_offset_is_acknowledged_but_no_witness() {
        let w = Witness::default();
        w.note(1, "s", 0, -1001);
        assert_eq!(w.of(1), Acknowledged::WithoutOffset);
        w.note(1, "s", 0, -1);
        w.note(1, "s", 1, 7);
        assert_eq!(
            w.of(1),
            Acknowledged::Witness(Delivered {
                topic: "s".into(),
                partition: 1,
                offset: 7
            })
        );
        w.note(2, "s", 0, -1);
        assert_eq!(w.of(2), Acknowledged::WithoutOffset);
    }
}
