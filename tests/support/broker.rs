//! A Kafka broker of a test's own (run by scripts/kafka under a unique name),
//! for tests that kill, pause or reconfigure it; deleted on drop.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub struct OwnBroker {
    pub name: String,
    /// Plaintext listener.
    pub bootstrap: String,
    /// TLS listener and the CA that signed its certificate, when started with TLS.
    pub tls: Option<(String, PathBuf)>,
    /// SASL/SCRAM listener, when started with SASL.
    pub sasl: Option<String>,
}

impl OwnBroker {
    pub fn start(name: &str) -> Self {
        Self::launch(name, false, None)
    }

    /// With an extra TLS listener (self-signed certificate, SAN 127.0.0.1).
    pub fn start_tls(name: &str) -> Self {
        Self::launch(name, true, None)
    }

    /// With a SASL/SCRAM-SHA-512 listener and the StandardAuthorizer (no ACL
    /// means denied); the plaintext listener is the tests' super user.
    pub fn start_sasl(name: &str) -> Self {
        let name = format!("{name}-{}", std::process::id());
        let bootstrap = kafka(&["start", &name, "--sasl"]).trim().to_owned();
        let state = super::root().join(".local/kafka-run").join(&name);
        let sasl = std::fs::read_to_string(state.join("bootstrap-sasl")).unwrap();
        Self {
            name,
            bootstrap,
            tls: None,
            sasl: Some(sasl.trim().to_owned()),
        }
    }

    /// With an SSL listener that requires a client certificate its test CA
    /// signed (principal `User:CN=<name>`) and the StandardAuthorizer.
    pub fn start_mtls(name: &str) -> Self {
        let name = format!("{name}-{}", std::process::id());
        let bootstrap = kafka(&["start", &name, "--mtls"]).trim().to_owned();
        let state = super::root().join(".local/kafka-run").join(&name);
        let address = std::fs::read_to_string(state.join("bootstrap-mtls")).unwrap();
        Self {
            name,
            bootstrap,
            tls: Some((address.trim().to_owned(), state.join("ca.pem"))),
            sasl: None,
        }
    }

    /// A client certificate for CN=`user` signed by the broker's test CA:
    /// (certificate, key) files.
    pub fn client_certificate(&self, user: &str) -> (PathBuf, PathBuf) {
        kafka(&["cert", &self.name, user]);
        let state = super::root().join(".local/kafka-run").join(&self.name);
        (
            state.join(format!("{user}.pem")),
            state.join(format!("{user}.key")),
        )
    }

    /// A SCRAM-SHA-512 user, made with the broker's own ConfigCommand.
    pub fn add_user(&self, user: &str, password: &str) {
        kafka(&["user", &self.name, user, password]);
    }

    /// The broker's own AclCommand (e.g. `--add --allow-principal User:u --operation Read --topic t`).
    pub fn acl(&self, args: &[&str]) {
        let mut all = vec!["acl", self.name.as_str()];
        all.extend_from_slice(args);
        kafka(&all);
    }

    /// `plain` pointed at the SASL listener as `user`.
    pub fn sasl_settings(
        &self,
        plain: &streamscore::Settings,
        user: &str,
        password: &str,
    ) -> streamscore::Settings {
        let mut s = plain.clone();
        s.kafka.bootstrap_servers = self.sasl.clone().expect("a SASL listener");
        s.kafka.request_timeout = Duration::from_millis(10_000);
        for (k, v) in [
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", user),
            ("sasl.password", password),
        ] {
            s.kafka.properties.insert(k.into(), v.into());
        }
        s
    }

    /// For a test that pauses it (SIGSTOP) for less than a minute: its
    /// session outlasts the pause, so on resume it carries on as a hung
    /// broker would, rather than fencing itself (scripts/kafka says why).
    pub fn start_pausable(name: &str) -> Self {
        Self::launch(name, false, Some(60_000))
    }

    fn launch(name: &str, tls: bool, session_timeout_ms: Option<u64>) -> Self {
        let name = format!("{name}-{}", std::process::id());
        let mut args = vec!["start", name.as_str()];
        if tls {
            args.push("--tls");
        }
        let mut start = command(&args);
        if let Some(ms) = session_timeout_ms {
            start.env("KAFKA_BROKER_SESSION_TIMEOUT_MS", ms.to_string());
        }
        let bootstrap = run(start).trim().to_owned();
        let state = super::root().join(".local/kafka-run").join(&name);
        let tls = tls.then(|| {
            let address = std::fs::read_to_string(state.join("bootstrap-tls")).unwrap();
            (address.trim().to_owned(), state.join("ca.pem"))
        });
        Self {
            name,
            bootstrap,
            tls,
            sasl: None,
        }
    }

    /// Fresh default settings (unique topics, group, transactional id) bound
    /// to this broker, with their topics created on it.
    pub fn settings(&self, name: &str) -> streamscore::Settings {
        let mut s = super::settings(name, streamscore::Format::Avro, streamscore::Format::Avro);
        s.kafka.bootstrap_servers = self.bootstrap.clone();
        super::create(&s);
        s
    }

    /// `plain` pointed at the TLS listener, trusting `ca` (the broker's own
    /// CA, or another one to be refused).
    pub fn tls_settings(
        &self,
        plain: &streamscore::Settings,
        ca: &std::path::Path,
    ) -> streamscore::Settings {
        let mut s = plain.clone();
        s.kafka.bootstrap_servers = self.tls.as_ref().expect("a TLS listener").0.clone();
        s.kafka.request_timeout = Duration::from_millis(5_000);
        s.kafka
            .properties
            .insert("security.protocol".into(), "SSL".into());
        s.kafka
            .properties
            .insert("ssl_ca_location".into(), ca.display().to_string());
        s
    }

    /// crash, halt, restart, pause or resume (see scripts/kafka).
    pub fn act(&self, action: &str) {
        kafka(&[action, &self.name]);
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = Command::new(super::root().join("scripts/kafka"))
            .args(["stop", &self.name])
            .status();
    }
}

fn command(args: &[&str]) -> Command {
    let mut c = Command::new(super::root().join("scripts/kafka"));
    c.args(args);
    c
}

fn run(mut c: Command) -> String {
    super::run_ok(&mut c)
}

fn kafka(args: &[&str]) -> String {
    run(command(args))
}
