//! Consumer lag as the group sees it, per partition this instance owns.
//!
//! Why not librdkafka's `consumer_lag`: it counts from the consumer's own
//! committed offset, and this consumer never commits (offsets go through the
//! producer's transaction), so it stayed where the assignment found it.
//! Here lag is the partition's last stable offset (what a read_committed
//! reader can reach) less the group's committed offset, where the committed
//! offset is the highest of what is known locally: the offsets this
//! instance's transactions committed, librdkafka's fetch of the group's
//! offset at assignment (`committed_offset`), the first offset read after
//! the assignment (where the group stood), and the log start offset (with
//! `auto.offset.reset = earliest`, where a group without a commit starts, or
//! where one whose offset fell out of retention resumes). The last stable
//! offset comes from the statistics (`ls_offset`, refreshed by every fetch)
//! and from each record read (a record visible to read_committed lies below
//! it), so a drained partition shows 0 at the commit that drains it.
//!
//! Why a table rendered at scrape time rather than gauges: a partition
//! given away must lose its series (else the sum over instances counts it
//! twice, frozen), and the `metrics` crate cannot delete a gauge.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write;
use std::sync::{Arc, Mutex, MutexGuard};

use rdkafka::TopicPartitionList;
use rdkafka::statistics::Statistics;

use super::metrics::{CONSUMER_LAG, CONSUMER_LAG_SECONDS};

/// Per partition ever read or owned by this instance.
#[derive(Debug, Default)]
struct Entry {
    /// Owned now (assigned and not revoked).
    assigned: bool,
    /// The group's committed offset (next to read), as far as known.
    committed: Option<i64>,
    /// The last stable offset, as far as known.
    end: Option<i64>,
    /// A record was read since the assignment (the first one tells where
    /// the group stood).
    read_since_assigned: bool,
    /// Records read and not yet committed, (offset, timestamp ms), in
    /// offset order: the front is the oldest record waiting.
    waiting: VecDeque<(i64, i64)>,
    /// One past the highest offset ever read here; survives revocation, so
    /// a partition that comes back is not counted as consumed twice.
    read_through: i64,
}

impl Entry {
    fn raise_committed(&mut self, offset: i64) {
        if offset >= 0 {
            self.committed = Some(self.committed.map_or(offset, |c| c.max(offset)));
        }
    }

    fn raise_end(&mut self, offset: i64) {
        if offset >= 0 {
            self.end = Some(self.end.map_or(offset, |e| e.max(offset)));
        }
    }

    /// Records between the committed offset and the last stable offset.
    fn lag(&self) -> Option<i64> {
        Some((self.end? - self.committed?).max(0))
    }

    /// Seconds the oldest record read and not yet committed has waited, by
    /// its timestamp; 0 when the lag is 0; None when the lag is unknown, and
    /// when the lag is above 0 but nothing read waits: the uncommitted
    /// records are not reached yet, or they are offsets never read as
    /// records (an upstream transaction's commit marker, aborted records),
    /// whose age no reader can know.
    fn lag_seconds(&self, now_ms: i64) -> Option<f64> {
        match self.lag()? {
            0 => Some(0.0),
            _ => self
                .waiting
                .front()
                .map(|&(_, ts)| (now_ms - ts).max(0) as f64 / 1000.0),
        }
    }

    /// Records below the committed offset wait for nothing any more.
    fn settle(&mut self) {
        if let Some(c) = self.committed {
            while self.waiting.front().is_some_and(|&(o, _)| o < c) {
                self.waiting.pop_front();
            }
        }
    }

    fn reset(&mut self) {
        self.committed = None;
        self.end = None;
        self.read_since_assigned = false;
        self.waiting.clear();
    }
}

/// What was read: first time, or again (after a rewind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    First,
    Again,
}

/// Lag per partition, shared by the source (reads, assignment, statistics),
/// the sink (commits) and the /metrics handler (rendering).
#[derive(Debug, Default)]
pub struct LagTable(Mutex<HashMap<Arc<str>, HashMap<i32, Entry>>>);

impl LagTable {
    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, HashMap<i32, Entry>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Partitions added to this instance; their lag is learnt afresh.
    pub fn assign(&self, added: &TopicPartitionList) {
        let mut map = self.lock();
        for e in added.elements() {
            let entry = map
                .entry(Arc::from(e.topic()))
                .or_default()
                .entry(e.partition())
                .or_default();
            entry.reset();
            entry.assigned = true;
        }
    }

    /// Partitions taken away: their series go (their new owner reports them).
    pub fn revoke(&self, removed: &TopicPartitionList) {
        let mut map = self.lock();
        for e in removed.elements() {
            if let Some(entry) = map
                .get_mut(e.topic())
                .and_then(|t| t.get_mut(&e.partition()))
            {
                entry.reset();
                entry.assigned = false;
            }
        }
    }

    /// Partitions owned now.
    pub fn assigned(&self) -> usize {
        self.lock()
            .values()
            .flat_map(HashMap::values)
            .filter(|e| e.assigned)
            .count()
    }

    /// A record was read; says whether this instance read it before.
    pub fn read(&self, topic: &Arc<str>, partition: i32, offset: i64, timestamp_ms: i64) -> Read {
        let mut map = self.lock();
        let entry = match map.get_mut(&**topic) {
            Some(t) => t.entry(partition).or_default(),
            None => map
                .entry(topic.clone())
                .or_default()
                .entry(partition)
                .or_default(),
        };
        if !entry.read_since_assigned {
            entry.read_since_assigned = true;
            entry.raise_committed(offset);
        }
        entry.raise_end(offset + 1);
        // A re-read waits too: after a partition comes back, `waiting` was
        // emptied and the records read before (and aborted) are read again;
        // skipping them left the age unknown or too young until reading
        // passed `read_through`. Past the back of `waiting` only, so a
        // rewind within one assignment does not queue a record twice.
        let uncommitted = entry.committed.is_none_or(|c| offset >= c);
        let beyond_waiting = entry.waiting.back().is_none_or(|&(o, _)| offset > o);
        if uncommitted && beyond_waiting {
            entry.waiting.push_back((offset, timestamp_ms));
        }
        if offset < entry.read_through {
            return Read::Again;
        }
        entry.read_through = offset + 1;
        Read::First
    }

    /// Offsets this instance committed (next offset to read, per partition).
    pub fn committed<'a>(&self, offsets: impl IntoIterator<Item = (&'a str, i32, i64)>) {
        let mut map = self.lock();
        for (topic, partition, next) in offsets {
            let Some(entry) = map.get_mut(topic).and_then(|t| t.get_mut(&partition)) else {
                continue;
            };
            entry.raise_committed(next);
            entry.raise_end(next);
            entry.settle();
        }
    }

    /// The consumer's statistics: last stable offsets, the group's offset
    /// fetched at assignment, log start offsets. Only owned partitions.
    pub fn observe(&self, statistics: &Statistics) {
        let mut map = self.lock();
        for (topic, t) in &statistics.topics {
            let Some(partitions) = map.get_mut(topic.as_str()) else {
                continue;
            };
            for (partition, p) in &t.partitions {
                let Some(entry) = partitions.get_mut(partition).filter(|e| e.assigned) else {
                    continue;
                };
                entry.raise_end(p.ls_offset);
                entry.raise_committed(p.committed_offset);
                entry.raise_committed(p.lo_offset);
                entry.settle();
            }
        }
    }

    /// Appends the two gauges in Prometheus text format, for the owned
    /// partitions whose figures are known.
    pub fn render(&self, out: &mut String, now_ms: i64) {
        let map = self.lock();
        let mut rows: Vec<(&str, i32, &Entry)> = map
            .iter()
            .flat_map(|(topic, t)| t.iter().map(move |(p, e)| (&**topic, *p, e)))
            .filter(|(_, _, e)| e.assigned)
            .collect();
        rows.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        header(
            out,
            CONSUMER_LAG,
            "Records between the group's committed offset and the partition's last stable offset, for the partitions this instance owns (sum over instances for the group's lag).",
        );
        for (topic, partition, e) in &rows {
            if let Some(lag) = e.lag() {
                sample(out, CONSUMER_LAG, topic, *partition, lag as f64);
            }
        }
        header(
            out,
            CONSUMER_LAG_SECONDS,
            "Age of the oldest record this instance read and has not committed yet on the partition, by the record's timestamp (its read time when it has none; never below 0). 0 when streamscore_consumer_lag is 0, and otherwise only while that record is stamped ahead of this clock. Absent while streamscore_consumer_lag is absent, and while it is above 0 with no uncommitted record read: the records are not reached yet, or the lag is only offsets never read as records (an upstream transaction's commit marker, aborted records).",
        );
        for (topic, partition, e) in &rows {
            if let Some(seconds) = e.lag_seconds(now_ms) {
                sample(out, CONSUMER_LAG_SECONDS, topic, *partition, seconds);
            }
        }
    }
}

fn header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
}

fn sample(out: &mut String, name: &str, topic: &str, partition: i32, value: f64) {
    let _ = writeln!(
        out,
        "{name}{{topic=\"{}\",partition=\"{partition}\"}} {value}",
        escape(topic)
    );
}

/// Label values escape backslash, double quote and line feed.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tpl(partitions: &[i32]) -> TopicPartitionList {
        let mut t = TopicPartitionList::new();
        for p in partitions {
            t.add_partition("in", *p);
        }
        t
    }

    fn stats(partition: i32, ls: i64, committed: i64, lo: i64) -> Statistics {
        let mut s = Statistics::default();
        let mut topic = rdkafka::statistics::Topic::default();
        topic.partitions.insert(
            partition,
            rdkafka::statistics::Partition {
                partition,
                ls_offset: ls,
                committed_offset: committed,
                lo_offset: lo,
                ..Default::default()
            },
        );
        s.topics.insert("in".into(), topic);
        s
    }

    fn rendered(t: &LagTable, now_ms: i64) -> String {
        let mut out = String::new();
        t.render(&mut out, now_ms);
        out
    }

    #[test]
    fn lag_counts_from_the_groups_commit_and_drops_to_zero_at_the_commit_that_drains() {
        let t = LagTable::default();
        let topic: Arc<str> = Arc::from("in");
        t.assign(&tpl(&[0]));
        // librdkafka fetched the group's offset 100; the log ends at 150.
        t.observe(&stats(0, 150, 100, 0));
        assert!(
            rendered(&t, 0).contains("streamscore_consumer_lag{topic=\"in\",partition=\"0\"} 50\n")
        );
        for o in 100..150 {
            assert_eq!(t.read(&topic, 0, o, 1_000 + o), Read::First);
        }
        let out = rendered(&t, 3_100);
        assert!(
            out.contains("lag_seconds{topic=\"in\",partition=\"0\"} 2\n"),
            "{out}"
        );
        t.committed([("in", 0, 120)]);
        let out = rendered(&t, 3_100);
        assert!(
            out.contains("consumer_lag{topic=\"in\",partition=\"0\"} 30\n"),
            "{out}"
        );
        assert!(
            out.contains("lag_seconds{topic=\"in\",partition=\"0\"} 1.98\n"),
            "{out}"
        );
        // Read again after an abort: not a first read.
        assert_eq!(t.read(&topic, 0, 125, 0), Read::Again);
        t.committed([("in", 0, 150)]);
        let out = rendered(&t, 9_000);
        assert!(
            out.contains("consumer_lag{topic=\"in\",partition=\"0\"} 0\n"),
            "{out}"
        );
        assert!(
            out.contains("lag_seconds{topic=\"in\",partition=\"0\"} 0\n"),
            "{out}"
        );
        // Older statistics do not bring it back.
        t.observe(&stats(0, 140, 100, 0));
        assert!(rendered(&t, 9_000).contains("consumer_lag{topic=\"in\",partition=\"0\"} 0\n"));
    }

    #[test]
    fn a_group_without_a_commit_counts_from_the_log_start() {
        let t = LagTable::default();
        t.assign(&tpl(&[0, 1]));
        t.observe(&stats(0, 40, -1001, 10));
        t.observe(&stats(1, 0, -1001, 0));
        let out = rendered(&t, 0);
        assert!(
            out.contains("consumer_lag{topic=\"in\",partition=\"0\"} 30\n"),
            "{out}"
        );
        assert!(
            out.contains("consumer_lag{topic=\"in\",partition=\"1\"} 0\n"),
            "{out}"
        );
        assert!(
            out.contains("lag_seconds{topic=\"in\",partition=\"1\"} 0\n"),
            "{out}"
        );
        assert!(
            !out.contains("lag_seconds{topic=\"in\",partition=\"0\"}"),
            "its oldest record is not read yet: {out}"
        );
        assert_eq!(t.assigned(), 2);
    }

    #[test]
    fn revoked_partitions_lose_their_series_and_keep_their_read_history() {
        let t = LagTable::default();
        let topic: Arc<str> = Arc::from("in");
        t.assign(&tpl(&[0, 1]));
        t.observe(&stats(0, 10, 5, 0));
        t.observe(&stats(1, 10, 5, 0));
        assert_eq!(t.read(&topic, 1, 5, 0), Read::First);
        t.revoke(&tpl(&[1]));
        let out = rendered(&t, 0);
        assert!(!out.contains("partition=\"1\""), "{out}");
        assert!(out.contains("partition=\"0\"} 5\n"), "{out}");
        assert_eq!(out.matches("# TYPE").count(), 2);
        // Statistics of a partition no longer owned are ignored.
        t.observe(&stats(1, 10, 5, 0));
        assert!(!rendered(&t, 0).contains("partition=\"1\""));
        // Back again, read from where the group stood: a re-read.
        t.assign(&tpl(&[1]));
        assert_eq!(t.read(&topic, 1, 5, 0), Read::Again);
        assert_eq!(t.assigned(), 2);
    }

    #[test]
    fn records_read_again_after_the_partition_comes_back_count_for_lag_seconds() {
        let t = LagTable::default();
        let topic: Arc<str> = Arc::from("in");
        t.assign(&tpl(&[0]));
        t.observe(&stats(0, 20, 10, 0));
        for o in 10..20 {
            assert_eq!(t.read(&topic, 0, o, 1_000 + o), Read::First);
        }
        // Revoked before any commit (the transaction aborted): the group
        // still stands at 10, and the partition comes back.
        t.revoke(&tpl(&[0]));
        t.assign(&tpl(&[0]));
        t.observe(&stats(0, 20, 10, 0));
        for o in 10..20 {
            assert_eq!(t.read(&topic, 0, o, 1_000 + o), Read::Again);
        }
        let out = rendered(&t, 5_010);
        assert!(
            out.contains("consumer_lag{topic=\"in\",partition=\"0\"} 10\n"),
            "{out}"
        );
        assert!(
            out.contains("lag_seconds{topic=\"in\",partition=\"0\"} 4\n"),
            "the oldest record re-read (offset 10, written at 1.010 s) has waited 4 s: {out}"
        );
        // Past the re-read records, first reads queue behind them.
        assert_eq!(t.read(&topic, 0, 20, 4_000), Read::First);
        t.committed([("in", 0, 15)]);
        let out = rendered(&t, 5_010);
        assert!(
            out.contains("lag_seconds{topic=\"in\",partition=\"0\"} 3.995\n"),
            "offset 15 is now the oldest waiting: {out}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
