//! The scenarios' table and their targets (issue 14): each figure beside the
//! baseline it is judged against, measured in the same run.

use std::fmt::Write;

use crate::bench::Results;
use crate::bench::report::THROUGHPUT_TARGET;
use crate::bench::scenarios::{Drain, Light, PAUSE, RECOVERED_SHARE};

/// After a pause, the rate must be back within this long.
const RECOVERY_TARGET_S: f64 = 2.0;
/// With the short interval: p99 at the light rate, and its maximum
/// throughput against the default interval's.
const SHORT_P99_TARGET_MS: f64 = 30.0;
const SHORT_THROUGHPUT_TARGET: f64 = 0.8;
/// CPU a record at the light rate against at full speed.
const LIGHT_CPU_TARGET: f64 = 2.0;
const IDLE_TARGET: f64 = 0.02;
const READY_TARGET_S: f64 = 2.0;
/// Against the Kafka Streams reference on the same backlog: throughput at
/// least this many times its own, CPU a record at most its own over this.
const KSTREAMS_THROUGHPUT_TARGET: f64 = 4.0;
const KSTREAMS_CPU_TARGET: f64 = 5.0;

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "missed" }
}

/// The table of the service-process scenarios, then their verdicts.
pub(super) fn render(out: &mut String, r: &Results) {
    let s = &r.scenarios;
    let kafka = r.kafka.rows_per_second().max(f64::MIN_POSITIVE);
    let _ = writeln!(
        out,
        "\n### Scenarios: `streamscore run` as its own process\n\n\
         Each process starts with the {} -record backlog waiting; ready is process start to /readyz 200, first read is process start to its first record read (ready, joining the group, the first fetch); rows/s from the first record read to the last commit (cold, timed as the Kafka ceiling is) and between 25 % and 75 % of the backlog (steady); CPU is the process's own (/proc), latency is a read_committed reader's (read − event time).\n",
        r.events
    );
    let _ = writeln!(
        out,
        "| commit interval | ready s | first read s | cold rows/s | of kafka ceiling | steady rows/s | of kafka ceiling | CPU µs/row at full speed | peak RSS MiB | light rows/s | p50 ms | p99 ms | CPU µs/row at light load |"
    );
    let _ = writeln!(
        out,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let interval = r.settings.transactions.commit_interval.as_millis() as u64;
    row(out, interval, &s.default, &s.light, kafka);
    row(
        out,
        s.short_interval_ms,
        &s.short_interval,
        &s.short_light,
        kafka,
    );
    let recovered = s
        .pause
        .recovered_after_s
        .map_or("never (the backlog ended first)".to_owned(), |t| {
            format!("{t:.2} s")
        });
    let _ = writeln!(
        out,
        "\nPause: SIGSTOP for {:.1} s a third of the way through the backlog. {:.0} rows/s before; back to {:.0} % of that {recovered} after SIGCONT; {:.0} rows/s from SIGCONT to the last commit. Idle: {:.2} % of a core.",
        PAUSE.as_secs_f64(),
        s.pause.before_rows_per_s,
        RECOVERED_SHARE * 100.0,
        s.pause.after_rows_per_s,
        s.idle_core_share * 100.0
    );
    for (interval, light) in [(interval, &s.light), (s.short_interval_ms, &s.short_light)] {
        let busiest: Vec<String> = (light.threads.iter().take(5))
            .map(|(name, us)| format!("{name} {us:.1}"))
            .collect();
        let stages: Vec<String> = (light.stages.iter())
            .map(|(name, n, mean)| match name.as_str() {
                "transactions" => format!("{n:.0} transactions"),
                _ => format!("{name} {n:.0} × {mean:.2} ms"),
            })
            .collect();
        let _ = writeln!(
            out,
            "At {} rows/s ({interval} ms): CPU µs a row by thread: {}; stages (count × mean): {}.",
            light.rate,
            busiest.join(", "),
            stages.join(", ")
        );
    }
    kstreams(out, r);
    targets(out, r, kafka);
}

/// The Kafka Streams reference beside the service's cold backlog: the same
/// records, broker and exactly-once check, each its own process.
fn kstreams(out: &mut String, r: &Results) {
    let (d, k) = (&r.scenarios.default, &r.scenarios.kstreams);
    let _ = writeln!(
        out,
        "\n### Kafka Streams reference (benches/kstreams)\n\n\
         Kafka Streams 4.1, exactly_once_v2, the same commit interval, one ONNX Runtime Java call a record, on the same {}-record backlog: rows/s from ready (state RUNNING: it has joined the group) to the last commit, CPU of the whole JVM over the same span; streamscore's are its cold backlog's (from its first record read), and its ready is its first read.\n",
        r.events
    );
    let _ = writeln!(
        out,
        "| system | ready s | cold rows/s | CPU µs/row | peak RSS MiB |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    let rss = |m: Option<f64>| m.map_or("–".into(), |m| format!("{m:.0}"));
    let _ = writeln!(
        out,
        "| streamscore | {:.2} | {:.0} | {:.1} | {} |",
        d.first_read_s,
        d.cold_rows_per_s,
        d.cpu_us_per_row,
        rss(d.peak_rss_mib)
    );
    let _ = writeln!(
        out,
        "| Kafka Streams | {:.2} | {:.0} | {:.1} | {} |",
        k.ready_s,
        k.rows_per_s,
        k.cpu_us_per_row,
        rss(k.peak_rss_mib)
    );
    let _ = writeln!(
        out,
        "\nstreamscore against Kafka Streams: {:.2}× the throughput, {:.2}× less CPU a record.",
        kstreams_throughput_ratio(r),
        kstreams_cpu_ratio(r)
    );
}

fn kstreams_throughput_ratio(r: &Results) -> f64 {
    let s = &r.scenarios;
    s.default.cold_rows_per_s / s.kstreams.rows_per_s.max(f64::MIN_POSITIVE)
}

fn kstreams_cpu_ratio(r: &Results) -> f64 {
    let s = &r.scenarios;
    s.kstreams.cpu_us_per_row / s.default.cpu_us_per_row.max(f64::MIN_POSITIVE)
}

fn row(out: &mut String, interval: u64, d: &Drain, l: &Light, kafka: f64) {
    let _ = writeln!(
        out,
        "| {interval} ms | {:.2} | {:.2} | {:.0} | {:.1}% | {:.0} | {:.1}% | {:.1} | {} | {} | {:.1} | {:.1} | {:.1} |",
        d.ready_s,
        d.first_read_s,
        d.cold_rows_per_s,
        d.cold_rows_per_s / kafka * 100.0,
        d.steady_rows_per_s,
        d.steady_rows_per_s / kafka * 100.0,
        d.cpu_us_per_row,
        d.peak_rss_mib.map_or("–".into(), |m| format!("{m:.0}")),
        l.rate,
        l.p50_ms,
        l.p99_ms,
        l.cpu_us_per_row
    );
}

fn targets(out: &mut String, r: &Results, kafka: f64) {
    let s = &r.scenarios;
    let d = &s.default;
    let _ = writeln!(out, "\nScenario targets:\n");
    let lines = [
        (
            format!(
                "cold backlog and steady ≥ {:.0}% of the kafka ceiling: {:.1}% and {:.1}%",
                THROUGHPUT_TARGET * 100.0,
                d.cold_rows_per_s / kafka * 100.0,
                d.steady_rows_per_s / kafka * 100.0
            ),
            d.cold_rows_per_s.min(d.steady_rows_per_s) >= THROUGHPUT_TARGET * kafka,
        ),
        (
            format!(
                "back to its rate within {RECOVERY_TARGET_S:.0} s of a {:.1} s pause: {}",
                PAUSE.as_secs_f64(),
                s.pause
                    .recovered_after_s
                    .map_or("never".to_owned(), |t| format!("{t:.2} s"))
            ),
            s.pause
                .recovered_after_s
                .is_some_and(|t| t <= RECOVERY_TARGET_S),
        ),
        (
            format!(
                "commit_interval_ms = {}: p99 ≤ {SHORT_P99_TARGET_MS:.0} ms at {} rows/s: {:.1} ms",
                s.short_interval_ms, s.short_light.rate, s.short_light.p99_ms
            ),
            s.short_light.p99_ms <= SHORT_P99_TARGET_MS,
        ),
        (
            format!(
                "commit_interval_ms = {}: throughput ≥ {:.0}% of the default's: {:.1}%",
                s.short_interval_ms,
                SHORT_THROUGHPUT_TARGET * 100.0,
                s.short_interval.cold_rows_per_s / d.cold_rows_per_s.max(f64::MIN_POSITIVE) * 100.0
            ),
            s.short_interval.cold_rows_per_s >= SHORT_THROUGHPUT_TARGET * d.cold_rows_per_s,
        ),
        (
            format!(
                "CPU a row at {} rows/s ≤ {LIGHT_CPU_TARGET:.0}× at full speed: {:.1} against {:.1} µs ({:.1}×)",
                s.light.rate,
                s.light.cpu_us_per_row,
                d.cpu_us_per_row,
                s.light.cpu_us_per_row / d.cpu_us_per_row.max(f64::MIN_POSITIVE)
            ),
            s.light.cpu_us_per_row <= LIGHT_CPU_TARGET * d.cpu_us_per_row,
        ),
        (
            format!(
                "idle ≤ {:.0}% of a core: {:.2}%",
                IDLE_TARGET * 100.0,
                s.idle_core_share * 100.0
            ),
            s.idle_core_share <= IDLE_TARGET,
        ),
        (
            format!("ready ≤ {READY_TARGET_S:.0} s: {:.2} s", d.ready_s),
            d.ready_s <= READY_TARGET_S,
        ),
    ];
    for (line, met) in lines.into_iter().chain(kstreams_targets(r)) {
        let _ = writeln!(out, "- {line} — {}.", verdict(met));
    }
}

/// The Kafka Streams ratios against their targets.
fn kstreams_targets(r: &Results) -> [(String, bool); 2] {
    [
        (
            format!(
                "≥ {KSTREAMS_THROUGHPUT_TARGET:.0}× Kafka Streams' throughput: {:.2}×",
                kstreams_throughput_ratio(r)
            ),
            kstreams_throughput_ratio(r) >= KSTREAMS_THROUGHPUT_TARGET,
        ),
        (
            format!(
                "≥ {KSTREAMS_CPU_TARGET:.0}× less CPU a record than Kafka Streams: {:.2}×",
                kstreams_cpu_ratio(r)
            ),
            kstreams_cpu_ratio(r) >= KSTREAMS_CPU_TARGET,
        ),
    ]
}
