//! Exactly once across rebalances: several processor instances (separate OS
//! processes, one consumer group, each with its own transactional.id) join and
//! leave while the stream runs; a paused instance (SIGSTOP past the session
//! timeout) comes back as a zombie and must be fenced, not publish twice.

use crate::support;

use std::time::Duration;

use support::group::Group;
use support::process::Processor;

/// What only the static-membership tests need on top of a plain group.
trait StaticMembers {
    fn start_static(&self, i: usize, extra: &str) -> Processor;
    fn two_static_members(&self, extra: &str) -> (Processor, Processor);
}

impl StaticMembers for Group {
    /// Instance `i` as a static member (group.instance.id fixed per `i`, as
    /// the chart sets the pod name), with `extra` config lines.
    fn start_static(&self, i: usize, extra: &str) -> Processor {
        let mut s = self.settings.clone();
        s.kafka.group_instance_id = Some(format!("{}-{i}", self.settings.kafka.group_id));
        self.start_with(i, s, extra)
    }

    /// Two static members sharing the input's 3 partitions, everything
    /// published so far committed. Returns the two processors (0, 1).
    fn two_static_members(&self, extra: &str) -> (Processor, Processor) {
        let a = self.start_static(0, extra);
        wait_for(
            || {
                self.read_log(0)
                    .contains("partitions assigned partitions=3")
            },
            || format!("instance 0 to own all partitions:\n{}", self.read_log(0)),
        );
        let b = self.start_static(1, extra);
        wait_for(
            || self.read_log(1).contains("partitions assigned"),
            || {
                format!(
                    "instance 1 to be assigned partitions:\n{}",
                    self.read_log(1)
                )
            },
        );
        self.publish_to_every_partition(0, 50);
        let (done, end) = support::wait_committed(&self.settings, Duration::from_secs(60));
        assert_eq!(
            done, end,
            "the two members did not commit the first records"
        );
        (a, b)
    }
}

fn wait_for(mut done: impl FnMut() -> bool, what: impl Fn() -> String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {}",
            what()
        );
        sleep_ms(100);
    }
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

#[test]
fn instances_joining_and_leaving_mid_stream_lose_and_duplicate_nothing() {
    let _turn = support::exclusive();
    let g = Group::new("rebalance");
    let stream = support::stream(&g.settings, g.keyring.clone(), 8000, 700, 3);
    let a = g.start(0, "");
    sleep_ms(2000);
    let b = g.start(1, "");
    sleep_ms(2500);
    let c = g.start(2, "");
    sleep_ms(2500);
    // A graceful leave: commits what it read, hands its partitions over.
    g.stop_cleanly(b, 1);
    sleep_ms(1500);
    // A crash: its partitions move after the session timeout.
    assert!(
        c.kill9().is_none(),
        "instance 2 died before its kill:\n{}",
        g.read_log(2)
    );
    sleep_ms(1000);
    let b2 = g.start(1, "");
    let produced = stream.join().unwrap();
    g.assert_exactly_once(produced);
    for (i, p) in [(0, a), (1, b2)] {
        g.stop_cleanly(p, i);
    }
    // Every partition given up mid-stream was committed first, or had
    // nothing open: a periodic commit in flight when the group's generation
    // moves on is refused by the coordinator (ILLEGAL_GENERATION) and
    // aborted, the partitions rewound; that race is the broker's, and the
    // exactly-once check above is what it must not break. What a revocation
    // itself finds open it commits, never aborts; and the instance that left
    // on SIGTERM did not abort on its way out.
    let logs: String = (0..3).map(|i| g.read_log(i)).collect();
    assert!(
        logs.contains("partitions revoked after committing")
            || logs.contains("partitions revoked; the last transaction aborted"),
        "no rebalance revoked anything:\n{logs}"
    );
    // The one abort a revocation may report is the coordinator's refusal of
    // its commit because the generation had already moved on (the same
    // race, met by the revocation's own commit): the processor tried to
    // commit, the broker said no, and the next owner reads the records.
    for log in (0..3).map(|i| g.read_log(i)) {
        let lines: Vec<&str> = log.lines().collect();
        for (at, line) in lines.iter().enumerate() {
            if line.contains("revoked after aborting") {
                let refused = lines[at.saturating_sub(3)..at].iter().any(|l| {
                    l.contains("transaction failed; aborting")
                        && l.contains("generation id is not valid")
                });
                assert!(refused, "a revocation aborted:\n{log}");
            }
        }
    }
    let left = g.read_log(1);
    assert!(
        left.contains("source stopped after a final commit")
            || left.contains("source stopped; nothing was waiting for a commit"),
        "{left}"
    );
}

#[test]
fn paused_zombie_is_fenced_and_publishes_no_duplicates() {
    let _turn = support::exclusive();
    let g = Group::new("zombie");
    let stream = support::stream(&g.settings, g.keyring.clone(), 6000, 500, 3);
    let mut zombie = g.start(0, "");
    // The zombie must own partitions and be mid-stream when it freezes.
    wait_for(
        || g.read_log(0).contains("partitions assigned partitions=3"),
        || format!("instance 0 to own all partitions:\n{}", g.read_log(0)),
    );
    wait_for(
        || support::committed_so_far(&g.settings) > 300,
        || "instance 0 to commit records".into(),
    );
    let b = g.start(1, "");
    sleep_ms(1500);
    zombie.signal("STOP");
    // Past the 6 s session timeout: the group gives the zombie's partitions to instance 1.
    sleep_ms(9000);
    zombie.signal("CONT");
    let produced = stream.join().unwrap();
    g.assert_exactly_once(produced);
    let zombie_log = g.read_log(0);
    // Back from the pause, its transaction or its group membership is stale:
    // it must abort (and rewind) or stop as fenced, never commit stale work.
    assert!(
        zombie_log.contains("transaction failed; aborting") || zombie_log.contains("fatally"),
        "the zombie was neither aborted nor fenced:\n{zombie_log}"
    );
    let _ = zombie.exited();
    g.stop_cleanly(b, 1);
    drop(zombie);
}

/// Session timeout of the static-membership tests: far longer than their
/// bounded waits, so a partition that moves within one was handed over, not
/// timed out.
const LONG_SESSION_MS: u64 = 60_000;

/// A scale-down: a static member stopped with SIGTERM and
/// `shutdown.leave_group = "always"` leaves the group, and the survivor reads
/// its partitions long before the session timeout would have freed them.
#[test]
fn static_member_that_leaves_on_sigterm_hands_its_partitions_over_at_once() {
    let _turn = support::exclusive();
    let g = Group::with_session_timeout("leave-always", LONG_SESSION_MS);
    let extra = "[shutdown]\nleave_group = \"always\"\n";
    let (a, b) = g.two_static_members(extra);
    g.stop_cleanly(b, 1);
    assert!(
        g.read_log(1).contains("left the consumer group"),
        "{}",
        g.read_log(1)
    );
    let stopped = std::time::Instant::now();
    g.publish_to_every_partition(1, 50);
    // Every partition, the stopped member's included, within 20 s of a 60 s session timeout.
    let (done, end) = support::wait_committed(&g.settings, Duration::from_secs(20));
    assert_eq!(
        done,
        end,
        "the survivor did not take over the stopped member's partitions within 20 s \
         (session timeout {LONG_SESSION_MS} ms): the stopped static member did not leave\n{}",
        g.read_log(0)
    );
    println!(
        "all partitions committed {:?} after the SIGTERM",
        stopped.elapsed()
    );
    g.stop_cleanly(a, 0);
    g.assert_exactly_once(3 * 50 * 2);
}

/// A rolling restart: with `shutdown.leave_group = "never"` the stopped
/// static member keeps its partitions (the survivor does not get them), and
/// the same member, restarted, takes them back and reads them.
#[test]
fn static_member_that_keeps_its_membership_gets_its_partitions_back_on_restart() {
    let _turn = support::exclusive();
    let g = Group::with_session_timeout("leave-never", LONG_SESSION_MS);
    let extra = "[shutdown]\nleave_group = \"never\"\n";
    let (a, b) = g.two_static_members(extra);
    let stopped = std::time::Instant::now();
    g.stop_cleanly(b, 1);
    let (before, _) = support::wait_committed(&g.settings, Duration::from_secs(1));
    g.publish_to_every_partition(1, 50);
    // The survivor reads its own partitions only; the stopped member's wait.
    sleep_ms(10_000);
    let (done, end) = support::wait_committed(&g.settings, Duration::ZERO);
    assert!(
        done > before,
        "the survivor committed nothing in 10 s\n{}",
        g.read_log(0)
    );
    assert!(
        done < end,
        "the survivor took the stopped static member's partitions ({done} of {end} committed)\n{}",
        g.read_log(0)
    );
    // Back under the same group.instance.id, well within the session timeout.
    let b2 = g.start_static(1, extra);
    let (done, end) = support::wait_committed(&g.settings, Duration::from_secs(30));
    assert_eq!(
        done,
        end,
        "the restarted member did not read its partitions\n{}",
        g.read_log(1)
    );
    assert!(
        stopped.elapsed() < Duration::from_millis(LONG_SESSION_MS),
        "the partitions may have moved by session timeout instead"
    );
    for (i, p) in [(0, a), (1, b2)] {
        g.stop_cleanly(p, i);
    }
    g.assert_exactly_once(3 * 50 * 2);
}
