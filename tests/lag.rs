//! What /metrics says about consumer lag and group membership, read over
//! HTTP from processor processes the way Prometheus scrapes them: lag is the
//! group's committed offset to the partition's last stable offset, only for
//! the partitions an instance owns, so the sum over instances is the group's
//! true lag; /readyz and the membership metrics follow the rebalance
//! callbacks, not the statistics cycle.

use crate::support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::Offset;
use streamscore::clients::{Role, client_config};

use support::group::Group;
use support::process::http_get;
use support::scrape::{metrics_text, per_partition, samples, value, value_with};

const LAG: &str = "streamscore_consumer_lag";
const LAG_SECONDS: &str = "streamscore_consumer_lag_seconds";

/// Polls `check` on the instance's /metrics until it returns None (done),
/// or fails with the last complaint after `within`.
fn until_metrics(
    addrs: &[&str],
    within: Duration,
    mut check: impl FnMut(&[String]) -> Option<String>,
) {
    let deadline = Instant::now() + within;
    loop {
        let texts: Vec<String> = addrs.iter().map(|a| metrics_text(a)).collect();
        let Some(complaint) = check(&texts) else {
            return;
        };
        assert!(Instant::now() < deadline, "{complaint}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// How long an instance may hold what it read before committing, in the
/// tests that must see a true lag above 0: a transaction takes records for
/// the commit interval less what commits recently took, never less than
/// half of it, counted from its oldest record's read (src/kafka/sink.rs,
/// `fill_time`). Allowed because the transaction timeout is twice as long
/// (the broker's `transaction.max.timeout.ms` is Kafka's default 900 s).
const HOLD_MS: u64 = 60_000;
/// Give up on seeing the held lag this long after the publish that starts
/// the hold: shorter than the shortest hold (half of [`HOLD_MS`]), so a
/// failure reports what the instances showed while the lag was still held,
/// not a truth that has moved on.
const HOLD_WITHIN: Duration = Duration::from_secs(25);
/// Asking the broker for the true lag: a slow answer is retried, never
/// waited for long.
const ASK_WITHIN: Duration = Duration::from_secs(5);

/// Settings and extra config lines for an instance that holds what it reads
/// for at least half of [`HOLD_MS`].
fn holding(group: &Group) -> (streamscore::Settings, String) {
    let mut settings = group.settings.clone();
    settings.kafka.transaction_timeout = Duration::from_millis(2 * HOLD_MS);
    (
        settings,
        format!("[transactions]\ncommit_interval_ms = {HOLD_MS}\n"),
    )
}

/// The group's true lag, counted without any instance: the input
/// partitions' ends less the group's committed offsets. One client for the
/// whole test (not one per question), so a poll costs two quick requests.
struct TrueLag {
    reader: BaseConsumer,
    topic: String,
    partitions: TopicPartitionList,
}

impl TrueLag {
    fn new(group: &Group) -> Self {
        let s = &group.settings;
        let reader = client_config(
            s,
            Role::ToolReader {
                group_id: &s.kafka.group_id,
            },
        )
        .create()
        .expect("a reader for the group's offsets");
        let topic = s.input.topics[0].clone();
        let mut partitions = TopicPartitionList::new();
        for p in 0..3 {
            partitions.add_partition(&topic, p);
        }
        Self {
            reader,
            topic,
            partitions,
        }
    }

    /// None while the broker does not answer in time.
    fn now(&self) -> Option<i64> {
        let committed = self
            .reader
            .committed_offsets(self.partitions.clone(), ASK_WITHIN)
            .ok()?;
        let mut lag = 0;
        for e in committed.elements() {
            let (_, end) = self
                .reader
                .fetch_watermarks(&self.topic, e.partition(), ASK_WITHIN)
                .ok()?;
            let done = match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            };
            lag += end - done;
        }
        Some(lag)
    }
}

/// Polls `check` on the instances' /metrics, each scrape taken between two
/// readings of the true lag, until `check` is content with a scrape whose
/// readings both equal `truth` (nothing is published meanwhile and the
/// group's offsets only move forward, so the truth held all through the
/// scrape); fails with the last complaint at `give_up`.
fn until_held(
    addrs: &[&str],
    true_lag: &TrueLag,
    truth: i64,
    give_up: Instant,
    mut check: impl FnMut(&[String]) -> Option<String>,
) {
    loop {
        let before = true_lag.now();
        let texts: Vec<String> = addrs.iter().map(|a| metrics_text(a)).collect();
        let after = true_lag.now();
        let complaint = if before == Some(truth) && after == Some(truth) {
            check(&texts)
        } else {
            Some(format!(
                "the true lag was {before:?} before the scrape and {after:?} after, \
                 {truth} expected while the instances hold it (None: the broker did not answer)"
            ))
        };
        let Some(complaint) = complaint else {
            return;
        };
        assert!(Instant::now() < give_up, "{complaint}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn wait_log(group: &Group, i: usize, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !group.read_log(i).contains(needle) {
        assert!(
            Instant::now() < deadline,
            "instance {i} never logged {needle:?}:\n{}",
            group.read_log(i)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A backlog that arrives for a group that has committed before (so
/// librdkafka's own lag had a committed offset to start from and froze
/// there) is first reported as exactly the group's true lag (held
/// uncommitted for a while, see [`holding`]), then drained, and the lag
/// comes down to 0 on every partition.
#[test]
fn lag_comes_down_to_zero_when_a_backlog_is_drained() {
    let _turn = support::exclusive();
    let group = Group::new("drain");
    let true_lag = TrueLag::new(&group);
    group.publish_to_every_partition(0, 10);
    let first = group.start(0, "");
    first.wait_address(Duration::from_secs(60));
    group.wait_committed(Duration::from_secs(90));
    group.stop_cleanly(first, 0);

    let (settings, extra) = holding(&group);
    let again = group.start_with(1, settings, &extra);
    let addr = again.wait_address(Duration::from_secs(60));
    // Published once the instance is in the group and reading, so the hold
    // (from the first read of the backlog) starts after the deadline does.
    wait_log(&group, 1, "partitions assigned");
    let give_up = Instant::now() + HOLD_WITHIN;
    group.publish_to_every_partition(1, 400);
    until_held(&[&addr], &true_lag, 1200, give_up, |t| {
        let lag = per_partition(&t[0], LAG);
        let seconds = per_partition(&t[0], LAG_SECONDS);
        let ok = lag.len() == 3
            && lag.values().sum::<f64>() == 1200.0
            && seconds.len() == 3
            && seconds.values().all(|&s| s > 0.0);
        (!ok).then(|| {
            format!(
                "while the backlog is held uncommitted (true lag 1200): \
                 lag {lag:?}, lag seconds {seconds:?} (above 0 expected)"
            )
        })
    });
    group.wait_committed(Duration::from_secs(120));
    // Nothing more is published: the true lag stays 0 from here.
    until_metrics(&[&addr], Duration::from_secs(30), |t| {
        let lag = per_partition(&t[0], LAG);
        let seconds = per_partition(&t[0], LAG_SECONDS);
        let zero = BTreeMap::from([(0, 0.0), (1, 0.0), (2, 0.0)]);
        (lag != zero || seconds != zero)
            .then(|| format!("after draining, lag {lag:?} and lag seconds {seconds:?}"))
    });
    let text = metrics_text(&addr);
    assert_eq!(
        value(&text, "streamscore_records_consumed_total"),
        Some(1200.0),
        "each record of the backlog counted once"
    );
    assert_eq!(value(&text, "streamscore_assigned_partitions"), Some(3.0));
    // The histograms come from the same store as the counters: one latency
    // per record committed, every record timed through decryption (more if
    // some were read again), batches counted.
    assert_eq!(
        value(&text, "streamscore_end_to_end_latency_seconds_count"),
        Some(1200.0)
    );
    assert!(
        value_with(
            &text,
            "streamscore_stage_duration_seconds_count",
            "stage",
            "decrypt"
        )
        .is_some_and(|n| n >= 1200.0),
        "{:?}",
        samples(&text, "streamscore_stage_duration_seconds_count")
    );
    assert!(value(&text, "streamscore_batch_size_count").is_some_and(|n| n >= 1.0));
    support::scrape::assert_promtool_accepts(&text);
    group.stop_cleanly(again, 1);
}

/// Each instance reports exactly the partitions it owns (as many as its
/// assigned gauge says, none twice, none frozen from a partition it gave
/// away), and the sum over both is `truth`, with lag seconds above 0 while
/// a lag is held, 0 once none is.
fn split_between_two(t: &[String], truth: i64) -> Option<String> {
    let (la, lb) = (per_partition(&t[0], LAG), per_partition(&t[1], LAG));
    let owned_a = value(&t[0], "streamscore_assigned_partitions").unwrap_or(-1.0);
    let owned_b = value(&t[1], "streamscore_assigned_partitions").unwrap_or(-1.0);
    let mut seen: Vec<i32> = la.keys().chain(lb.keys()).copied().collect();
    seen.sort_unstable();
    let sum: f64 = la.values().chain(lb.values()).sum();
    let (sa, sb) = (
        per_partition(&t[0], LAG_SECONDS),
        per_partition(&t[1], LAG_SECONDS),
    );
    let seconds: Vec<f64> = sa.values().chain(sb.values()).copied().collect();
    let ok = seen == [0, 1, 2]
        && sum == truth as f64
        && seconds.len() == 3
        && seconds
            .iter()
            .all(|&s| if truth == 0 { s == 0.0 } else { s > 0.0 })
        && !la.is_empty()
        && !lb.is_empty()
        && owned_a == la.len() as f64
        && owned_b == lb.len() as f64;
    (!ok).then(|| {
        format!(
            "instance 0 reports {la:?} (assigned {owned_a}), instance 1 reports {lb:?} (assigned {owned_b}), \
             lag seconds {sa:?} and {sb:?}: every partition once, summing to the true lag {truth}, was expected"
        )
    })
}

/// Two members of one group after a rebalance: each reports exactly the
/// partitions it owns (none frozen from a partition it gave away), and the
/// sum over both is the group's true lag, counted independently from the
/// group's committed offsets and the partitions' ends: a backlog they read
/// but hold uncommitted (see [`holding`]), then 0 once it is committed.
#[test]
fn two_instances_report_their_own_partitions_and_sum_to_the_true_lag() {
    let _turn = support::exclusive();
    let group = Group::new("pair");
    let true_lag = TrueLag::new(&group);
    let (settings, extra) = holding(&group);
    let a = group.start_with(0, settings.clone(), &extra);
    let addr_a = a.wait_address(Duration::from_secs(60));
    wait_log(&group, 0, "partitions assigned");
    // A owns all three and has reported them.
    until_metrics(&[&addr_a], Duration::from_secs(30), |t| {
        let lag = per_partition(&t[0], LAG);
        (lag.len() != 3).then(|| format!("instance 0 alone reports {lag:?}"))
    });
    // A reads this and holds it uncommitted until B's arrival takes
    // partitions away (the revocation commits, or aborts for the next owner).
    group.publish_to_every_partition(0, 50);

    let b = group.start_with(1, settings, &extra);
    let addr_b = b.wait_address(Duration::from_secs(60));
    wait_log(&group, 1, "partitions assigned");
    until_metrics(&[&addr_a, &addr_b], Duration::from_secs(60), |t| {
        let (la, lb) = (per_partition(&t[0], LAG), per_partition(&t[1], LAG));
        (la.is_empty() || lb.is_empty() || la.len() + lb.len() != 3)
            .then(|| format!("after the rebalance, instance 0 reports {la:?}, instance 1 {lb:?}"))
    });
    // What a revocation aborted is read again and held by a transaction
    // whose clock started at that re-read: once it is committed no
    // transaction is open, and the next one starts with the next publish.
    group.wait_committed(Duration::from_secs(120));
    // After the rebalance: a backlog both hold uncommitted.
    let give_up = Instant::now() + HOLD_WITHIN;
    group.publish_to_every_partition(1, 40);
    until_held(&[&addr_a, &addr_b], &true_lag, 120, give_up, |t| {
        split_between_two(t, 120)
    });
    group.wait_committed(Duration::from_secs(120));
    // Nothing more is published: the true lag stays 0 from here.
    until_metrics(&[&addr_a, &addr_b], Duration::from_secs(30), |t| {
        split_between_two(t, 0)
    });
    let text_a = metrics_text(&addr_a);
    assert!(
        value_with(&text_a, "streamscore_rebalances_total", "event", "revoked")
            .is_some_and(|n| n >= 1.0),
        "instance 0 gave partitions away: {:?}",
        samples(&text_a, "streamscore_rebalances_total")
    );
    group.stop_cleanly(b, 1);
    group.stop_cleanly(a, 0);
}

/// A new group on an empty input: nothing committed anywhere, yet each
/// partition has its lag series (0), and every counter is there at 0.
#[test]
fn a_new_group_with_no_commits_has_its_series_and_counters_at_zero() {
    let _turn = support::exclusive();
    let group = Group::new("fresh");
    let p = group.start(0, "");
    let addr = p.wait_address(Duration::from_secs(60));
    until_metrics(&[&addr], Duration::from_secs(30), |t| {
        let lag = per_partition(&t[0], LAG);
        let seconds = per_partition(&t[0], LAG_SECONDS);
        let zero = BTreeMap::from([(0, 0.0), (1, 0.0), (2, 0.0)]);
        (lag != zero || seconds != zero).then(|| format!("lag {lag:?}, seconds {seconds:?}"))
    });
    let text = metrics_text(&addr);
    for counter in [
        "streamscore_records_consumed_total",
        "streamscore_records_reread_total",
        "streamscore_records_scored_total",
        "streamscore_inference_errors_total",
        "streamscore_producers_replaced_total",
        "streamscore_dead_letter_values_omitted_total",
    ] {
        assert_eq!(
            value(&text, counter),
            Some(0.0),
            "{counter} at 0 from the start"
        );
    }
    for outcome in ["committed", "aborted"] {
        assert_eq!(
            value_with(&text, "streamscore_transactions_total", "outcome", outcome),
            Some(0.0),
            "transactions_total{{outcome={outcome}}}"
        );
    }
    for reason in streamscore::dead_letters::Reason::ALL {
        assert_eq!(
            value_with(
                &text,
                "streamscore_records_dead_lettered_total",
                "reason",
                reason.as_str()
            ),
            Some(0.0),
            "dead_lettered_total{{reason={}}}",
            reason.as_str()
        );
    }
    for (event, at_least) in [("assigned", 1.0), ("revoked", 0.0), ("lost", 0.0)] {
        assert!(
            value_with(&text, "streamscore_rebalances_total", "event", event)
                .is_some_and(|n| n >= at_least),
            "rebalances_total{{event={event}}}: {:?}",
            samples(&text, "streamscore_rebalances_total")
        );
    }
    assert_eq!(
        value_with(
            &text,
            "streamscore_build_info",
            "version",
            env!("CARGO_PKG_VERSION")
        ),
        Some(1.0)
    );
    // CPU seconds are whole seconds (a counter): present, maybe 0 yet.
    assert!(
        value(&text, "process_cpu_seconds_total").is_some(),
        "{:?}",
        samples(&text, "process_cpu_seconds_total")
    );
    for process in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            value(&text, process).is_some_and(|v| v > 0.0),
            "{process}: {:?}",
            samples(&text, process)
        );
    }
    for name in [LAG, LAG_SECONDS] {
        assert_eq!(
            text.matches(&format!("# TYPE {name} gauge\n")).count(),
            1,
            "one TYPE line for {name}"
        );
    }
    group.stop_cleanly(p, 0);
}

/// With librdkafka's statistics far apart, /readyz and the membership
/// gauge still show the assignment as soon as it happened.
#[test]
fn readiness_and_membership_follow_the_assignment_at_once() {
    let _turn = support::exclusive();
    let group = Group::new("ready");
    let p = group.start(
        0,
        "[kafka.consumer]\n\"statistics.interval.ms\" = \"600000\"\n",
    );
    let addr = p.wait_address(Duration::from_secs(60));
    wait_log(&group, 0, "partitions assigned");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = http_get(&addr, "/readyz");
        let text = metrics_text(&addr);
        let gauge = value(&text, "streamscore_assigned_partitions");
        if status == 200 && body["assigned_partitions"] == 3 && gauge == Some(3.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the assignment: /readyz {status} {body}, assigned_partitions gauge {gauge:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    group.stop_cleanly(p, 0);
}
