//! A supervisor for processor processes, as Kubernetes would be one: it
//! restarts the processor whenever it exits, or when its /healthz fails three
//! probes in a row, and counts how often.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use streamscore::Settings;

use super::process::{Processor, http_get};

/// Restarts the processor whenever it exits, or when its /healthz fails
/// three probes in a row (as a kubelet's liveness probe would), and counts how often.
pub struct Supervisor<'a> {
    config: PathBuf,
    keyring_json: &'a str,
    log: PathBuf,
    current: Option<Processor>,
    pub restarts: u32,
    pub liveness_restarts: u32,
    failed_probes: u32,
    last_probe: Instant,
}

impl<'a> Supervisor<'a> {
    pub fn start(config: PathBuf, keyring_json: &'a str, log: PathBuf) -> Self {
        let current = Some(Processor::start(&config, keyring_json, log.clone()));
        Self {
            config,
            keyring_json,
            log,
            current,
            restarts: 0,
            liveness_restarts: 0,
            failed_probes: 0,
            last_probe: Instant::now(),
        }
    }

    /// One liveness probe a second; an instance not yet serving is not probed.
    fn probe_fails(&mut self) -> bool {
        if self.last_probe.elapsed() < Duration::from_secs(1) {
            return false;
        }
        self.last_probe = Instant::now();
        let Some(addr) = self.current.as_ref().and_then(Processor::address) else {
            return false;
        };
        if http_get(&addr, "/healthz").0 == 200 {
            self.failed_probes = 0;
        } else {
            self.failed_probes += 1;
        }
        self.failed_probes >= 3
    }

    pub fn run_for(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            let unhealthy = self.probe_fails();
            if unhealthy && let Some(p) = self.current.take() {
                print_stuck_stacks(p.pid());
                p.kill9();
                self.liveness_restarts += 1;
                self.failed_probes = 0;
            }
            if self.current.as_mut().is_none_or(|p| p.exited().is_some()) {
                self.restarts += 1;
                self.current = Some(Processor::start(
                    &self.config,
                    self.keyring_json,
                    self.log.clone(),
                ));
            }
            let left = until.saturating_duration_since(Instant::now());
            std::thread::sleep(left.min(Duration::from_millis(200)));
        }
    }

    /// SIGKILLs the current instance; the next `run_for` restarts it.
    pub fn kill9(&mut self) {
        if let Some(p) = self.current.take() {
            p.kill9();
        }
    }

    /// Where the current instance serves /metrics, /healthz and /readyz.
    pub fn address(&self) -> Option<String> {
        self.current.as_ref().and_then(Processor::address)
    }

    pub fn pid(&self) -> u32 {
        self.current.as_ref().map_or(0, Processor::pid)
    }

    pub fn run_until_committed(&mut self, settings: &Settings, timeout: Duration) {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            let (done, end) = streamscore_tools::verify::committed_progress(
                settings,
                &settings.input.topics,
                &settings.kafka.group_id,
            )
            .unwrap_or((0, -1));
            if done == end && end > 0 {
                return;
            }
            self.run_for(Duration::from_millis(500));
        }
    }

    pub fn stop(mut self) -> String {
        if let Some(p) = self.current.take() {
            let status = p.terminate(Duration::from_secs(60));
            assert!(
                status.success(),
                "final instance on SIGTERM: {status}\n{}",
                tail(&self.log)
            );
        }
        tail(&self.log)
    }
}

pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(80)..].join("\n")
}

/// What the pipeline's own threads (sink, source, workers) are doing when
/// the probes give up on it: the call a stall waits in, which the signals
/// alone cannot say. Best effort: nothing when gdb is not installed.
fn print_stuck_stacks(pid: u32) {
    let Ok(out) = std::process::Command::new("gdb")
        .args([
            "-batch",
            "-p",
            &pid.to_string(),
            "-ex",
            "thread apply all bt 25",
        ])
        .output()
    else {
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut keep = false;
    for line in text.lines() {
        if line.starts_with("Thread ") {
            keep = ["\"sink\"", "\"source\"", "\"inference"]
                .iter()
                .any(|name| line.contains(name));
        }
        if keep {
            println!("  stuck {pid}: {}", &line[..line.floor_char_boundary(240)]);
        }
    }
}
