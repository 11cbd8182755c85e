//! Least privilege on a real broker with SASL/SCRAM-SHA-512 and the KRaft
//! StandardAuthorizer (`allow.everyone.if.no.acl.found=false`): the processor
//! scores exactly once with exactly the ACLs `streamscore acls` prints, and
//! with any one of them removed it refuses to start or stops, in one line
//! naming the resource and the operation it lacks.

use crate::support;
use crate::support::broker::OwnBroker;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use streamscore::acls::{Acl, minimal};
use streamscore::telemetry::Stats;
use streamscore::{Pipeline, Settings};
use streamscore_tools::events::EventFactory;

const USER: &str = "scorer";
const PASSWORD: &str = "scorer-pw-7c1e";

/// Waits up to `within` until `n` records have committed (or the pipeline
/// stopped): what a test asserts next says which.
fn until_committed(pipeline: &Pipeline, stats: &Stats, n: u64, within: Duration) {
    let deadline = Instant::now() + within;
    while stats.committed() < n && Instant::now() < deadline && !pipeline.has_stopped() {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits a minute at most for the pipeline to stop by itself, and returns
/// the error it stopped with; `case` names the failure otherwise.
fn stopped_with_error(pipeline: Pipeline, case: &str) -> String {
    let started = Instant::now();
    while !pipeline.has_stopped() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(200));
    }
    if !pipeline.has_stopped() {
        // Its threads would hold the test up on drop: leave them.
        std::mem::forget(pipeline);
        panic!("{case}: still running after {:?}", started.elapsed());
    }
    pipeline.stop();
    match pipeline.join() {
        Err(e) => e.to_string(),
        Ok(()) => panic!(
            "{case}: stopped without an error after {:?}",
            started.elapsed()
        ),
    }
}

/// A SASL broker with its topics, the user, and records to score; the
/// super user's settings (plaintext) and the processor's (SASL as USER).
fn secured(
    name: &str,
    records: usize,
) -> (OwnBroker, Settings, Settings, Arc<streamscore::Keyring>) {
    let broker = OwnBroker::start_sasl(name);
    let admin = broker.settings(name);
    broker.add_user(USER, PASSWORD);
    let keyring = support::keyring();
    let mut factory = EventFactory::new(keyring.clone(), streamscore::Format::Avro, name, 4);
    let batch: Vec<_> = (0..records).map(|_| factory.next(None)).collect();
    support::publish_all(&admin, &batch);
    let scorer = broker.sasl_settings(&admin, USER, PASSWORD);
    (broker, admin, scorer, keyring)
}

fn grant(broker: &OwnBroker, acls: &[Acl]) {
    for acl in acls {
        let mut args = vec![
            "--add".to_owned(),
            "--allow-principal".to_owned(),
            format!("User:{USER}"),
        ];
        args.extend(acl.kafka_acls_args());
        broker.acl(&args.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

#[test]
fn the_printed_acls_are_enough_to_score_exactly_once() {
    let (broker, admin, scorer, keyring) = secured("acl-all", 200);
    grant(&broker, &minimal(&scorer, None));
    let report = {
        let stats = Arc::new(Stats::default());
        let pipeline = Pipeline::start(&scorer, streamscore::share(keyring), stats.clone())
            .expect("the pipeline starts with the minimal ACLs");
        until_committed(&pipeline, &stats, 200, Duration::from_secs(90));
        pipeline.stop();
        pipeline.join().expect("a clean stop");
        support::verify_topics(&admin)
    };
    assert!(report.exactly_once(), "{}", report.line());
    assert_eq!(report.scored, 200, "{:?}", report.dead_letter_reasons);
    assert!(
        report.offsets_committed_to_end(),
        "{:?}",
        report.committed_vs_end
    );
}

/// Each ACL of the set removed in turn (each case on its own topics, group
/// and transactional id): the start is refused, or the pipeline stops, with
/// one line naming the operation and the resource.
#[test]
fn each_missing_acl_is_named_not_retried_for_ever() {
    let broker = OwnBroker::start_sasl("acl-each");
    broker.add_user(USER, PASSWORD);
    let keyring = support::keyring();
    let cases = minimal(&broker.settings("acl-probe"), None).len();
    for case in 0..cases {
        let admin = broker.settings(&format!("acl-each-{case}"));
        let mut factory = EventFactory::new(keyring.clone(), streamscore::Format::Avro, "acl", 4);
        let batch: Vec<_> = (0..10).map(|_| factory.next(None)).collect();
        support::publish_all(&admin, &batch);
        let scorer = broker.sasl_settings(&admin, USER, PASSWORD);
        let mut acls = minimal(&scorer, None);
        let missing = acls.remove(case);
        grant(&broker, &acls);
        let said =
            match Pipeline::start(&scorer, streamscore::share(keyring.clone()), Arc::default()) {
                Err(e) => e.to_string(),
                Ok(pipeline) => stopped_with_error(
                    pipeline,
                    &format!(
                        "without {} on {} {}",
                        missing.operation,
                        missing.resource.as_str(),
                        missing.name
                    ),
                ),
            };
        // The operation as a word, and the resource's own name (not a
        // longer one it starts: the group id begins every topic's name here).
        let lower = said.to_lowercase();
        let operation = format!(" {} ", missing.operation.to_lowercase());
        let named = [" ", "\"", ","]
            .iter()
            .any(|end| said.contains(&format!("{}{end}", missing.name)));
        assert!(
            lower.contains(&operation) && named,
            "without {} on {} {}, the refusal does not name both: {said}",
            missing.operation,
            missing.resource.as_str(),
            missing.name
        );
        assert!(!said.contains('\n'), "one line: {said}");
        assert!(!said.contains(PASSWORD), "{said}");
    }

    // A principal that may read the scores (a downstream reader's rights)
    // but not the input is refused on the input.
    let admin = broker.settings("acl-reader");
    support::publish_all(
        &admin,
        &[EventFactory::new(keyring.clone(), streamscore::Format::Avro, "r", 1).next(None)],
    );
    let scorer = broker.sasl_settings(&admin, USER, PASSWORD);
    broker.acl(&[
        "--add",
        "--allow-principal",
        &format!("User:{USER}"),
        "--operation",
        "Read",
        "--topic",
        &scorer.output.topic,
    ]);
    let acls: Vec<Acl> = minimal(&scorer, None)
        .into_iter()
        .filter(|a| !scorer.input.topics.contains(&a.name))
        .collect();
    grant(&broker, &acls);
    let pipeline = Pipeline::start(&scorer, streamscore::share(keyring), Arc::default())
        .expect("the start does not read the input");
    let said = stopped_with_error(pipeline, "refused on the input");
    assert!(
        said.contains("may not Read input topic") && said.contains(&scorer.input.topics[0]),
        "{said}"
    );
}

/// The processor as its own process, its SASL password read from a file
/// (`kafka.secret_files`, readable by its owner only), logging at trace
/// level: it scores exactly once, and neither the log nor `check` ever
/// shows the password. The same password in the config file is refused.
#[test]
fn a_sasl_password_from_a_file_never_reaches_a_log_even_at_trace() {
    use std::os::unix::fs::PermissionsExt;
    let broker = OwnBroker::start_sasl("acl-trace");
    let admin = broker.settings("acl-trace");
    broker.add_user(USER, PASSWORD);
    let (keyring, keyring_json) = streamscore::Keyring::generate("k-trace").unwrap();
    let mut factory = EventFactory::new(Arc::new(keyring), streamscore::Format::Avro, "tr", 6);
    let batch: Vec<_> = (0..40).map(|_| factory.next(None)).collect();
    support::publish_all(&admin, &batch);
    let scorer = broker.sasl_settings(&admin, USER, PASSWORD);
    grant(&broker, &minimal(&scorer, None));

    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("sasl-password");
    std::fs::write(&secret, format!("{PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let security = format!(
        "[kafka.properties]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n\"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\"sasl.username\" = \"{USER}\"\n[kafka.secret_files]\n\"sasl.password\" = {:?}\n",
        secret.display().to_string()
    );
    let config = support::process::config_file(dir.path(), "scorer", &scorer, &security);

    let check = Command::new(env!("CARGO_BIN_EXE_streamscore"))
        .current_dir(support::root())
        .env("RUST_LOG", "trace")
        .env("STREAMSCORE_KEYRING", &keyring_json)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let check_text = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(check.status.success(), "{check_text}");
    assert!(!check_text.contains(PASSWORD), "check printed the password");

    let log = dir.path().join("scorer.log");
    let env = std::collections::HashMap::from([("RUST_LOG", "trace")]);
    let processor =
        support::process::Processor::start_with_env(&config, &keyring_json, log.clone(), &env);
    let (done, end) = support::wait_committed(&admin, Duration::from_secs(90));
    assert_eq!(
        (done, end),
        (40, 40),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let status = processor.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}");
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(log_text.lines().count() > 100, "expected a trace-level log");
    assert!(!log_text.contains(PASSWORD), "the password reached the log");
    let report = support::verify_topics(&admin);
    assert!(report.exactly_once(), "{}", report.line());
    assert_eq!(report.scored, 40);

    // A secret file every user can read draws a warning.
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let shared = Command::new(env!("CARGO_BIN_EXE_streamscore"))
        .current_dir(support::root())
        .env("STREAMSCORE_KEYRING", &keyring_json)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let warned = String::from_utf8_lossy(&shared.stderr);
    assert!(
        warned.contains("a Kafka secret file is readable by every user"),
        "{warned}"
    );

    // The same password written in the config file is refused at once.
    let inline = support::process::config_file(
        dir.path(),
        "inline",
        &scorer,
        &format!("[kafka.properties]\n\"sasl.password\" = \"{PASSWORD}\"\n"),
    );
    let refused = Command::new(env!("CARGO_BIN_EXE_streamscore"))
        .current_dir(support::root())
        .env("STREAMSCORE_KEYRING", &keyring_json)
        .args(["check", "--config"])
        .arg(&inline)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        err.contains("kafka.properties.sasl.password = <redacted> is not allowed"),
        "{err}"
    );
    assert!(!err.contains(PASSWORD), "{err}");
}

/// Mutual TLS: the principal is the client certificate's subject
/// (`User:CN=scorer`); with the printed ACLs granted to it the processor
/// scores exactly once, and without a certificate the broker refuses it.
#[test]
fn a_client_certificate_principal_with_the_printed_acls_scores_exactly_once() {
    let broker = OwnBroker::start_mtls("acl-mtls");
    let admin = broker.settings("acl-mtls");
    let (certificate, key) = broker.client_certificate(USER);
    let keyring = support::keyring();
    let mut factory = EventFactory::new(keyring.clone(), streamscore::Format::Avro, "mt", 8);
    let batch: Vec<_> = (0..60).map(|_| factory.next(None)).collect();
    support::publish_all(&admin, &batch);
    let ca = broker.tls.as_ref().unwrap().1.clone();
    let mut scorer = broker.tls_settings(&admin, &ca);
    scorer.kafka.properties.insert(
        "ssl.certificate.location".into(),
        certificate.display().to_string(),
    );
    scorer
        .kafka
        .properties
        .insert("ssl.key.location".into(), key.display().to_string());
    for acl in minimal(&scorer, None) {
        let mut args = vec![
            "--add".to_owned(),
            "--allow-principal".to_owned(),
            format!("User:CN={USER}"),
        ];
        args.extend(acl.kafka_acls_args());
        broker.acl(&args.iter().map(String::as_str).collect::<Vec<_>>());
    }
    let stats = Arc::new(Stats::default());
    let pipeline = Pipeline::start(&scorer, streamscore::share(keyring.clone()), stats.clone())
        .expect("the pipeline starts with the certificate's ACLs");
    until_committed(&pipeline, &stats, 60, Duration::from_secs(90));
    pipeline.stop();
    pipeline.join().expect("a clean stop");
    let report = support::verify_topics(&admin);
    assert!(report.exactly_once(), "{}", report.line());
    assert_eq!(report.scored, 60, "{:?}", report.dead_letter_reasons);

    let mut anonymous = scorer.clone();
    anonymous
        .kafka
        .properties
        .remove("ssl.certificate.location");
    anonymous.kafka.properties.remove("ssl.key.location");
    anonymous.kafka.transactional_id = format!("{}-anon", scorer.kafka.transactional_id);
    let err = match Pipeline::start(&anonymous, streamscore::share(keyring), Arc::default()) {
        Err(e) => e.to_string(),
        Ok(p) => {
            p.stop();
            panic!("a client without a certificate was let in")
        }
    };
    assert!(
        err.contains("cannot initialise Kafka transactions"),
        "{err}"
    );

    // The client key every user of the machine can read draws a warning
    // (from `check` as from `run`); the owner's alone does not.
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let tls = format!(
        "[kafka.properties]\n\"security.protocol\" = \"SSL\"\n\"ssl.ca.location\" = {:?}\n\"ssl.certificate.location\" = {:?}\n\"ssl.key.location\" = {:?}\n",
        ca.display().to_string(),
        certificate.display().to_string(),
        key.display().to_string()
    );
    let config = support::process::config_file(dir.path(), "mtls", &scorer, &tls);
    let (_, keyring_json) = streamscore::Keyring::generate("k-mtls").unwrap();
    let check = || {
        let out = Command::new(env!("CARGO_BIN_EXE_streamscore"))
            .current_dir(support::root())
            .env("STREAMSCORE_KEYRING", &keyring_json)
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let warning = "the TLS key file (ssl.key.location) is readable by every user";
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let private = check();
    assert!(!private.contains(warning), "{private}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let shared = check();
    assert!(shared.contains(warning), "{shared}");
}

/// Read without Write on the dead-letter topic (as a team reading its own
/// dead letters might be granted): Read implies Describe, so the topic's
/// metadata answers, and a dead letter would be refused only when its
/// partition joins a transaction, in an error that names no topic. At start
/// the broker's authorized operations (KIP-430) refuse it naming the topic
/// and WRITE; the same Write taken away mid-run stops the processor naming
/// the dead-letter topic alone (the score topic was proven writable by the
/// commits before), not aborting and rewinding for ever.
#[test]
fn read_without_write_on_an_output_topic_is_named_at_start_and_mid_run() {
    let broker = OwnBroker::start_sasl("acl-dlq");
    broker.add_user(USER, PASSWORD);
    let keyring = support::keyring();
    let read_dead_letters = |scorer: &Settings| {
        broker.acl(&[
            "--add",
            "--allow-principal",
            &format!("User:{USER}"),
            "--operation",
            "Read",
            "--topic",
            &scorer.output.dead_letter_topic,
        ]);
    };

    // At start.
    let admin = broker.settings("acl-dlq-start");
    let scorer = broker.sasl_settings(&admin, USER, PASSWORD);
    let acls: Vec<Acl> = minimal(&scorer, None)
        .into_iter()
        .filter(|a| a.name != scorer.output.dead_letter_topic)
        .collect();
    grant(&broker, &acls);
    read_dead_letters(&scorer);
    let refused = Pipeline::start(&scorer, streamscore::share(keyring.clone()), Arc::default())
        .err()
        .expect("no Write on the dead-letter topic refuses the start")
        .to_string();
    assert!(
        refused.contains(&format!(
            "output.dead_letter_topic \"{}\"",
            scorer.output.dead_letter_topic
        )) && refused.contains("grant it WRITE"),
        "{refused}"
    );

    // Mid-run.
    let admin = broker.settings("acl-dlq-mid");
    let scorer = broker.sasl_settings(&admin, USER, PASSWORD);
    grant(&broker, &minimal(&scorer, None));
    read_dead_letters(&scorer);
    let mut factory = EventFactory::new(keyring.clone(), streamscore::Format::Avro, "dl", 4);
    let good: Vec<_> = (0..20).map(|_| factory.next(None)).collect();
    support::publish_all(&admin, &good);
    let stats = Arc::new(Stats::default());
    let pipeline = Pipeline::start(&scorer, streamscore::share(keyring.clone()), stats.clone())
        .expect("the pipeline starts with Write on every output topic");
    until_committed(&pipeline, &stats, 20, Duration::from_secs(60));
    assert_eq!(stats.committed(), 20, "scored before the revocation");
    broker.acl(&[
        "--remove",
        "--force",
        "--allow-principal",
        &format!("User:{USER}"),
        "--operation",
        "Write",
        "--topic",
        &scorer.output.dead_letter_topic,
    ]);
    // The dead letter first, many scores after it: once its partition is
    // refused the transaction is in error, and every send after it is
    // refused as `_STATE`, which names the score topic and no reason.
    support::publish_all(
        &admin,
        &[factory.next(Some(streamscore_tools::events::BadKind::Garbage))],
    );
    let stream = support::stream(&admin, keyring.clone(), 300, 100, 0);
    let said = stopped_with_error(pipeline, "Write revoked mid-run (aborting and rewinding?)");
    assert!(
        said.contains(&format!(
            "may not Write topic {}:",
            scorer.output.dead_letter_topic
        )),
        "the dead-letter topic alone, the one the broker says may not be written: {said}"
    );
    stream.join().unwrap();
}

/// Rights taken away mid-run, each on its own topics, group and id: Write
/// on the transactional id (the next transaction is refused with
/// TRANSACTIONAL_ID_AUTHORIZATION_FAILED, fatal for the producer), and Read
/// on the group. The processor stops naming the resource and the operation,
/// not blaming a newer instance that fenced it, never retrying for ever.
#[test]
fn rights_revoked_mid_run_are_named() {
    let broker = OwnBroker::start_sasl("acl-mid");
    broker.add_user(USER, PASSWORD);
    let keyring = support::keyring();
    // (case, the ACL's resource arguments, what the stop must say)
    type Revocation = (
        &'static str,
        fn(&Settings) -> Vec<String>,
        fn(&Settings) -> String,
    );
    let cases: [Revocation; 2] = [
        (
            "txn",
            |s| {
                vec![
                    "--transactional-id".into(),
                    s.kafka.transactional_id.clone(),
                ]
            },
            |s| {
                format!(
                    "may not Write transactional id {}",
                    s.kafka.transactional_id
                )
            },
        ),
        (
            "group",
            |s| vec!["--group".into(), s.kafka.group_id.clone()],
            // The sink (its offsets refused) or the source (its heartbeat
            // refused), whichever hears first.
            |s| format!("may not Read group {}", s.kafka.group_id),
        ),
    ];
    for (case, resource, expected) in cases {
        let admin = broker.settings(&format!("acl-mid-{case}"));
        let scorer = broker.sasl_settings(&admin, USER, PASSWORD);
        grant(&broker, &minimal(&scorer, None));
        let mut factory = EventFactory::new(keyring.clone(), streamscore::Format::Avro, case, 4);
        let first: Vec<_> = (0..20).map(|_| factory.next(None)).collect();
        support::publish_all(&admin, &first);
        let stats = Arc::new(Stats::default());
        let pipeline = Pipeline::start(&scorer, streamscore::share(keyring.clone()), stats.clone())
            .expect("the pipeline starts with the printed set");
        until_committed(&pipeline, &stats, 20, Duration::from_secs(60));
        assert_eq!(
            stats.committed(),
            20,
            "{case}: scored before the revocation"
        );
        let operation = if case == "txn" { "Write" } else { "Read" };
        let mut args: Vec<String> = [
            "--remove",
            "--force",
            "--allow-principal",
            &format!("User:{USER}"),
            "--operation",
            operation,
        ]
        .map(String::from)
        .to_vec();
        args.extend(resource(&scorer));
        broker.acl(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let more: Vec<_> = (0..5).map(|_| factory.next(None)).collect();
        support::publish_all(&admin, &more);
        let said = stopped_with_error(pipeline, case);
        let named = expected(&scorer);
        assert!(
            [":", " (", " "]
                .iter()
                .any(|end| said.contains(&format!("{named}{end}")))
                && !said.contains("fenced"),
            "{case}: {said}"
        );
        // Refused offsets are not retried until the consumer's heartbeat
        // notices (43 s and 86 aborts, before the sink counted them).
        assert!(
            stats.transactions_aborted() <= 4,
            "{case}: {} transactions aborted before the stop",
            stats.transactions_aborted()
        );
    }
}
