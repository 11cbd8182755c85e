//! What the pipeline's threads say about themselves, for /healthz, /readyz
//! and /metrics: each stage's loop beats as it turns, the rebalance
//! callbacks say which partitions are owned (at once), the consumer's
//! statistics say whether a broker answers and where the group membership
//! stands, and the lag table says how far behind each owned partition is.
//!
//! Written with relaxed atomics on the hot path (a beat is one store); read
//! only by the HTTP handlers.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::statistics::Statistics;
use serde::Serialize;

use super::lag::LagTable;
use super::metrics::{ASSIGNED_PARTITIONS, CONSECUTIVE_ABORTS, LAST_COMMIT_TIMESTAMP};
use crate::registry::RegistryStatus;

/// No record waits for a commit.
const NOT_WAITING: u64 = u64::MAX;

/// The commit gauges, looked up once.
struct CommitGauges {
    last_commit: metrics::Gauge,
    consecutive_aborts: metrics::Gauge,
    assigned_partitions: metrics::Gauge,
}

impl std::fmt::Debug for CommitGauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommitGauges")
    }
}

/// A stage whose loop beats.
#[derive(Debug, Clone, Copy)]
pub enum Stage {
    Source,
    Sink,
}

#[derive(Debug)]
pub struct PipelineSignals {
    origin: Instant,
    source_beat_ms: AtomicU64,
    sink_beat_ms: AtomicU64,
    broker_reachable: AtomicBool,
    assigned_partitions: AtomicI64,
    group: Mutex<GroupView>,
    /// Since when records have waited for a commit (ms since `origin`,
    /// [`NOT_WAITING`] when none do): the first read after a commit, or the
    /// start of the open transaction, whichever is older.
    first_read_waiting_ms: AtomicU64,
    transaction_open_ms: AtomicU64,
    /// When a transaction last committed (ms since `origin`; the start counts).
    last_commit_ms: AtomicU64,
    /// Wall-clock time of the last commit (Unix ms; 0 before the first).
    last_commit_unix_ms: AtomicU64,
    consecutive_aborts: AtomicU64,
    /// When no broker was last seen answering (ms since `origin`): waiting
    /// for a broker is not being stuck, so the commit stall counts from here too.
    last_unreachable_ms: AtomicU64,
    gauges: CommitGauges,
    /// Consumer lag per owned partition, rendered by /metrics.
    pub lag: LagTable,
    /// With `input.schema_registry`: whether it answers, and whether records wait on it.
    schema_registry: OnceLock<Arc<RegistryStatus>>,
    /// Why the last transaction failed or is being retried, since the last
    /// commit: what /readyz says while records wait for one.
    last_transaction_error: Mutex<Option<String>>,
}

#[derive(Debug)]
struct GroupView {
    join_state: String,
    /// When the membership last left "steady" (and has not come back).
    unsteady_since: Option<Instant>,
}

impl Default for PipelineSignals {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            source_beat_ms: AtomicU64::new(0),
            sink_beat_ms: AtomicU64::new(0),
            // The pipeline starts only after init_transactions reached a broker.
            broker_reachable: AtomicBool::new(true),
            assigned_partitions: AtomicI64::new(0),
            group: Mutex::new(GroupView {
                join_state: "joining".into(),
                unsteady_since: None,
            }),
            first_read_waiting_ms: AtomicU64::new(NOT_WAITING),
            transaction_open_ms: AtomicU64::new(NOT_WAITING),
            last_commit_ms: AtomicU64::new(0),
            last_commit_unix_ms: AtomicU64::new(0),
            consecutive_aborts: AtomicU64::new(0),
            last_unreachable_ms: AtomicU64::new(0),
            gauges: CommitGauges {
                last_commit: metrics::gauge!(LAST_COMMIT_TIMESTAMP),
                consecutive_aborts: metrics::gauge!(CONSECUTIVE_ABORTS),
                assigned_partitions: metrics::gauge!(ASSIGNED_PARTITIONS),
            },
            lag: LagTable::default(),
            schema_registry: OnceLock::new(),
            last_transaction_error: Mutex::new(None),
        }
    }
}

/// The signals as /readyz and /healthz report them.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SignalsView {
    /// Seconds since each stage's loop last turned.
    pub source_idle_seconds: f64,
    pub sink_idle_seconds: f64,
    pub broker_reachable: bool,
    /// librdkafka's join state ("steady", "wait-join", …), or "joining" before its first statistics.
    pub group_state: String,
    /// Seconds the membership has been out of "steady" (joining, rebalancing); 0 when steady.
    pub group_unsteady_seconds: f64,
    /// Partitions owned, as of the last rebalance callback.
    pub assigned_partitions: i64,
    /// Seconds records have waited for a commit: since the last commit while
    /// records read after it (or an open transaction) wait; 0 when nothing waits.
    pub progress_stall_seconds: f64,
    /// Seconds since the last commit (since the start before the first).
    pub last_commit_age_seconds: f64,
    /// Unix time of the last commit, None before the first.
    pub last_commit_unix_seconds: Option<f64>,
    /// Transactions aborted since the last commit.
    pub consecutive_aborts: u64,
    /// Seconds records have waited for a commit, whether or not a broker
    /// answers (readiness; liveness reads `progress_stall_seconds`).
    pub commit_wait_seconds: f64,
    /// Why the last transaction failed, or a call of it is being retried,
    /// since the last commit.
    pub last_transaction_error: Option<String>,
    /// Whether the schema registry answers; None without one.
    pub schema_registry_reachable: Option<bool>,
    /// Records wait for a writer schema from a registry that does not
    /// answer: the source stage is held, not stuck (a restart would not
    /// bring the registry back), until `input.schema_registry.max_wait_ms`.
    pub schema_registry_waiting: bool,
}

impl PipelineSignals {
    pub fn beat(&self, stage: Stage) {
        let now = self.origin.elapsed().as_millis() as u64;
        match stage {
            Stage::Source => self.source_beat_ms.store(now, Ordering::Relaxed),
            Stage::Sink => self.sink_beat_ms.store(now, Ordering::Relaxed),
        }
    }

    /// A record was read (at `at`); it waits until a transaction commits.
    /// One relaxed load per record while records already wait.
    pub fn record_read(&self, at: Instant) {
        if self.first_read_waiting_ms.load(Ordering::Relaxed) == NOT_WAITING {
            let ms = self.ms(at);
            let _ = self.first_read_waiting_ms.compare_exchange(
                NOT_WAITING,
                ms,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Reads that waited for a commit were dropped and will not be read
    /// again by this instance (their partitions went with an abort).
    pub fn reads_dropped(&self) {
        self.first_read_waiting_ms
            .store(NOT_WAITING, Ordering::Relaxed);
    }

    /// The sink began (true) or ended (false) a transaction.
    pub fn set_transaction_open(&self, open: bool) {
        let ms = if open {
            self.ms(Instant::now())
        } else {
            NOT_WAITING
        };
        self.transaction_open_ms.store(ms, Ordering::Relaxed);
    }

    /// A transaction committed. Records read since it began wait on (in the
    /// next transaction, which the sink opens as it takes them); their wait
    /// counts from that transaction's start, at most one interval later.
    pub fn committed(&self) {
        let now = self.ms(Instant::now());
        self.last_commit_ms.store(now, Ordering::Relaxed);
        self.first_read_waiting_ms
            .store(NOT_WAITING, Ordering::Relaxed);
        self.transaction_open_ms
            .store(NOT_WAITING, Ordering::Relaxed);
        let unix = unix_ms();
        self.last_commit_unix_ms.store(unix, Ordering::Relaxed);
        self.consecutive_aborts.store(0, Ordering::Relaxed);
        self.gauges.last_commit.set(unix as f64 / 1000.0);
        self.gauges.consecutive_aborts.set(0.0);
        *self
            .last_transaction_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// A transaction failed, or a call of it is being retried, for `why`.
    pub fn transaction_trouble(&self, why: String) {
        *self
            .last_transaction_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(why);
    }

    /// A transaction aborted.
    pub fn aborted(&self) {
        let n = self.consecutive_aborts.fetch_add(1, Ordering::Relaxed) + 1;
        self.gauges.consecutive_aborts.set(n as f64);
    }

    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_millis() as u64
    }

    /// A broker connection is up. librdkafka reports all brokers down as an error event.
    pub fn set_broker_reachable(&self, reachable: bool) {
        self.broker_reachable.store(reachable, Ordering::Relaxed);
        if !reachable {
            let now = self.origin.elapsed().as_millis() as u64;
            self.last_unreachable_ms.fetch_max(now, Ordering::Relaxed);
        }
    }

    /// Reads the consumer's statistics (every `statistics.interval.ms`).
    pub fn observe(&self, statistics: &Statistics) {
        let up = statistics
            .brokers
            .values()
            .any(|b| b.nodeid >= 0 && b.state == "UP");
        self.set_broker_reachable(up);
        if let Some(group) = &statistics.cgrp {
            self.observe_join_state(&group.join_state, up, Instant::now());
        }
        self.lag.observe(statistics);
    }

    /// The rebalance callback changed the assignment (`owned` partitions
    /// now). Said at once, not at the next statistics: an assignment also
    /// proves the group coordinator answers, so a broker is reachable.
    pub fn assignment_changed(&self, owned: usize, assigned: bool) {
        self.assigned_partitions
            .store(owned as i64, Ordering::Relaxed);
        self.gauges.assigned_partitions.set(owned as f64);
        if assigned {
            self.set_broker_reachable(true);
        }
    }

    /// A member of a group is "steady" between rebalances, with or without
    /// partitions; anything else is a rebalance in progress. Only time with a
    /// broker answering counts as unsettled: without one no rejoin can
    /// finish, and a restart would not bring the broker back.
    fn observe_join_state(&self, join_state: &str, broker_up: bool, now: Instant) {
        let mut group = self.group.lock().unwrap_or_else(|p| p.into_inner());
        if join_state == "steady" || !broker_up {
            group.unsteady_since = None;
        } else if group.unsteady_since.is_none() {
            group.unsteady_since = Some(now);
        }
        join_state.clone_into(&mut group.join_state);
    }

    /// Signals that also report the schema registry's state, when there is one.
    pub fn watching(registry: Option<Arc<RegistryStatus>>) -> Self {
        let signals = Self::default();
        if let Some(status) = registry {
            let _ = signals.schema_registry.set(status);
        }
        signals
    }

    pub fn view(&self) -> SignalsView {
        let now = self.origin.elapsed().as_millis() as u64;
        let idle = |beat: &AtomicU64| {
            Duration::from_millis(now.saturating_sub(beat.load(Ordering::Relaxed))).as_secs_f64()
        };
        let group = self.group.lock().unwrap_or_else(|p| p.into_inner());
        SignalsView {
            source_idle_seconds: idle(&self.source_beat_ms),
            sink_idle_seconds: idle(&self.sink_beat_ms),
            broker_reachable: self.broker_reachable.load(Ordering::Relaxed),
            group_state: group.join_state.clone(),
            group_unsteady_seconds: group
                .unsteady_since
                .map_or(0.0, |since| since.elapsed().as_secs_f64()),
            assigned_partitions: self.assigned_partitions.load(Ordering::Relaxed),
            progress_stall_seconds: self.progress_stall(now).as_secs_f64(),
            last_commit_age_seconds: idle(&self.last_commit_ms),
            last_commit_unix_seconds: match self.last_commit_unix_ms.load(Ordering::Relaxed) {
                0 => None,
                ms => Some(ms as f64 / 1000.0),
            },
            consecutive_aborts: self.consecutive_aborts.load(Ordering::Relaxed),
            commit_wait_seconds: self.commit_wait(now).as_secs_f64(),
            last_transaction_error: self
                .last_transaction_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            schema_registry_reachable: self.schema_registry.get().map(|r| r.reachable()),
            schema_registry_waiting: self.schema_registry.get().is_some_and(|r| r.waiting()),
        }
    }

    /// How long records have waited for a commit, brokers reachable or not.
    fn commit_wait(&self, now_ms: u64) -> Duration {
        let waiting_since = self
            .first_read_waiting_ms
            .load(Ordering::Relaxed)
            .min(self.transaction_open_ms.load(Ordering::Relaxed));
        if waiting_since == NOT_WAITING {
            return Duration::ZERO;
        }
        Duration::from_millis(now_ms.saturating_sub(waiting_since))
    }

    /// How long records have waited for a commit. Stage loops can keep
    /// turning while nothing commits (a record the broker refuses, an abort
    /// after every transaction): only commits are progress.
    fn progress_stall(&self, now_ms: u64) -> Duration {
        let waiting_since = self
            .first_read_waiting_ms
            .load(Ordering::Relaxed)
            .min(self.transaction_open_ms.load(Ordering::Relaxed));
        if waiting_since == NOT_WAITING || !self.broker_reachable.load(Ordering::Relaxed) {
            return Duration::ZERO;
        }
        let since = waiting_since.max(self.last_unreachable_ms.load(Ordering::Relaxed));
        Duration::from_millis(now_ms.saturating_sub(since))
    }
}

fn unix_ms() -> u64 {
    crate::clock::unix_ms().max(0) as u64
}

impl SignalsView {
    /// The longest any stage has gone without turning, the group
    /// membership without settling, or waiting records without a commit: a
    /// consumer that never rejoins after a session timeout, or a sink that
    /// aborts every transaction, is as stuck as a thread that never returns.
    pub fn longest_stall(&self) -> Duration {
        // A source held by the schema registry, and the records behind it,
        // wait for the registry (bounded by max_wait_ms), not on a wedge.
        let (source, progress) = if self.schema_registry_waiting {
            (0.0, 0.0)
        } else {
            (self.source_idle_seconds, self.progress_stall_seconds)
        };
        Duration::from_secs_f64(
            source
                .max(self.sink_idle_seconds)
                .max(self.group_unsteady_seconds)
                .max(progress),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_that_stops_beating_shows_as_idle() {
        let s = PipelineSignals::default();
        s.beat(Stage::Source);
        s.beat(Stage::Sink);
        std::thread::sleep(Duration::from_millis(30));
        s.beat(Stage::Sink);
        let v = s.view();
        assert!(v.source_idle_seconds >= 0.03, "{v:?}");
        assert!(v.sink_idle_seconds < v.source_idle_seconds, "{v:?}");
        assert_eq!(v.longest_stall().as_secs_f64(), v.source_idle_seconds);
    }

    #[test]
    fn records_waiting_without_a_commit_count_as_a_stall() {
        let s = PipelineSignals::default();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            s.view().progress_stall_seconds,
            0.0,
            "nothing read: idle, not stuck"
        );
        s.record_read(Instant::now());
        std::thread::sleep(Duration::from_millis(20));
        let v = s.view();
        assert!(v.progress_stall_seconds >= 0.02, "{v:?}");
        assert!(v.longest_stall().as_secs_f64() >= v.progress_stall_seconds);
        s.aborted();
        s.aborted();
        assert_eq!(s.view().consecutive_aborts, 2);
        s.committed();
        let v = s.view();
        assert_eq!(v.progress_stall_seconds, 0.0, "{v:?}");
        assert_eq!(v.consecutive_aborts, 0);
        assert!(v.last_commit_unix_seconds.is_some());
        // An open transaction waits for its commit even with nothing read since.
        s.set_transaction_open(true);
        std::thread::sleep(Duration::from_millis(20));
        assert!(s.view().progress_stall_seconds >= 0.02);
        // Without a broker nothing can commit, and a restart would not help:
        // not counted, and counted afresh once one answers again.
        s.set_broker_reachable(false);
        assert_eq!(s.view().progress_stall_seconds, 0.0);
        s.set_broker_reachable(true);
        assert!(s.view().progress_stall_seconds < 0.02);
    }

    #[test]
    fn a_first_record_after_a_long_idle_spell_has_not_waited_yet() {
        let s = PipelineSignals::default();
        s.committed();
        std::thread::sleep(Duration::from_millis(60));
        s.record_read(Instant::now());
        let v = s.view();
        assert!(
            v.progress_stall_seconds < 0.03,
            "an idle spell is not a stall: {v:?}"
        );
        // Reads given up (revoked with an abort, nothing left to re-read) wait for nothing.
        std::thread::sleep(Duration::from_millis(40));
        assert!(s.view().progress_stall_seconds >= 0.04);
        s.reads_dropped();
        assert_eq!(s.view().progress_stall_seconds, 0.0);
    }

    #[test]
    fn a_membership_that_does_not_settle_counts_as_a_stall() {
        let s = PipelineSignals::default();
        let start = Instant::now() - Duration::from_secs(5);
        s.observe_join_state("wait-join", true, start);
        s.observe_join_state("wait-sync", true, Instant::now());
        let v = s.view();
        assert_eq!(v.group_state, "wait-sync");
        assert!(
            v.group_unsteady_seconds >= 5.0,
            "counted from the first unsteady state: {v:?}"
        );
        assert!(v.longest_stall() >= Duration::from_secs(5));
        s.observe_join_state("steady", true, Instant::now());
        assert_eq!(s.view().group_unsteady_seconds, 0.0);
        // Waiting for a broker is not being stuck.
        s.observe_join_state("wait-join", false, start);
        assert_eq!(s.view().group_unsteady_seconds, 0.0);
    }

    fn statistics(broker_states: &[(i32, &str)], join_state: &str) -> Statistics {
        let mut stats = Statistics::default();
        for (i, (nodeid, state)) in broker_states.iter().enumerate() {
            let broker = rdkafka::statistics::Broker {
                nodeid: *nodeid,
                state: (*state).into(),
                ..Default::default()
            };
            stats.brokers.insert(format!("b{i}"), broker);
        }
        stats.cgrp = Some(rdkafka::statistics::ConsumerGroup {
            join_state: join_state.into(),
            assignment_size: 3,
            ..Default::default()
        });
        stats
    }

    #[test]
    fn statistics_set_reachability_and_group_state() {
        let s = PipelineSignals::default();
        // A bootstrap entry (nodeid -1) that is UP is not a broker answering.
        s.observe(&statistics(&[(-1, "UP"), (1, "CONNECT")], "wait-join"));
        let v = s.view();
        assert!(!v.broker_reachable, "{v:?}");
        assert_eq!(v.group_state, "wait-join");
        assert_eq!(v.group_unsteady_seconds, 0.0, "no broker: not counted");
        std::thread::sleep(Duration::from_millis(20));
        s.observe(&statistics(&[(1, "UP")], "wait-sync"));
        std::thread::sleep(Duration::from_millis(20));
        assert!(s.view().group_unsteady_seconds >= 0.02, "{:?}", s.view());
        s.observe(&statistics(&[(-1, "INIT"), (1, "UP")], "steady"));
        let v = s.view();
        assert!(v.broker_reachable, "{v:?}");
        assert_eq!(v.group_state, "steady");
        assert_eq!(
            v.assigned_partitions, 0,
            "the callbacks say, not the statistics"
        );
        s.set_broker_reachable(false);
        s.assignment_changed(3, true);
        let v = s.view();
        assert_eq!(v.assigned_partitions, 3);
        assert!(v.broker_reachable, "an assignment proves a broker answers");
        assert_eq!(v.group_unsteady_seconds, 0.0);
    }
}
