//! Kafka security settings reach librdkafka and work: the processor's own
//! clients (transactional producer, consumer) talk TLS to the broker's TLS
//! listener, verifying its certificate; without the right CA it is refused.
//! The test's own tools use the broker's plaintext listener.

use crate::support;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use streamscore::Format;
use streamscore::telemetry::Stats;
use streamscore::{Keyring, share};
use streamscore::{Pipeline, PipelineError};
use streamscore_tools::events::EventFactory;
use support::broker::OwnBroker;

#[test]
fn the_processor_talks_tls_and_refuses_an_untrusted_broker() {
    let _turn = support::exclusive();
    let broker = OwnBroker::start_tls("tls");
    let plain = broker.settings("tls");
    let keyring = Arc::new(Keyring::generate("tls-key").unwrap().0);
    let mut factory = EventFactory::new(keyring.clone(), Format::Avro, "tls", 3);
    let records: Vec<_> = (0..50).map(|_| factory.next(None)).collect();
    support::publish_all(&plain, &records);

    // A CA that did not sign the broker's certificate: the handshake must fail.
    let dir = tempfile::tempdir().unwrap();
    let wrong_ca = dir.path().join("other-ca.pem");
    let store = dir.path().join("other.p12");
    let keytool = |args: &[&str]| {
        support::run_ok(
            Command::new("keytool")
                .args(args)
                .arg("-keystore")
                .arg(&store)
                .args(["-storepass", "changeit"]),
        )
    };
    keytool(&[
        "-genkeypair",
        "-alias",
        "x",
        "-keyalg",
        "RSA",
        "-dname",
        "CN=other",
        "-storetype",
        "PKCS12",
        "-keypass",
        "changeit",
    ]);
    keytool(&[
        "-exportcert",
        "-rfc",
        "-alias",
        "x",
        "-file",
        wrong_ca.to_str().unwrap(),
    ]);
    let refused = Pipeline::start(
        &broker.tls_settings(&plain, &wrong_ca),
        share(keyring.clone()),
        Arc::default(),
    );
    assert!(
        matches!(refused, Err(PipelineError::InitTransactions { .. })),
        "an untrusted broker was accepted: {:?}",
        refused.err()
    );

    let ca = broker.tls.as_ref().expect("a TLS listener").1.clone();
    let tls = broker.tls_settings(&plain, &ca);
    let stats = Arc::new(Stats::default());
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
