//! The service as it is deployed: `streamscore run` in its own process, with
//! a config file, read from outside through /metrics and /proc. The scenarios
//! that need a process boundary run it this way: its CPU time is its own (not
//! the bench's publisher's), it can be paused with SIGSTOP, and "ready" is
//! what /readyz says, start-up included.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use streamscore::Settings;
use streamscore::telemetry::metrics::{
    CONSUMED, DEAD_LETTERED, SCORED, STAGE_DURATION, TRANSACTIONS,
};

use crate::bench::BenchError;

/// One `streamscore run` process.
pub(super) struct Service {
    child: Child,
    address: SocketAddr,
    started: Instant,
    log: PathBuf,
    agent: ureq::Agent,
}

fn failed(what: &str, e: impl std::fmt::Display) -> BenchError {
    BenchError::Service(format!("{what}: {e}"))
}

impl Service {
    /// Writes `settings` as the process's config file (in `dir`, named after
    /// `name`) and starts it with `keyring_json` in its environment.
    pub(super) fn start(
        settings: &Settings,
        keyring_json: &str,
        dir: &Path,
        name: &str,
    ) -> Result<Self, BenchError> {
        let address = free_address()?;
        let mut settings = settings.clone();
        settings.telemetry.listen = address;
        let config = dir.join(format!("{name}.toml"));
        let text = toml::to_string(&settings).map_err(|e| failed("config", e))?;
        std::fs::write(&config, text).map_err(|e| failed("config", e))?;
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).map_err(|e| failed("log", e))?;
        let err = out.try_clone().map_err(|e| failed("log", e))?;
        let child = Command::new(service_binary()?)
            .args(["run", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .env("STREAMSCORE_KEYRING", keyring_json)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| failed("cannot start streamscore run", e))?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        Ok(Self {
            child,
            address,
            started: Instant::now(),
            log,
            agent,
        })
    }

    /// Waits until /readyz answers 200; returns how long that took from the
    /// start of the process.
    pub(super) fn wait_ready(&mut self, within: Duration) -> Result<Duration, BenchError> {
        while self.started.elapsed() < within {
            self.check_alive()?;
            let url = format!("http://{}/readyz", self.address);
            if let Ok(response) = self.agent.get(url).call()
                && response.status() == 200
            {
                return Ok(self.started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(failed(
            "not ready",
            format!("no /readyz 200 within {} s", within.as_secs()),
        ))
    }

    /// Records read and records committed (scored and dead-lettered) so
    /// far, from one /metrics read.
    pub(super) fn progress(&mut self) -> Result<(u64, u64), BenchError> {
        let text = self.metrics()?;
        let committed = sum(&text, SCORED) + sum(&text, DEAD_LETTERED);
        Ok((sum(&text, CONSUMED) as u64, committed as u64))
    }

    /// Per stage: how many were timed and their total seconds; and the
    /// transactions committed (`"transactions"`, count only).
    pub(super) fn stages(&mut self) -> Result<BTreeMap<String, (f64, f64)>, BenchError> {
        let text = self.metrics()?;
        let mut out: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let value: f64 = value.parse().unwrap_or(0.0);
            let label = |prefix: &str| {
                series
                    .strip_prefix(prefix)
                    .and_then(|l| l.strip_suffix("\"}"))
                    .map(str::to_owned)
            };
            let stage = format!("{STAGE_DURATION}_sum{{stage=\"");
            let count = format!("{STAGE_DURATION}_count{{stage=\"");
            let committed = format!("{TRANSACTIONS}{{outcome=\"");
            if let Some(name) = label(&stage) {
                out.entry(name).or_default().1 = value;
            } else if let Some(name) = label(&count) {
                out.entry(name).or_default().0 = value;
            } else if label(&committed).as_deref() == Some("committed") {
                out.insert("transactions".into(), (value, 0.0));
            }
        }
        Ok(out)
    }

    fn metrics(&mut self) -> Result<String, BenchError> {
        self.check_alive()?;
        let url = format!("http://{}/metrics", self.address);
        self.agent
            .get(url)
            .call()
            .and_then(|mut r| r.body_mut().read_to_string())
            .map_err(|e| failed("cannot scrape /metrics", e))
    }

    /// CPU time the process has used, every thread together.
    pub(super) fn cpu(&self) -> Result<Duration, BenchError> {
        process_cpu(self.child.id())
    }

    /// CPU time per thread name (librdkafka's broker threads under one
    /// name): where the time goes when a CPU target is missed.
    pub(super) fn thread_cpu(&self) -> BTreeMap<String, Duration> {
        let mut out = BTreeMap::new();
        let tasks = format!("/proc/{}/task", self.child.id());
        for task in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
            let path = task.path();
            let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            let Some(cpu) = std::fs::read_to_string(path.join("stat"))
                .ok()
                .and_then(|s| cpu_of(&s))
            else {
                continue;
            };
            *out.entry(thread_kind(name.trim())).or_default() += cpu;
        }
        out
    }

    /// The most resident memory the process has had, in MiB.
    pub(super) fn peak_rss_mib(&self) -> Option<f64> {
        peak_rss_mib(self.child.id())
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`): the whole process, every thread.
    pub(super) fn pause(&self, stop: bool) -> Result<(), BenchError> {
        let signal = if stop { libc::SIGSTOP } else { libc::SIGCONT };
        let pid = libc::pid_t::try_from(self.child.id()).map_err(|e| failed("pid", e))?;
        // SAFETY: signals our own child, whose pid we hold and have not reaped.
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(failed("kill", std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// SIGTERM, and waits for a clean exit (the last commit included).
    pub(super) fn stop(mut self) -> Result<(), BenchError> {
        let status = terminate(&mut self.child)?;
        if status.success() {
            Ok(())
        } else {
            Err(failed(
                "streamscore run did not exit cleanly",
                format!("{status}; see {}", self.log.display()),
            ))
        }
    }

    fn check_alive(&mut self) -> Result<(), BenchError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(failed(
                "streamscore run exited",
                format!("{status}; see {}", self.log.display()),
            )),
            Err(e) => Err(failed("wait", e)),
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // A scenario that failed half-way must not leave a processor behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGTERM to a child of ours, then its exit status (the service's and the
/// Kafka Streams reference's clean stop).
pub(super) fn terminate(child: &mut Child) -> Result<std::process::ExitStatus, BenchError> {
    let pid = libc::pid_t::try_from(child.id()).map_err(|e| failed("pid", e))?;
    // SAFETY: signals our own child, whose pid we hold and have not reaped.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    child.wait().map_err(|e| failed("wait", e))
}

/// CPU time process `pid` has used, every thread together (the Kafka
/// Streams reference's too, bench/kstreams.rs).
pub(super) fn process_cpu(pid: u32) -> Result<Duration, BenchError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| failed("cannot read the process's CPU time", e))?;
    cpu_of(&stat).ok_or_else(|| failed("cannot parse /proc stat", stat))
}

/// The most resident memory process `pid` has had, in MiB.
pub(super) fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// User + system time from a /proc `stat` line.
fn cpu_of(stat: &str) -> Option<Duration> {
    // Fields after the command name, which ends at the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let (user, system) = (ticks(11)?, ticks(12)?);
    // SAFETY: sysconf reads a constant of the running system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(Duration::from_secs_f64((user + system) as f64 / per_second))
}

/// A thread's name without its instance number (rdk:broker1, rdk:broker-1).
fn thread_kind(name: &str) -> String {
    if name.starts_with("rdk:broker") {
        return "rdk:broker".into();
    }
    name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-')
        .to_owned()
}

/// The sum of every sample of the counter `name`, whatever its labels.
fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| series.split('{').next() == Some(name))
        .filter_map(|(_, value)| value.parse::<f64>().ok())
        .sum()
}

/// A port nobody listens on now, for the process's /metrics.
fn free_address() -> Result<SocketAddr, BenchError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| failed("no free port", e))?;
    listener.local_addr().map_err(|e| failed("no free port", e))
}

/// `streamscore` beside this binary (both are built by `make build`).
fn service_binary() -> Result<PathBuf, BenchError> {
    let me = std::env::current_exe().map_err(|e| failed("current_exe", e))?;
    let dir = me.parent().map(Path::to_path_buf).unwrap_or_default();
    // Under `cargo test` the tools run from target/<profile>/deps.
    for candidate in [dir.join("streamscore"), dir.join("../streamscore")] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(failed(
        "cannot find the streamscore binary",
        format!("looked beside {}; run `make build`", me.display()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summed_over_their_labels_and_nothing_else() {
        let text = "# HELP streamscore_records_scored_total x\n\
            streamscore_records_scored_total{topic=\"a\"} 3\n\
            streamscore_records_scored_total{topic=\"b\"} 4\n\
            streamscore_records_scored_totally 100\n\
            streamscore_records_scored_total 1\n";
        assert!((sum(text, SCORED) - 8.0).abs() < f64::EPSILON);
    }
}
