//! The scenarios that decide whether speed holds (issue 14), each run on the
//! service as its own process ([`Service`]) against the same backlog:
//!
//! - **cold backlog**: the process starts with the backlog waiting; rows/s
//!   from its first record read to the last commit (as the Kafka ceiling and
//!   the Kafka Streams reference are timed: joining the group is start-up,
//!   reported on its own as the first read), and CPU per record from ready;
//! - **steady**: the rate between 25 % and 75 % of that drain, once
//!   start-up and the tail are out of it;
//! - **ready**: process start to /readyz 200;
//! - **idle**: CPU share of one core with nothing to read;
//! - **light load**: a stream at a fixed rate (5 000/s by default), its
//!   latency as a read_committed reader sees it (seen − event time) and CPU
//!   per record;
//! - **pause**: SIGSTOP for 1.5 s a third of the way through the backlog;
//!   the rate before, and how long after SIGCONT until it is back;
//! - **short interval**: the cold drain and the light load again with
//!   `commit_interval_ms = 10`;
//! - **Kafka Streams**: the reference (benches/kstreams) drains the same
//!   backlog as its own process, measured the same way ([`kstreams`]).
//!
//! Every process is checked exactly-once by the independent reader before
//! its figures count.

use std::time::{Duration, Instant};

use streamscore::Settings;

use crate::bench::kstreams::{self, ReferenceOptions, ReferenceRun};
use crate::bench::latency_reader::{LatencyReader, now_ms};
use crate::bench::service::Service;
use crate::bench::{Bench, BenchError, STALL, check};

/// How long the process is stopped in the pause scenario.
pub(super) const PAUSE: Duration = Duration::from_millis(1_500);
/// A rate window's share of the steady rate at which the rate counts as back.
pub(super) const RECOVERED_SHARE: f64 = 0.85;
/// The window over which the rate after a pause is judged.
const RATE_WINDOW: Duration = Duration::from_millis(300);
/// How often progress is sampled from /metrics.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);

/// A backlog drained by one process.
#[derive(Debug, Clone, Default)]
pub struct Drain {
    pub ready_s: f64,
    /// Process start to its first record read: ready, joining the group,
    /// the first fetch.
    pub first_read_s: f64,
    pub rows: u64,
    /// First record read to the last commit.
    pub cold_rows_per_s: f64,
    /// Between 25 % and 75 % of the backlog committed.
    pub steady_rows_per_s: f64,
    pub cpu_us_per_row: f64,
    pub peak_rss_mib: Option<f64>,
}

/// A stream at a fixed rate, as a read_committed reader sees it.
#[derive(Debug, Clone, Default)]
pub struct Light {
    pub rate: u64,
    pub rows: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub cpu_us_per_row: f64,
    /// CPU µs a row per thread kind, busiest first.
    pub threads: Vec<(String, f64)>,
    /// Per stage over the run: (count, mean ms); "transactions": (count, 0).
    pub stages: Vec<(String, f64, f64)>,
}

/// The pause scenario.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    pub before_rows_per_s: f64,
    /// SIGCONT until a window's rate is back to [`RECOVERED_SHARE`] of the
    /// rate before; None when the backlog ran out first.
    pub recovered_after_s: Option<f64>,
    /// From SIGCONT to the last commit.
    pub after_rows_per_s: f64,
}

#[derive(Debug, Clone, Default)]
pub struct Scenarios {
    pub default: Drain,
    pub idle_core_share: f64,
    pub light: Light,
    pub pause: Recovery,
    pub short_interval: Drain,
    pub short_light: Light,
    pub short_interval_ms: u64,
    /// The Kafka Streams reference on the same backlog.
    pub kstreams: ReferenceRun,
    pub verified: Vec<String>,
}

/// Committed counts over time, from the start of sampling, and when the
/// first record had been read.
#[derive(Default)]
struct Curve(Vec<(Duration, u64)>, Option<Duration>);

impl Curve {
    /// When `rows` had first been committed (interpolated between samples).
    fn time_of(&self, rows: u64) -> Option<Duration> {
        let i = self.0.iter().position(|&(_, n)| n >= rows)?;
        if i == 0 {
            return Some(self.0[0].0);
        }
        let ((t0, n0), (t1, n1)) = (self.0[i - 1], self.0[i]);
        let f = (rows - n0) as f64 / (n1 - n0).max(1) as f64;
        Some(t0 + (t1 - t0).mul_f64(f))
    }

    /// Rows/s between the moments `from` and `to` rows were committed.
    fn rate_between(&self, from: u64, to: u64) -> f64 {
        match (self.time_of(from), self.time_of(to)) {
            (Some(a), Some(b)) if b > a => (to - from) as f64 / (b - a).as_secs_f64(),
            _ => 0.0,
        }
    }

    /// Rows/s over the window ending at each sample from `since` on; the end
    /// of the first window whose rate reaches `target`.
    fn first_window_at(&self, since: Duration, target: f64) -> Option<Duration> {
        let at = |t: Duration| self.0.iter().rev().find(|&&(s, _)| s <= t).map(|&(_, n)| n);
        self.0
            .iter()
            .filter(|&&(t, _)| t >= since + RATE_WINDOW)
            .find(|&&(t, n)| {
                let before = at(t - RATE_WINDOW).unwrap_or(0);
                (n - before) as f64 / RATE_WINDOW.as_secs_f64() >= target
            })
            .map(|&(t, _)| t - since)
    }
}

impl Bench<'_> {
    /// Runs every scenario; the short interval's on settings of its own.
    pub(super) fn scenarios(&self) -> Result<Scenarios, BenchError> {
        let mut out = Scenarios::default();
        let (t, events) = (self.topics, self.opts.events);
        let base = self.phase("service", &t.backlog, &t.service_scores);
        let with_light = with_topics(&base, &[&t.backlog, &t.light]);
        let (drain, light, idle) = self.drain_then_light(&with_light, "service", &t.light)?;
        (out.default, out.light, out.idle_core_share) = (drain, light, idle);
        out.verified.push(check("service", &with_light)?);

        let pause = self.phase("pause", &t.backlog, &t.pause_scores);
        out.pause = self.pause(&pause, events)?;
        out.verified.push(check("pause", &pause)?);

        let mut short = self.phase("short", &t.backlog, &t.short_scores);
        short.transactions.commit_interval = Duration::from_millis(10);
        out.short_interval_ms = 10;
        let short = with_topics(&short, &[&t.backlog, &t.short_light]);
        let (drain, light, _) = self.drain_then_light(&short, "short", &t.short_light)?;
        (out.short_interval, out.short_light) = (drain, light);
        out.verified.push(check("short", &short)?);

        out.kstreams = kstreams::run_reference_blocking(&ReferenceOptions {
            settings: self.phase("kstreams", &t.backlog, &t.kstreams_scores),
            input: t.backlog.clone(),
            scores: t.kstreams_scores.clone(),
            dead_letters: t.dead_letters.clone(),
            keyring_json: self.source.keyring_json.clone(),
            events,
            dir: self.opts.out.clone(),
            name: format!("{}.kstreams", self.run_id),
        })?;
        out.verified.push(out.kstreams.verified.clone());
        Ok(out)
    }

    /// Cold backlog, then idle, then light load, on one process.
    fn drain_then_light(
        &self,
        settings: &Settings,
        name: &str,
        light_topic: &str,
    ) -> Result<(Drain, Light, f64), BenchError> {
        let mut service = self.service(settings, name)?;
        let ready = service.wait_ready(STALL)?;
        let cpu_at_ready = service.cpu()?;
        let events = self.opts.events;
        let curve = follow(&mut service, events, |_, _| Ok(()))?;
        let drain = drain_figures(&service, &curve, ready, cpu_at_ready, events)?;
        println!(
            "bench: {name}: ready after {:.2} s, first record read after {:.2} s, cold backlog {:.0} rows/s, steady {:.0} rows/s, {:.1} µs CPU a row",
            drain.ready_s,
            drain.first_read_s,
            drain.cold_rows_per_s,
            drain.steady_rows_per_s,
            drain.cpu_us_per_row
        );
        std::thread::sleep(Duration::from_secs(1));
        let idle = self.opts.level_duration;
        let before = service.cpu()?;
        std::thread::sleep(idle);
        let idle_share = (service.cpu()? - before).as_secs_f64() / idle.as_secs_f64();
        let light = self.light(&mut service, settings, light_topic, events)?;
        println!(
            "bench: {name}: idle {:.2}% of a core; at {} rows/s p50 {:.1} ms, p99 {:.1} ms, {:.1} µs CPU a row",
            idle_share * 100.0,
            light.rate,
            light.p50_ms,
            light.p99_ms,
            light.cpu_us_per_row
        );
        service.stop()?;
        Ok((drain, light, idle_share))
    }

    /// A stream at the light rate for two sweep steps' time, read back by a
    /// read_committed reader; `committed_before` is the process's count so far.
    fn light(
        &self,
        service: &mut Service,
        settings: &Settings,
        topic: &str,
        committed_before: u64,
    ) -> Result<Light, BenchError> {
        let rate = self.opts.light_rate.max(1);
        let rows = (rate as f64 * 2.0 * self.opts.level_duration.as_secs_f64()).max(1.0) as u64;
        let reader = LatencyReader::start(settings, now_ms())?;
        let cpu = service.cpu()?;
        let threads = service.thread_cpu();
        let stages = service.stages()?;
        let run = format!("{}-{topic}", self.run_id);
        let published = self.source.publish(topic, &run, 17, rows, rate)?;
        follow(service, committed_before + published, |_, _| Ok(()))?;
        let cpu = service.cpu()? - cpu;
        let per_row = |d: Duration| d.as_secs_f64() * 1e6 / published.max(1) as f64;
        let mut threads: Vec<(String, f64)> = service
            .thread_cpu()
            .into_iter()
            .map(|(name, after)| {
                let before = threads.get(&name).copied().unwrap_or_default();
                (name, per_row(after.saturating_sub(before)))
            })
            .collect();
        threads.sort_by(|a, b| b.1.total_cmp(&a.1));
        let stages = (service.stages()?.into_iter())
            .map(|(name, (count, sum))| {
                let (count0, sum0) = stages.get(&name).copied().unwrap_or_default();
                let n = count - count0;
                (name, n, (sum - sum0) * 1e3 / n.max(1.0))
            })
            .collect();
        let latency = reader.finish(published, STALL)?;
        let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
        Ok(Light {
            rate,
            rows: published,
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            cpu_us_per_row: per_row(cpu),
            threads,
            stages,
        })
    }

    /// The backlog again, with the process stopped for [`PAUSE`] a third of
    /// the way through.
    fn pause(&self, settings: &Settings, events: u64) -> Result<Recovery, BenchError> {
        let mut service = self.service(settings, "pause")?;
        service.wait_ready(STALL)?;
        let at = events / 3;
        let mut resumed: Option<Duration> = None;
        let curve = follow(&mut service, events, |service, (t, n)| {
            if resumed.is_none() && n >= at {
                service.pause(true)?;
                std::thread::sleep(PAUSE);
                service.pause(false)?;
                resumed = Some(t + PAUSE);
            }
            Ok(())
        })?;
        service.stop()?;
        let before = curve.rate_between(events / 10, at);
        let resumed = resumed.unwrap_or_default();
        let end = curve.time_of(events).unwrap_or_default();
        let after_rows = events
            - curve
                .0
                .iter()
                .find(|&&(t, _)| t >= resumed)
                .map_or(0, |s| s.1);
        let recovery = Recovery {
            before_rows_per_s: before,
            recovered_after_s: curve
                .first_window_at(resumed, before * RECOVERED_SHARE)
                .map(|d| d.as_secs_f64()),
            after_rows_per_s: after_rows as f64
                / (end.saturating_sub(resumed)).as_secs_f64().max(1e-3),
        };
        println!(
            "bench: pause: {:.0} rows/s before, {:.0} rows/s after, back to {:.0}% after {}",
            recovery.before_rows_per_s,
            recovery.after_rows_per_s,
            RECOVERED_SHARE * 100.0,
            recovery
                .recovered_after_s
                .map_or("never (backlog ended first)".to_owned(), |s| format!(
                    "{s:.2} s"
                ))
        );
        Ok(recovery)
    }

    fn service(&self, settings: &Settings, name: &str) -> Result<Service, BenchError> {
        std::fs::create_dir_all(&self.opts.out).map_err(|error| BenchError::Write {
            path: self.opts.out.display().to_string(),
            error,
        })?;
        Service::start(settings, &self.source.keyring_json, &self.opts.out, name)
    }
}

/// Samples the process's committed count until it reaches `target`,
/// calling `each` with every sample (time since the first, count).
fn follow(
    service: &mut Service,
    target: u64,
    mut each: impl FnMut(&Service, (Duration, u64)) -> Result<(), BenchError>,
) -> Result<Curve, BenchError> {
    let started = Instant::now();
    let mut curve = Curve::default();
    let mut last = (0, Instant::now());
    loop {
        let (read, n) = service.progress()?;
        let sample = (started.elapsed(), n);
        if read > 0 && curve.1.is_none() {
            curve.1 = Some(sample.0);
        }
        curve.0.push(sample);
        if n >= target {
            return Ok(curve);
        }
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() > STALL {
            return Err(BenchError::Stalled {
                phase: "service",
                done: n,
                expected: target,
            });
        }
        each(service, sample)?;
        std::thread::sleep(SAMPLE_EVERY);
    }
}

fn drain_figures(
    service: &Service,
    curve: &Curve,
    ready: Duration,
    cpu_at_ready: Duration,
    events: u64,
) -> Result<Drain, BenchError> {
    let end = curve.time_of(events).unwrap_or_default();
    // The curve starts at ready (follow began then).
    let first_read = curve.1.unwrap_or_default();
    let cpu = service.cpu()? - cpu_at_ready;
    Ok(Drain {
        ready_s: ready.as_secs_f64(),
        first_read_s: (ready + first_read).as_secs_f64(),
        rows: events,
        cold_rows_per_s: events as f64 / (end.saturating_sub(first_read)).as_secs_f64().max(1e-3),
        steady_rows_per_s: curve.rate_between(events / 4, events * 3 / 4),
        cpu_us_per_row: cpu.as_secs_f64() * 1e6 / events.max(1) as f64,
        peak_rss_mib: service.peak_rss_mib(),
    })
}

fn with_topics(settings: &Settings, topics: &[&str]) -> Settings {
    let mut s = settings.clone();
    s.input.topics = topics.iter().map(|t| (*t).to_owned()).collect();
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(points: &[(u64, u64)]) -> Curve {
        Curve(
            points
                .iter()
                .map(|&(ms, n)| (Duration::from_millis(ms), n))
                .collect(),
            None,
        )
    }

    #[test]
    fn rates_are_read_between_the_moments_counts_were_reached() {
        let c = curve(&[(0, 0), (1000, 1000), (2000, 3000)]);
        assert_eq!(c.time_of(500), Some(Duration::from_millis(500)));
        assert!((c.rate_between(1000, 3000) - 2000.0).abs() < 1e-6);
        assert!(
            c.rate_between(1000, 9000).abs() < f64::EPSILON,
            "never reached"
        );
    }

    #[test]
    fn recovery_is_the_first_full_window_back_at_the_rate() {
        // Stopped until 1 s, slow until 2 s, fast from then on.
        let mut points = vec![(0, 0), (1000, 0)];
        let mut n = 0;
        for ms in (1020..=3000).step_by(20) {
            n += if ms <= 2000 { 2 } else { 100 };
            points.push((ms, n));
        }
        let c = curve(&points);
        let back = c
            .first_window_at(Duration::from_millis(1000), 4000.0)
            .unwrap();
        assert!(back > Duration::from_millis(1000), "{back:?}");
        assert!(back <= Duration::from_millis(1400), "{back:?}");
        assert!(
            c.first_window_at(Duration::from_millis(1000), 1e9)
                .is_none()
        );
    }
}
