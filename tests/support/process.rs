//! Processor instances as separate OS processes, the way an orchestrator runs
//! them: started from a config file, signalled, killed, restarted.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use streamscore::Settings;

/// Writes a config file that points the binary at the test's topics.
pub fn config_file(dir: &Path, name: &str, settings: &Settings, extra: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let toml = format!(
        "[kafka]\nbootstrap_servers = \"{}\"\ngroup_id = \"{}\"\ntransactional_id = \"{}\"\n\
         transaction_timeout_ms = {}\nsession_timeout_ms = {}\nrequest_timeout_ms = {}\ngroup_instance_id = \"{}\"\n\
         [input]\ntopics = {:?}\nformat = \"{}\"\n[output]\ntopic = \"{}\"\ndead_letter_topic = \"{}\"\n\
         [telemetry]\nlisten = \"127.0.0.1:0\"\nlog_format = \"human\"\nlog_level = \"info,ort=warn\"\n{extra}",
        settings.kafka.bootstrap_servers,
        settings.kafka.group_id,
        settings.kafka.transactional_id,
        settings.kafka.transaction_timeout.as_millis(),
        settings.kafka.session_timeout.as_millis(),
        settings.kafka.request_timeout.as_millis(),
        settings.kafka.group_instance_id.as_deref().unwrap_or(""),
        settings.input.topics,
        settings.input.format.as_str(),
        settings.output.topic,
        settings.output.dead_letter_topic,
    );
    std::fs::write(&path, toml).unwrap();
    path
}

pub struct Processor {
    child: Child,
    pub log: PathBuf,
    /// Where this instance's lines begin in a log shared with earlier ones.
    log_start: u64,
}

impl Processor {
    /// Starts `streamscore run`; stdout and stderr go to `log` (appended), never to a pipe that could fill.
    pub fn start(config: &Path, keyring_json: &str, log: PathBuf) -> Self {
        Self::start_with_env(config, keyring_json, log, &std::collections::HashMap::new())
    }

    /// As [`Processor::start`], with extra environment variables.
    pub fn start_with_env(
        config: &Path,
        keyring_json: &str,
        log: PathBuf,
        env: &std::collections::HashMap<&str, &str>,
    ) -> Self {
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let log_start = out.metadata().map(|m| m.len()).unwrap_or(0);
        // Set for the service crate's tests, which are the ones that run it;
        // the tools crate's tests share this module but start no processor.
        let Some(bin) = option_env!("CARGO_BIN_EXE_streamscore") else {
            panic!("only the streamscore crate's tests start a processor");
        };
        let mut cmd = Command::new(bin);
        cmd.current_dir(super::root())
            .args(["run", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .env("STREAMSCORE_KEYRING", keyring_json)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        for (k, _) in std::env::vars() {
            if k.starts_with("STREAMSCORE__") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env.iter());
        Self {
            child: cmd.spawn().unwrap(),
            log,
            log_start,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address this instance serves /metrics, /healthz and /readyz on,
    /// once it has logged it.
    pub fn address(&self) -> Option<String> {
        let text = std::fs::read(&self.log).unwrap_or_default();
        let own = text.get(self.log_start as usize..).unwrap_or_default();
        String::from_utf8_lossy(own)
            .lines()
            .find(|l| l.contains("serving /metrics"))
            .and_then(|l| match serde_json::from_str::<serde_json::Value>(l) {
                // telemetry.log_format = "json"
                Ok(json) => json["addr"].as_str().map(str::to_owned),
                Err(_) => l.split("addr=").nth(1).map(|a| a.trim().to_owned()),
            })
    }

    /// Waits until the instance has logged its address.
    pub fn wait_address(&self, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(addr) = self.address() {
                return addr;
            }
            assert!(
                Instant::now() < deadline,
                "no address logged within {within:?}: {}",
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill -{signal} {} failed", self.pid());
    }

    /// Exit status if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    pub fn kill9(mut self) -> Option<ExitStatus> {
        let before = self.exited();
        let _ = self.child.kill();
        let _ = self.child.wait();
        before
    }

    /// SIGTERM, then wait up to `within` for the exit status.
    pub fn terminate(mut self, within: Duration) -> ExitStatus {
        if let Some(status) = self.exited() {
            return status;
        }
        self.signal("TERM");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "no exit within {within:?} of SIGTERM; log: {}",
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// (status, JSON body) of a GET, the way a kubelet probe asks; a refused
/// connection or a timeout is status 0.
pub fn http_get(addr: &str, path: &str) -> (u16, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    match agent.get(format!("http://{addr}{path}")).call() {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let text = response.body_mut().read_to_string().unwrap_or_default();
            (status, serde_json::from_str(&text).unwrap_or_default())
        }
        Err(_) => (0, serde_json::Value::Null),
    }
}

impl Drop for Processor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
