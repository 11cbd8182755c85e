//! What the source needs to rewind after an abort, known locally instead of
//! asked of the broker: per partition, the next offset this instance has
//! committed (written by the sink on each commit) and the span of offsets
//! the source has read since its last rewind.
//!
//! Why not ask the group coordinator (`committed_offsets`) at rewind time:
//! a partition-level error there has no safe answer (mapping it to the
//! beginning replays the partition: duplicates), and a partition still
//! fetching its committed offset (just assigned; or held back by another
//! producer's open transaction, UNSTABLE_OFFSET_COMMIT) cannot be seeked at
//! all (librdkafka answers `__STATE`). The sink is the only writer of this
//! group's offsets for the partitions it owns, so what its answered commits
//! say is what the group holds (a commit that went unanswered is settled
//! with the coordinator before anything rewinds: `kafka::sink`); partitions
//! this instance has not read from since the last rewind need no rewind at
//! all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rdkafka::TopicPartitionList;

pub(crate) type Partition = (Arc<str>, i32);

/// Next offsets committed by this instance, per partition it owns.
#[derive(Debug, Default)]
pub(crate) struct CommittedPositions(Mutex<HashMap<Arc<str>, HashMap<i32, i64>>>);

impl CommittedPositions {
    pub(crate) fn record(&self, committed: impl IntoIterator<Item = (Partition, i64)>) {
        let mut map = self.lock();
        for ((topic, partition), next) in committed {
            let e = map
                .entry(topic)
                .or_default()
                .entry(partition)
                .or_insert(next);
            *e = (*e).max(next);
        }
    }

    pub(crate) fn get(&self, topic: &str, partition: i32) -> Option<i64> {
        self.lock().get(topic)?.get(&partition).copied()
    }

    /// Partitions given up: a later owner commits them, and if they come
    /// back their position is read from the group again.
    pub(crate) fn forget(&self, revoked: &TopicPartitionList) {
        let mut map = self.lock();
        for e in revoked.elements() {
            if let Some(partitions) = map.get_mut(e.topic()) {
                partitions.remove(&e.partition());
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, HashMap<i32, i64>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Offsets read from one partition since the last rewind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadSpan {
    /// The first offset read: where the partition stood when reading began
    /// (its committed offset, or a rewind's target).
    pub first: i64,
    /// One past the last offset read.
    pub next: i64,
}

/// Per partition read since the last rewind; what a rewind must undo. Its
/// topic entries double as the source's interned topic names, so recording
/// a read costs the one topic lookup the source needs anyway.
#[derive(Debug, Default)]
pub(crate) struct ReadSpans(HashMap<Arc<str>, TopicReads>);

#[derive(Debug)]
struct TopicReads {
    name: Arc<str>,
    partitions: HashMap<i32, ReadSpan>,
}

impl ReadSpans {
    /// Records a read; returns the topic's shared name for the item.
    pub(crate) fn read(&mut self, topic: &str, partition: i32, offset: i64) -> Arc<str> {
        let reads = match self.0.get_mut(topic) {
            Some(reads) => reads,
            None => {
                let name: Arc<str> = Arc::from(topic);
                self.0.entry(name.clone()).or_insert(TopicReads {
                    name,
                    partitions: HashMap::new(),
                })
            }
        };
        reads
            .partitions
            .entry(partition)
            .and_modify(|s| s.next = s.next.max(offset + 1))
            .or_insert(ReadSpan {
                first: offset,
                next: offset + 1,
            });
        reads.name.clone()
    }

    pub(crate) fn forget(&mut self, revoked: &TopicPartitionList) {
        for e in revoked.elements() {
            if let Some(reads) = self.0.get_mut(e.topic()) {
                reads.partitions.remove(&e.partition());
            }
        }
    }

    /// Where each partition read since the last rewind must be read again
    /// from, given what has been committed: the committed offset when
    /// records after it were read, nothing when all were committed. Never
    /// before a committed offset, never before where reading began. Clears
    /// the spans: the next generation starts reading afresh.
    pub(crate) fn rewind_targets(
        &mut self,
        committed: &CommittedPositions,
    ) -> Vec<(Partition, i64)> {
        let mut targets: Vec<(Partition, i64)> = self
            .0
            .drain()
            .flat_map(|(topic, reads)| {
                reads
                    .partitions
                    .into_iter()
                    .map(move |(partition, span)| (topic.clone(), partition, span))
            })
            .filter_map(|(topic, partition, span)| {
                let target = match committed.get(&topic, partition) {
                    Some(c) => c.max(span.first),
                    None => span.first,
                };
                (target < span.next).then_some(((topic, partition), target))
            })
            .collect();
        targets.sort();
        targets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(t: &str, p: i32) -> Partition {
        (Arc::from(t), p)
    }

    #[test]
    fn rewinds_only_partitions_with_uncommitted_reads_and_never_before_a_commit() {
        let committed = CommittedPositions::default();
        let mut spans = ReadSpans::default();
        let a = "a";
        // p0: read 10..=19, committed up to 15 → back to 15.
        for o in 10..20 {
            spans.read(a, 0, o);
        }
        // p1: read 5..=7, all committed → no rewind (no seek).
        for o in 5..8 {
            spans.read(a, 1, o);
        }
        // p2: read 100..=101, nothing committed since reading began → back to 100.
        spans.read(a, 2, 100);
        spans.read(a, 2, 101);
        committed.record([(tp("a", 0), 15), (tp("a", 1), 8), (tp("a", 3), 42)]);
        assert_eq!(
            spans.rewind_targets(&committed),
            vec![(tp("a", 0), 15), (tp("a", 2), 100)],
            "p3 (assigned, never read: still fetching its offset) and p1 are left alone"
        );
        assert!(
            spans.rewind_targets(&committed).is_empty(),
            "a rewind starts a new generation"
        );
    }

    #[test]
    fn an_older_commit_never_moves_a_rewind_before_where_reading_began() {
        let committed = CommittedPositions::default();
        committed.record([(tp("a", 0), 3)]);
        let mut spans = ReadSpans::default();
        spans.read("a", 0, 7);
        assert_eq!(spans.rewind_targets(&committed), vec![(tp("a", 0), 7)]);
        // A committed position never goes backwards.
        committed.record([(tp("a", 0), 9), (tp("a", 0), 4)]);
        assert_eq!(committed.get("a", 0), Some(9));
    }

    #[test]
    fn revoked_partitions_are_forgotten_on_both_sides() {
        let committed = CommittedPositions::default();
        committed.record([(tp("a", 0), 3), (tp("a", 1), 3)]);
        let mut spans = ReadSpans::default();
        spans.read("a", 0, 5);
        spans.read("a", 1, 5);
        let mut revoked = TopicPartitionList::new();
        revoked.add_partition("a", 1);
        committed.forget(&revoked);
        spans.forget(&revoked);
        assert_eq!(committed.get("a", 1), None);
        assert_eq!(spans.rewind_targets(&committed), vec![(tp("a", 0), 5)]);
    }
}
