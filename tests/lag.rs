//! What /metrics says about consumer lag and group membership, read over
//! HTTP from processor processes the way Prometheus scrapes them: lag is the
//! group's committed offset to the partition's last stable offset, only for
//! the partitions an instance owns, so the sum over instances is the group's
//! true lag; /readyz and the membership metrics follow the rebalance
//! callbacks, not the statistics cycle.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

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

/// How long an instance holds what it read before committing, in the
/// tests that must see a true lag above 0: a transaction takes records for
/// the commit interval (never less than half of it) from its oldest
/// record's read, so for that long the group's committed offsets stay put
/// while the records sit read. Allowed because the transaction timeout is
/// at least twice as long.
const HOLD_MS: u64 = 30_000;
/// Give up on seeing the held lag after this long (past one hold, it only
/// makes a failure slower to report).
const HOLD_WITHIN_S: u64 = 45;

/// Settings and extra config lines for an instance that holds what it reads
/// for [`HOLD_MS`].
fn holding(group: &Group) -> (streamscore::config::Settings, String) {
    let mut settings = group.settings.clone();
    settings.kafka.transaction_timeout_ms = 2 * HOLD_MS;
    (
        settings,
        format!("[transactions]\ncommit_interval_ms = {HOLD_MS}\n"),
    )
}

/// The group's true lag, counted without any instance: the input
/// partitions' ends less the group's committed offsets (-1 while the broker
/// does not answer).
fn true_lag(group: &Group) -> i64 {
    let s = &group.settings;
    streamscore::verify::committed_progress(s, &s.input.topics, &s.kafka.group_id)
        .map_or(-1, |(done, end)| end - done)
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

/// A backlog that builds up while the group is away (it has committed
/// before, so librdkafka's own lag had a committed offset to start from and
/// froze there) is first reported as exactly the group's true lag (held
/// uncommitted for a while, see [`holding`]), then drained, and the lag
/// comes down to 0 on every partition.
#[test]
fn lag_comes_down_to_zero_when_a_backlog_is_drained() {
    let _turn = support::exclusive();
    let group = Group::new("drain");
    group.publish_to_every_partition(0, 10);
    let first = group.start(0, "");
    first.wait_address(Duration::from_secs(60));
    group.wait_committed(Duration::from_secs(90));
    group.stop_cleanly(first, 0);

    group.publish_to_every_partition(1, 400);
    let (settings, extra) = holding(&group);
    let again = group.start_with(1, settings, &extra);
    let addr = again.wait_address(Duration::from_secs(60));
    until_metrics(&[&addr], Duration::from_secs(HOLD_WITHIN_S), |t| {
        let lag = per_partition(&t[0], LAG);
        let seconds = per_partition(&t[0], LAG_SECONDS);
        let truth = true_lag(&group);
        let ok = truth == 1200
            && lag.len() == 3
            && lag.values().sum::<f64>() == 1200.0
            && seconds.len() == 3
            && seconds.values().all(|&s| s > 0.0);
        (!ok).then(|| {
            format!(
                "while the backlog is held uncommitted (true lag {truth}, 1200 expected): \
                 lag {lag:?}, lag seconds {seconds:?} (above 0 expected)"
            )
        })
    });
    group.wait_committed(Duration::from_secs(90));
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
    group.stop_cleanly(again, 1);
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
    // After the rebalance: a backlog both hold uncommitted.
    group.publish_to_every_partition(1, 40);
    let group = &group;
    let expect_sum = |zero: bool| {
        move |t: &[String]| {
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
            let truth = true_lag(group);
            let ok = seen == [0, 1, 2]
                && (if zero { truth == 0 } else { truth >= 120 })
                && sum == truth as f64
                && seconds.len() == 3
                && seconds
                    .iter()
                    .all(|&s| if zero { s == 0.0 } else { s > 0.0 })
                && !la.is_empty()
                && !lb.is_empty()
                && owned_a == la.len() as f64
                && owned_b == lb.len() as f64;
            (!ok).then(|| {
                format!(
                    "instance 0 reports {la:?} (assigned {owned_a}), instance 1 reports {lb:?} (assigned {owned_b}), \
                     lag seconds {sa:?} and {sb:?}: every partition once, summing to the true lag {truth} ({}), was expected",
                    if zero { "0 once committed" } else { "at least the 120 held" }
                )
            })
        }
    };
    until_metrics(
        &[&addr_a, &addr_b],
        Duration::from_secs(HOLD_WITHIN_S),
        expect_sum(false),
    );
    group.wait_committed(Duration::from_secs(90));
    until_metrics(
        &[&addr_a, &addr_b],
        Duration::from_secs(30),
        expect_sum(true),
    );
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
    for reason in streamscore::dead_letter::Reason::ALL {
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
