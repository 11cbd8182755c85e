//! `streamscore-tools` as upstream teams meet it: `produce` publishes JSON
//! lines as sealed events that get scored, over TLS with the same config file
//! `run` reads, never reports a delivery it did not get, and names a missing
//! input file once.

use crate::support;

use std::io::Write;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use streamscore::Keyring;
use streamscore::{Format, Settings};
use streamscore_tools::events::EventFactory;
use support::broker::OwnBroker;

fn tools() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_streamscore-tools"));
    c.current_dir(support::root()).env_remove("RUST_LOG");
    for (k, _) in std::env::vars() {
        if k.starts_with("STREAMSCORE__") {
            c.env_remove(k);
        }
    }
    c
}

/// Runs to completion and returns (exit code, stderr).
/// Runs a tool that must succeed; its standard output.
fn succeed(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A config file holding `toml`, in a directory that lives as long as the guard.
fn config_with(toml: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, toml).unwrap();
    (dir, path)
}

fn refuse(cmd: &mut Command) -> (i32, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// JSON lines sealed with a keyring file's active key are scored.
#[test]
fn produce_json_lines_sealed_with_a_keyring_file_that_get_scored() {
    let dir = tempfile::tempdir().unwrap();
    let (keyring, json) = Keyring::generate("2026-11").unwrap();
    let keyring_path = dir.path().join("keyring.json");
    std::fs::File::create(&keyring_path)
        .and_then(|mut f| f.write_all(json.as_bytes()))
        .unwrap();
    let settings = support::settings("cli-produce", Format::Avro, Format::Avro);
    support::create(&settings);
    let lines = event_lines(25);
    let lines_path = dir.path().join("events.jsonl");
    std::fs::write(&lines_path, lines.join("\n")).unwrap();
    let config = support::process::config_file(dir.path(), "produce", &settings, "");
    let out = tools()
        .args(["produce", "--config"])
        .arg(&config)
        .arg("--file")
        .arg(&lines_path)
        .env("STREAMSCORE__KEYS__FILE", &keyring_path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("produced 25 records"), "{stderr}");

    let report = support::run_and_verify(&settings, Arc::new(keyring), 25);
    assert!(report.exactly_once(), "{}", report.line());
    assert_eq!(report.scored, 25, "{:?}", report.dead_letter_reasons);
}

/// `produce --register` registers the writer schema (v2 here) under the
/// topic's subject and frames the id the registry gives; `--lookup` finds
/// it; the processor, reading ids from the same registry, scores them all.
/// Without a registry configured, both refuse in one line.
#[test]
fn produce_takes_its_schema_id_from_the_registry() {
    let registry = support::registry::OwnRegistry::start("cli-sr");
    let dir = tempfile::tempdir().unwrap();
    let (keyring, json) = Keyring::generate("2026-12").unwrap();
    let mut settings = support::settings("cli-sr", Format::Avro, Format::Avro);
    registry.attach(&mut settings);
    support::create(&settings);
    let lines_path = dir.path().join("events.jsonl");
    std::fs::write(&lines_path, event_lines(12).join("\n")).unwrap();
    let extra = format!("[input.schema_registry]\nurls = [\"{}\"]\n", registry.url);
    let config = support::process::config_file(dir.path(), "produce", &settings, &extra);
    let produce = |how: &str| {
        let out = tools()
            .args(["produce", "--config"])
            .arg(&config)
            .arg("--file")
            .arg(&lines_path)
            .arg(how)
            .args(["--writer-schema", "schemas/card_transaction.v2.avsc"])
            .env("STREAMSCORE_KEYRING", &json)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{how}: {stderr}");
        stderr
    };
    let registered = produce("--register");
    let subject = format!("{}-value", settings.input.topics[0]);
    let v2 = registry.register(&subject, "card_transaction.v2.avsc");
    assert!(
        registered.contains(&format!("wrote with schema id {v2}")),
        "{registered}"
    );
    let looked_up = produce("--lookup");
    assert!(
        looked_up.contains(&format!("wrote with schema id {v2}")),
        "{looked_up}"
    );

    let report = support::run_and_verify(&settings, Arc::new(keyring), 24);
    assert!(report.exactly_once(), "{}", report.line());
    assert_eq!(report.scored, 24, "{:?}", report.dead_letter_reasons);

    let plain = support::settings("cli-sr-none", Format::Avro, Format::Avro);
    let config = support::process::config_file(dir.path(), "plain", &plain, "");
    let (code, err) = refuse(
        tools()
            .args(["produce", "--config"])
            .arg(&config)
            .arg("--file")
            .arg(&lines_path)
            .arg("--register")
            .env("STREAMSCORE_KEYRING", &json),
    );
    assert_ne!(code, 0);
    assert!(err.contains("need input.schema_registry.urls"), "{err}");
}

/// `count` JSON lines of valid events, as `produce` reads them.
fn event_lines(count: usize) -> Vec<String> {
    let mut factory = EventFactory::new(
        Arc::new(Keyring::generate("x").unwrap().0),
        Format::Json,
        "p",
        8,
    );
    (0..count)
        .map(|i| {
            let fields = factory.fields(&format!("line-{i}"), &format!("card-{i}"));
            String::from_utf8(factory.encode(fields, 1)).unwrap()
        })
        .collect()
}

/// `streamscore-tools produce` with these lines on these settings; (exit code, stderr).
fn produce(settings: &Settings, lines: &[String], topic: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let lines_path = dir.path().join("events.jsonl");
    std::fs::write(&lines_path, lines.join("\n")).unwrap();
    let config = support::process::config_file(dir.path(), "produce", settings, "");
    refuse(
        tools()
            .args(["produce", "--config"])
            .arg(&config)
            .arg("--file")
            .arg(&lines_path)
            .args(["--topic", topic])
            .env("STREAMSCORE_KEYRING", Keyring::generate("k").unwrap().1),
    )
}

/// Records in `topic`, read back with the independent reader.
fn records_in(settings: &Settings, topic: &str) -> u64 {
    let mut s = settings.clone();
    s.input.topics = vec![topic.to_owned()];
    streamscore_tools::verify::verify_settings(&s, Duration::from_secs(60))
        .expect("topics can be read back")
        .produced
}

/// A record the broker never acknowledged is never reported as produced:
/// to a topic that does not exist (the test broker does not create topics
/// on demand) every delivery fails, and `produce` says how many and why.
#[test]
fn produce_to_a_missing_topic_fails_naming_how_many_and_why() {
    let settings = support::settings("cli-missing-topic", Format::Avro, Format::Avro);
    support::create(&settings);
    let missing = format!("{}.missing", settings.input.topics[0]);
    let (code, err) = produce(&settings, &event_lines(20), &missing);
    assert_ne!(code, 0, "{err}");
    assert!(!err.contains("produced 20"), "{err}");
    assert!(
        err.contains("20 of 20 records were not delivered")
            && err.contains("Unknown topic or partition"),
        "{err}"
    );
}

/// A bad line stops `produce` before anything is sent, and it says so.
#[test]
fn produce_with_a_bad_line_sends_nothing_and_says_so() {
    let settings = support::settings("cli-bad-line", Format::Avro, Format::Avro);
    support::create(&settings);
    let mut lines = event_lines(25);
    lines[20] = "{ not json".into();
    let topic = settings.input.topics[0].clone();
    let (code, err) = produce(&settings, &lines, &topic);
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("line 21") && err.contains("nothing was sent"),
        "{err}"
    );
    assert_eq!(records_in(&settings, &topic), 0);

    let (code, err) = produce(&settings, &lines[..20], &topic);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("produced 20 records"), "{err}");
    assert_eq!(records_in(&settings, &topic), 20);
}

/// A missing input file's OS error is said once.
#[test]
fn a_missing_input_file_is_named_once_with_its_os_error_once() {
    let (_, json) = Keyring::generate("k").unwrap();
    let (code, err) = refuse(
        tools()
            .args(["produce", "--file", "/nonexistent/events.jsonl"])
            .env("STREAMSCORE_KEYRING", &json),
    );
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("/nonexistent/events.jsonl"), "{err}");
    assert_eq!(
        err.matches("No such file or directory").count(),
        1,
        "produce: {err}"
    );
}

/// `streamscore-tools produce` reaches the cluster as `run` does: with the same
/// config file, over TLS, its records are delivered.
#[test]
fn produce_talks_tls_with_the_config_run_uses() {
    let _turn = support::exclusive();
    let broker = OwnBroker::start_tls("tls-produce");
    let plain = broker.settings("tls-produce");
    let ca = broker.tls.as_ref().expect("a TLS listener").1.clone();
    let tls = broker.tls_settings(&plain, &ca);
    let dir = tempfile::tempdir().unwrap();
    let config = support::process::config_file(
        dir.path(),
        "tls",
        &tls,
        &format!(
            "[kafka.properties]\n\"security.protocol\" = \"SSL\"\n\"ssl.ca.location\" = \"{}\"\n",
            ca.display()
        ),
    );
    let lines = event_lines(30);
    let lines_path = dir.path().join("events.jsonl");
    std::fs::write(&lines_path, lines.join("\n")).unwrap();
    let out = tools()
        .args(["produce", "--config"])
        .arg(&config)
        .arg("--file")
        .arg(&lines_path)
        .env("STREAMSCORE_KEYRING", Keyring::generate("k").unwrap().1)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("produced 30 records"), "{stderr}");
    let report = streamscore_tools::verify::verify_settings(&plain, Duration::from_secs(60))
        .expect("topics can be read back");
    assert_eq!(report.produced, 30);
}

/// Ctrl-C ends an unbounded demo the way it says it does: the producer stops,
/// the pipeline drains, and the independent check runs (the demo used to poll
/// the finished Ctrl-C future again and panic before verifying).
#[test]
fn an_unbounded_demo_stopped_with_ctrl_c_drains_and_verifies() {
    use std::io::BufRead;
    use std::process::Stdio;
    let mut child = tools()
        .args(["demo", "--rate", "200", "--metrics-listen", "127.0.0.1:0"])
        .args(["--bootstrap", &support::bootstrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    let mut seen = Vec::new();
    // Running: announced, then two status lines (records flowing).
    while !seen
        .iter()
        .any(|l: &String| l.contains("Ctrl-C stops and verifies"))
        || seen.last().is_none_or(|l| l.starts_with("demo:"))
        || seen.iter().filter(|l| !l.starts_with("demo:")).count() < 2
    {
        match lines.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("the demo did not get going: {seen:#?}"),
        }
    }
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the demo did not finish after Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    seen.extend(lines.try_iter());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(status.success(), "{status}: {stderr}\n{seen:#?}");
    let verified = seen.iter().find(|l| l.starts_with("verified:"));
    assert!(
        verified.is_some_and(|l| l.ends_with(" 0 lost, 0 duplicated")),
        "{verified:?}\n{seen:#?}"
    );
}

/// `inference` runs ONNX Runtime alone, without a broker: the fixture rows
/// against Python's scores, then a table of every batch size asked for.
#[test]
fn inference_alone_checks_the_fixtures_and_measures_each_batch_size() {
    let stdout = succeed(tools().args(["inference", "--batches", "1,8", "--seconds", "0.05"]));
    assert!(stdout.contains("fixtures: cpu: 64 rows"), "{stdout}");
    for batch in ["1", "8"] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| cpu | {batch} |")))
            .unwrap_or_else(|| panic!("no row for batch {batch}: {stdout}"));
        let rows_per_second: f64 = row.split('|').nth(3).unwrap().trim().parse().unwrap();
        assert!(rows_per_second > 0.0, "{row}");
    }
}

/// `--pinned` measures each device again with batches staged in its host
/// memory through an IoBinding (page-locked on CUDA; the session's own
/// memory here): the fixtures must hold there too.
#[test]
fn inference_alone_with_staged_batches_checks_the_fixtures_there_too() {
    let stdout = succeed(tools().args([
        "inference",
        "--pinned",
        "--batches",
        "1,8",
        "--seconds",
        "0.05",
    ]));
    assert!(stdout.contains("fixtures: cpu+bound: 64 rows"), "{stdout}");
    assert!(stdout.contains("| cpu+bound | 8 |"), "{stdout}");
    assert!(!stdout.contains("not measured"), "{stdout}");
}

/// A model with string features (one graph input per feature) is measured
/// on its fixture rows, strings and all; staging it in host memory is not
/// possible, and the sweep says so beside the rows it did measure.
#[test]
fn inference_alone_measures_a_model_with_string_features_and_says_what_it_could_not() {
    let (_dir, config) = config_with("[model]\ncard = \"models/zoo/country_pipeline.card.json\"\n");
    let stdout = succeed(
        tools()
            .args([
                "inference",
                "--pinned",
                "--batches",
                "1,8",
                "--seconds",
                "0.05",
            ])
            .args([
                "--fixtures",
                "models/fixtures/country_pipeline.expected.json",
            ])
            .arg("--config")
            .arg(&config),
    );
    assert!(stdout.contains("fixtures: cpu: 64 rows"), "{stdout}");
    assert!(stdout.contains("| cpu | 8 |"), "{stdout}");
    assert!(
        stdout.contains("not measured: cpu+bound: ")
            && stdout.contains("one float input that takes every feature"),
        "{stdout}"
    );
    assert!(!stdout.contains("| cpu+bound |"), "{stdout}");
}

/// Durations that `Duration` cannot hold are refused in one line, not a panic.
#[test]
fn seconds_that_are_not_a_duration_are_refused() {
    for (tool, seconds) in [
        ("inference", "inf"),
        ("batching", "1e300"),
        ("batching", "NaN"),
    ] {
        let (code, stderr) = refuse(tools().args([tool, "--seconds", seconds]));
        assert_eq!(code, 1, "{tool} --seconds {seconds}: {stderr}");
        assert!(
            stderr.contains("--seconds must be a positive number of seconds"),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// A fixture score the model does not reproduce fails the run, naming the row.
#[test]
fn inference_alone_fails_on_a_score_that_differs_from_python() {
    // The default model's own fixture (models/fraud_gbm).
    let path = support::root().join("models/fixtures/fraud_gbm.expected.json");
    let mut fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let score = fixture["rows"][3]["score"].as_f64().unwrap();
    fixture["rows"][3]["score"] = serde_json::json!(score + 0.001);
    let dir = tempfile::tempdir().unwrap();
    let changed = dir.path().join("expected.json");
    std::fs::write(&changed, fixture.to_string()).unwrap();
    let (code, stderr) = refuse(
        tools()
            .args(["inference", "--batches", "1", "--fixtures"])
            .arg(&changed),
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("fixture row fixture-003"), "{stderr}");
    assert!(stderr.contains("more than 0.00001 apart"), "{stderr}");
}

/// `--devices cuda` measures on the GPU or fails: never a CPU run under the
/// GPU's name (here, without CUDA, it fails naming the setting).
#[test]
fn inference_alone_on_cuda_runs_there_or_says_why_not() {
    let out = tools()
        .args([
            "inference",
            "--devices",
            "cuda",
            "--pinned",
            "--batches",
            "8",
            "--seconds",
            "0.05",
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    if out.status.success() {
        assert!(stdout.contains("| cuda | 8 |"), "{stdout}");
        // Pinned buffers are measured, or it says why not.
        assert!(
            stdout.contains("| cuda+pinned | 8 |") || stdout.contains("not measured: cuda+pinned"),
            "{stdout}"
        );
        assert!(!stdout.contains("| cpu |"), "{stdout}");
    } else {
        assert!(stderr.contains("model.device = \"cuda\""), "{stderr}");
        assert!(stdout.is_empty(), "nothing measured: {stdout}");
    }
}

/// `batching` runs the batcher and the workers without a broker: generated
/// rows at each rate, every one back scored once and in order (the run
/// fails otherwise), the adaptive size sampled over the run.
#[test]
fn batching_alone_offers_generated_rows_and_follows_the_adaptive_size() {
    let (_dir, config) = config_with(
        "[batching]\nmode = \"adaptive\"\nmax_batch_size = 512\nlatency_target_ms = 20\n",
    );
    let stdout = succeed(
        tools()
            .args([
                "batching",
                "--rates",
                "5000,0",
                "--seconds",
                "0.6",
                "--config",
            ])
            .arg(&config),
    );
    assert!(
        stdout.starts_with("batching: adaptive, sizes 1..512, latency target 20 ms"),
        "{stdout}"
    );
    for offered in ["5000", "as taken"] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| cpu | {offered} |")))
            .unwrap_or_else(|| panic!("no row for {offered}: {stdout}"));
        let scored: f64 = row.split('|').nth(3).unwrap().trim().parse().unwrap();
        assert!(scored > 0.0, "{row}");
    }
    // The band is worked out where the rate is set, not where it is found out.
    let expected = |offered: &str| {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| cpu | {offered} |")));
        row.and_then(|r| r.split('|').nth(5))
            .map(|c| c.trim().to_owned())
    };
    assert_eq!(expected("as taken").as_deref(), Some("—"), "{stdout}");
    assert!(
        expected("5000").is_some_and(|c| c.contains('–')),
        "{stdout}"
    );
    let series = stdout
        .lines()
        .find(|l| l.starts_with("- cpu at 5000 rows/s: "))
        .unwrap_or_else(|| panic!("no size series: {stdout}"));
    // It starts at the smallest size and grows: batches of one row at 5000
    // rows/s fill in a blink, far under the 20 ms target.
    let sizes: Vec<usize> = series
        .rsplit("; ")
        .next()
        .unwrap()
        .split(' ')
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(sizes.first(), Some(&1), "{series}");
    assert!(
        sizes.iter().any(|&s| s > 1),
        "the size never grew: {series}"
    );
}
