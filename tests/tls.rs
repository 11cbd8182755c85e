//! Kafka security settings reach librdkafka and work: the processor's own
//! clients (transactional producer, consumer) talk TLS to the broker's TLS
//! listener, verifying its certificate; without the right CA it is refused.
//! The test's own tools use the broker's plaintext listener.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use streamscore::config::{Format, Settings};
use streamscore::demo::events::EventFactory;
use streamscore::envelope::{Keyring, share};
use streamscore::pipeline::{Pipeline, PipelineError};
use streamscore::telemetry::LiveStats;

struct TlsBroker {
    name: String,
    plain: String,
    tls: String,
    ca: std::path::PathBuf,
}

impl TlsBroker {
    fn start() -> Self {
        let name = format!("tls-{}", std::process::id());
        let script = support::root().join("scripts/kafka");
        let out = Command::new(&script)
            .args(["start", &name, "--tls"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let state = support::root().join(".local/kafka-run").join(&name);
        Self {
            plain: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            tls: std::fs::read_to_string(state.join("bootstrap-tls"))
                .unwrap()
                .trim()
                .to_owned(),
            ca: state.join("ca.pem"),
            name,
        }
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = Command::new(support::root().join("scripts/kafka"))
            .args(["stop", &self.name])
            .status();
    }
}

fn over_tls(plain: &Settings, broker: &TlsBroker, ca: &std::path::Path) -> Settings {
    let mut s = plain.clone();
    s.kafka.bootstrap_servers = broker.tls.clone();
    s.kafka.request_timeout_ms = 5_000;
    s.kafka
        .properties
        .insert("security.protocol".into(), "SSL".into());
    s.kafka
        .properties
        .insert("ssl_ca_location".into(), ca.display().to_string());
    s
}

#[test]
fn the_processor_talks_tls_and_refuses_an_untrusted_broker() {
    let _turn = support::exclusive();
    let broker = TlsBroker::start();
    let mut plain = support::settings("tls", Format::Avro, Format::Avro);
    plain.kafka.bootstrap_servers = broker.plain.clone();
    support::create(&plain);
    let keyring = Arc::new(Keyring::generate("tls-key").unwrap().0);
    let mut factory = EventFactory::new(keyring.clone(), Format::Avro, "tls", 3);
    let records: Vec<_> = (0..50).map(|_| factory.next(None)).collect();
    support::publish_all(&plain, &records);

    // A CA that did not sign the broker's certificate: the handshake must fail.
    let dir = tempfile::tempdir().unwrap();
    let wrong_ca = dir.path().join("other-ca.pem");
    let made = Command::new("keytool")
        .args([
            "-genkeypair",
            "-alias",
            "x",
            "-keyalg",
            "RSA",
            "-dname",
            "CN=other",
            "-storetype",
            "PKCS12",
        ])
        .arg("-keystore")
        .arg(dir.path().join("other.p12"))
        .args(["-storepass", "changeit", "-keypass", "changeit"])
        .status()
        .unwrap();
    assert!(made.success());
    let exported = Command::new("keytool")
        .args([
            "-exportcert",
            "-rfc",
            "-alias",
            "x",
            "-storepass",
            "changeit",
        ])
        .arg("-keystore")
        .arg(dir.path().join("other.p12"))
        .arg("-file")
        .arg(&wrong_ca)
        .status()
        .unwrap();
    assert!(exported.success());
    let refused = Pipeline::start(
        &over_tls(&plain, &broker, &wrong_ca),
        share(keyring.clone()),
        Arc::default(),
    );
    assert!(
        matches!(refused, Err(PipelineError::InitTransactions { .. })),
        "an untrusted broker was accepted: {:?}",
        refused.err()
    );

    let tls = over_tls(&plain, &broker, &broker.ca);
    let stats = Arc::new(LiveStats::default());
    let pipeline =
        Pipeline::start(&tls, share(keyring), stats.clone()).expect("pipeline starts over TLS");
    let deadline = Instant::now() + Duration::from_secs(60);
    while stats.committed() < 50 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    pipeline.stop();
    pipeline.join().expect("clean stop");
    let report = support::verify_topics(&plain);
    assert!(report.exactly_once(), "{}", report.line());
    assert_eq!(report.scored, 50);
}
