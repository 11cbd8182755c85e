//! The `streamscore` binary as an operator meets it: clear one-line refusals
//! for bad config, a tampered model, a missing library or broker; and `run`
//! scoring real traffic, then committing and exiting 0 on SIGTERM.

use crate::support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use streamscore::Format;
use streamscore::Keyring;
use streamscore_tools::events::EventFactory;

fn streamscore() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_streamscore"));
    c.current_dir(support::root())
        .env_remove("RUST_LOG")
        .env("STREAMSCORE__TELEMETRY__LISTEN", "127.0.0.1:0")
        .env("STREAMSCORE__TELEMETRY__LOG_FORMAT", "human");
    for (k, _) in std::env::vars() {
        if k.starts_with("STREAMSCORE__") {
            c.env_remove(k);
        }
    }
    c
}

fn config_file(toml: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(toml.as_bytes()).unwrap();
    f
}

/// The shipped model card in a temporary folder, beside `model` as its .onnx.
fn card_beside(model: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let card = support::root().join("models/fraud_mlp.card.json");
    std::fs::copy(card, dir.path().join("fraud_mlp.card.json")).unwrap();
    std::fs::write(dir.path().join("fraud_mlp.onnx"), model).unwrap();
    dir
}

/// Runs to completion and returns (exit code, stderr).
fn refuse(cmd: &mut Command) -> (i32, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_config_value_stops_with_one_line_naming_key_value_and_allowed() {
    let (code, err) = refuse(
        streamscore()
            .args(["run"])
            .env("STREAMSCORE__BATCHING__MAX_BATCH_SIZE", "0"),
    );
    assert_ne!(code, 0);
    assert_eq!(
        err,
        "error: config: batching.max_batch_size = 0 is not allowed: an integer from 1 to 65536\n"
    );

    let file = config_file("[model]\ndevice = \"gpu\"\n");
    let (code, err) = refuse(streamscore().args(["run", "--config"]).arg(file.path()));
    assert_ne!(code, 0);
    assert_eq!(
        err,
        "error: config: model.device = gpu is not allowed: \"cpu\", \"cuda\" or \"auto\"\n"
    );
}

/// `check` and `run` share one validation: an override of a setting that
/// exactly-once rests on, or an output topic that is also read, stops both
/// with the same single line.
#[test]
fn exactly_once_overrides_and_looping_topics_stop_check_and_run_with_one_line() {
    for (toml, line) in [
        (
            "[kafka.consumer]\n\"isolation.level\" = \"read_uncommitted\"\n",
            "error: config: kafka.consumer.isolation.level = \"read_uncommitted\" is not allowed: exactly-once needs read_committed; this property cannot be overridden\n",
        ),
        (
            "[input]\ntopics = [\"scores\"]\n",
            "error: config: input.topics = [\"scores\"] is not allowed: topics other than output.topic (\"scores\"): scoring its own output would loop\n",
        ),
    ] {
        let file = config_file(toml);
        for command in ["check", "run"] {
            let (code, err) = refuse(
                streamscore()
                    .args([command, "--config"])
                    .arg(file.path())
                    .env("STREAMSCORE_KEYRING", Keyring::generate("k").unwrap().1),
            );
            assert_ne!(code, 0, "{command}: {err}");
            assert_eq!(err, line, "{command}");
        }
    }
}

#[test]
fn tampered_model_refuses_to_start() {
    let mut onnx = std::fs::read(support::root().join("models/fraud_mlp.onnx")).unwrap();
    let mid = onnx.len() / 2;
    onnx[mid] ^= 0x01;
    let dir = card_beside(&onnx);
    let (_, json) = Keyring::generate("k").unwrap();
    let (code, err) = refuse(
        streamscore()
            .args(["run"])
            .env("STREAMSCORE_KEYRING", json)
            .env(
                "STREAMSCORE__MODEL__CARD",
                dir.path().join("fraud_mlp.card.json"),
            ),
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("has SHA-256") && err.contains("refusing to serve"),
        "{err}"
    );
}

#[test]
fn missing_keyring_library_and_broker_say_what_is_missing() {
    let (code, err) = refuse(
        streamscore()
            .args(["run"])
            .env_remove("STREAMSCORE_KEYRING"),
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("STREAMSCORE_KEYRING") && err.contains("not set"),
        "{err}"
    );

    let (_, json) = Keyring::generate("k").unwrap();
    let (code, err) = refuse(
        streamscore()
            .args(["run"])
            .env("STREAMSCORE_KEYRING", &json)
            .env(
                "STREAMSCORE__ONNXRUNTIME__LIBRARY",
                "/nonexistent/libonnxruntime.so",
            ),
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("ONNX Runtime library not found at /nonexistent")
            && err.contains("make setup"),
        "{err}"
    );

    let (code, err) = refuse(
        streamscore()
            .args(["run"])
            .env("STREAMSCORE_KEYRING", &json)
            .env("STREAMSCORE__KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")
            .env("STREAMSCORE__KAFKA__REQUEST_TIMEOUT_MS", "2000"),
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("cannot initialise Kafka transactions at 127.0.0.1:1"),
        "{err}"
    );
    support::assert_no_key_material(&err, &json);
}

#[test]
fn run_scores_traffic_and_commits_then_exits_zero_on_sigterm() {
    let settings = support::settings("cli-run", Format::Avro, Format::Avro);
    support::create(&settings);
    let (keyring, json) = Keyring::generate("run-key").unwrap();
    let keyring = Arc::new(keyring);
    let mut factory = EventFactory::new(keyring, Format::Avro, "cli", 3);
    let records: Vec<_> = (0..400).map(|_| factory.next(None)).collect();
    support::publish_all(&settings, &records);

    let file = config_file(&format!(
        "[kafka]\nbootstrap_servers = \"{}\"\ngroup_id = \"{}\"\ntransactional_id = \"{}\"\n\
         [input]\ntopics = [\"{}\"]\n[output]\ntopic = \"{}\"\ndead_letter_topic = \"{}\"\n",
        settings.kafka.bootstrap_servers,
        settings.kafka.group_id,
        settings.kafka.transactional_id,
        settings.input.topics[0],
        settings.output.topic,
        settings.output.dead_letter_topic,
    ));
    let child = streamscore()
        .args(["run", "--config"])
        .arg(file.path())
        .env("STREAMSCORE_KEYRING", &json)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the consumer group has committed everything, as a separate reader sees it.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let report = support::verify_topics(&settings);
        if report.offsets_committed_to_end() && report.scored == 400 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all committed in time: {}",
            report.line()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("stopped cleanly"), "{stderr}");
    support::assert_no_key_material(&stderr, &json);
    let report = support::verify_topics(&settings);
    assert!(report.exactly_once(), "{}", report.line());
    assert_eq!(report.scored, 400);
}

#[test]
fn sigterm_during_start_up_still_stops_cleanly() {
    let settings = support::settings("cli-early-term", Format::Avro, Format::Avro);
    support::create(&settings);
    let (_, json) = Keyring::generate("k").unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Four sessions warmed up at a large batch make start-up long enough to
    // land in; the signal goes the moment the HTTP endpoints are up, which
    // is just before the pipeline starts.
    let config = support::process::config_file(
        dir.path(),
        "early",
        &settings,
        "[model]\nsessions = 4\n[batching]\nmax_batch_size = 65536\n",
    );
    let log_path = dir.path().join("early.log");
    let processor = support::process::Processor::start(&config, &json, log_path.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .contains("serving /metrics")
    {
        assert!(
            Instant::now() < deadline,
            "the processor never got as far as serving /metrics"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let status = processor.terminate(Duration::from_secs(30));
    let log = std::fs::read_to_string(dir.path().join("early.log")).unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        log.contains("SIGTERM during start-up"),
        "the signal did not arrive during start-up:\n{log}"
    );
    assert!(log.contains("stopped cleanly"), "{log}");
}

#[test]
fn keys_generate_add_and_activate_a_keyring_file_readable_by_its_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let first = support::run_ok(streamscore().args(["keys", "generate", "--id", "2026-10"]));
    let keyring_path = dir.path().join("keyring.json");
    std::fs::write(&keyring_path, first).unwrap();
    for step in ["add", "activate"] {
        support::run_ok(
            streamscore()
                .args(["keys", step, "--id", "2026-11", "--into"])
                .arg(&keyring_path),
        );
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&keyring_path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let keyring = Keyring::from_file(&keyring_path).unwrap();
    assert_eq!(keyring.active_id(), "2026-11");
}

/// Rotation without a restart, and no key material in logs even at trace level.
#[test]
fn keyring_file_rotation_is_picked_up_live_and_keys_never_reach_the_log() {
    let settings = support::settings("cli-rotate", Format::Avro, Format::Avro);
    support::create(&settings);
    let dir = tempfile::tempdir().unwrap();
    let keyring_path = dir.path().join("keyring.json");
    let (_, old_json) = Keyring::generate("2026-10").unwrap();
    std::fs::write(&keyring_path, &old_json).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&keyring_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let new_json = Keyring::add_json(&old_json, "2026-11").unwrap();
    let new_json = Keyring::activate_json(&new_json, "2026-11").unwrap();
    let producer_keys = Arc::new(Keyring::from_json(&new_json).unwrap());

    let config = support::process::config_file(
        dir.path(),
        "rotate",
        &settings,
        &format!("[keys]\nfile = \"{}\"\n", keyring_path.display()),
    );
    let log = dir.path().join("rotate.log");
    let mut cmd_env = std::collections::HashMap::new();
    cmd_env.insert("RUST_LOG", "trace");
    let processor = support::process::Processor::start_with_env(&config, "", log.clone(), &cmd_env);

    // Sealed with a key the processor does not have yet.
    let mut factory = EventFactory::new(producer_keys.clone(), Format::Avro, "rot", 2);
    let early: Vec<_> = (0..20).map(|_| factory.next(None)).collect();
    support::publish_all(&settings, &early);
    support::wait_committed(&settings, Duration::from_secs(60));
    std::fs::write(&keyring_path, &new_json).unwrap();
    processor.signal("HUP");
    std::thread::sleep(Duration::from_secs(3));
    let late: Vec<_> = (0..30).map(|_| factory.next(None)).collect();
    support::publish_all(&settings, &late);
    let (done, end) = support::wait_committed(&settings, Duration::from_secs(60));
    assert_eq!((done, end), (50, 50));
    let status = processor.terminate(Duration::from_secs(30));
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status}");

    let report = support::verify_topics(&settings);
    assert!(report.exactly_once(), "{}", report.line());
    assert_eq!(
        report.dead_letter_reasons.get("unknown_key"),
        Some(&20),
        "{:?}",
        report.dead_letter_reasons
    );
    assert_eq!(report.scored, 30);
    assert!(
        log_text.contains("keyring reloaded"),
        "no reload in the log"
    );
    assert!(log_text.lines().count() > 100, "expected a trace-level log");
    support::assert_no_key_material(&log_text, &new_json);
}

#[test]
fn check_validates_loads_the_model_and_redacts_secrets() {
    let (_, keyring_json) = Keyring::generate("k").unwrap();
    let out = streamscore()
        .arg("check")
        .env("STREAMSCORE_KEYRING", &keyring_json)
        .env(
            "STREAMSCORE__KAFKA__PROPERTIES__SASL_PASSWORD",
            "hunter2-secret",
        )
        .env("STREAMSCORE__BATCHING__MAX_BATCH_SIZE", "512")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("SHA-256") && stdout.contains("verified"),
        "{stdout}"
    );
    assert!(stdout.contains("\"max_batch_size\": 512"), "{stdout}");
    assert!(
        stdout.contains("<redacted>") && !stdout.contains("hunter2"),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with("check: ok"));

    let dir = card_beside(b"not the model");
    let (code, err) = refuse(
        streamscore()
            .arg("check")
            .env("STREAMSCORE_KEYRING", &keyring_json)
            .env(
                "STREAMSCORE__MODEL__CARD",
                dir.path().join("fraud_mlp.card.json"),
            ),
    );
    assert_ne!(code, 0);
    assert!(err.contains("refusing to serve"), "{err}");
}

/// Every refusal `run` makes before it connects, `check` makes too, with the
/// same single line: keyrings that cannot be loaded, and librdkafka
/// properties it does not know or values it does not take.
#[test]
fn check_refuses_what_run_refuses_before_connecting() {
    use base64::Engine;
    let b64 = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![7u8; n]);
    let keyring = |active: &str, id: &str, key: &str| {
        format!(r#"{{"active":"{active}","keys":{{"{id}":"{key}"}}}}"#)
    };
    let good = keyring("k1", "k1", &b64(32));
    let no_file = "/nonexistent/streamscore/keyring.json";
    /// What is wrong, the environment, the config file, what the line must name.
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, &'a str, Vec<String>);
    let cases: Vec<Case<'_>> = vec![
        (
            "a 16-byte key",
            vec![("STREAMSCORE_KEYRING", keyring("k1", "k1", &b64(16)))],
            "",
            vec!["\"k1\"".into(), "32 bytes".into()],
        ),
        (
            "a key that is not base64",
            vec![("STREAMSCORE_KEYRING", keyring("k1", "k1", "not*base64!"))],
            "",
            vec!["\"k1\"".into(), "base64".into()],
        ),
        (
            "an active id missing from the ring",
            vec![("STREAMSCORE_KEYRING", keyring("k9", "k1", &b64(32)))],
            "",
            vec!["\"k9\"".into()],
        ),
        (
            "a missing keyring file",
            vec![("STREAMSCORE__KEYS__FILE", no_file.into())],
            "",
            vec![no_file.into()],
        ),
        (
            "an unknown librdkafka property",
            vec![("STREAMSCORE_KEYRING", good.clone())],
            "[kafka.properties]\n\"securty.protocol\" = \"SSL\"\n",
            vec![
                "kafka.properties.securty.protocol = \"SSL\"".into(),
                "No such configuration property".into(),
            ],
        ),
        (
            "an invalid librdkafka value",
            vec![("STREAMSCORE_KEYRING", good.clone())],
            "[kafka.properties]\n\"security.protocol\" = \"TLS\"\n",
            vec![
                "kafka.properties.security.protocol = \"TLS\"".into(),
                "Invalid value".into(),
            ],
        ),
    ];
    for (case, env, toml, needles) in cases {
        let file = config_file(toml);
        let mut lines = Vec::new();
        for command in ["check", "run"] {
            let mut cmd = streamscore();
            cmd.args([command, "--config"])
                .arg(file.path())
                .env_remove("STREAMSCORE_KEYRING")
                // Where `run` would get past these refusals it must not find a broker.
                .env("STREAMSCORE__KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")
                .env("STREAMSCORE__KAFKA__REQUEST_TIMEOUT_MS", "2000");
            for (k, v) in &env {
                cmd.env(k, v);
            }
            let (code, err) = refuse(&mut cmd);
            assert_ne!(code, 0, "{command} accepted {case}: {err}");
            let last = err.lines().last().unwrap_or_default().to_owned();
            for needle in &needles {
                assert!(last.contains(needle.as_str()), "{command}, {case}: {err}");
            }
            lines.push((err, last));
        }
        assert_eq!(
            lines[0].0.lines().count(),
            1,
            "check, {case}: one line: {}",
            lines[0].0
        );
        assert_eq!(lines[0].1, lines[1].1, "{case}: check and run differ");
    }
}

/// An error's causes are each said once: a missing file's OS error does not
/// come twice (once in the message, once more as its cause).
#[test]
fn a_missing_file_is_named_once_with_its_os_error_once() {
    let (_, json) = Keyring::generate("k").unwrap();
    for (key, path) in [
        ("STREAMSCORE__MODEL__CARD", "/nonexistent/card.json"),
        (
            "STREAMSCORE__INPUT__READER_SCHEMA",
            "/nonexistent/reader.avsc",
        ),
        ("STREAMSCORE__KEYS__FILE", "/nonexistent/keyring.json"),
    ] {
        let (code, err) = refuse(
            streamscore()
                .args(["check"])
                .env("STREAMSCORE_KEYRING", &json)
                .env(key, path),
        );
        assert_ne!(code, 0, "{err}");
        assert!(err.contains(path), "{err}");
        assert_eq!(
            err.matches("No such file or directory").count(),
            1,
            "{key}: {err}"
        );
    }
}
