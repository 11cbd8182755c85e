//! Structured logs as a log collector reads them: JSON lines whose fields
//! are values, never Rust Debug text, and messages that say what happened.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use streamscore::Format;
use streamscore::Keyring;
use streamscore_tools::events::EventFactory;
use support::process::{Processor, config_file};

/// Debug renderings that must never reach a field or a message.
const DEBUG_TEXT: &[&str] = &["Some(", "Keyring {", "Ok(", "Err(", "{ key_ids"];

fn assert_no_debug_text(event: &serde_json::Value, line: &str) {
    for (field, value) in event.as_object().unwrap() {
        if let Some(s) = value.as_str() {
            for debug in DEBUG_TEXT {
                assert!(
                    !s.contains(debug),
                    "field {field} holds Debug text {debug:?}: {line}"
                );
            }
        }
    }
}

#[test]
fn json_log_fields_carry_no_debug_text_and_the_final_commit_is_told_as_it_was() {
    let settings = support::settings("logs", Format::Avro, Format::Avro);
    support::create(&settings);
    let (keyring, json) = Keyring::generate("log-key").unwrap();
    let mut factory = EventFactory::new(Arc::new(keyring), Format::Avro, "logs", 7);
    let records: Vec<_> = (0..120).map(|_| factory.next(None)).collect();
    support::publish_all(&settings, &records);

    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), "p", &settings, "");
    let log = dir.path().join("p.log");
    let env = std::collections::HashMap::from([
        ("STREAMSCORE__TELEMETRY__LOG_FORMAT", "json"),
        // One line per transaction too.
        (
            "STREAMSCORE__TELEMETRY__LOG_LEVEL",
            "info,streamscore=debug,ort=warn",
        ),
    ]);
    let p = Processor::start_with_env(&config, &json, log.clone(), &env);
    p.wait_address(Duration::from_secs(60));
    let (done, end) = support::wait_committed(&settings, Duration::from_secs(90));
    assert_eq!(done, end);
    let status = p.terminate(Duration::from_secs(60));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status}\n{text}");

    let mut lines = 0;
    for line in text.lines().filter(|l| l.starts_with('{')) {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        // Our own events; a library's text is its own.
        if !event["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("streamscore"))
        {
            continue;
        }
        lines += 1;
        assert_no_debug_text(&event, line);
    }
    assert!(lines > 5, "JSON log lines of streamscore: {text}");
    assert!(text.contains("transaction committed"), "{text}");
    assert!(
        text.contains("\"key_ids\":\"log-key\"") && text.contains("\"active\":\"log-key\""),
        "the keyring line names its keys and the active one as plain text: {text}"
    );
    // Everything was committed before the stop: the stop had nothing left
    // to commit, and must not claim a final commit it did not make.
    assert!(
        !text.contains("source stopped after a final commit"),
        "{text}"
    );
    assert!(
        text.contains("source stopped; nothing was waiting for a commit"),
        "{text}"
    );
}

/// A shared buffer the in-process subscriber writes its JSON lines to.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A stop whose final commit aborts says so, as a warning, and does not
/// claim a final commit; its fields carry no Debug text either.
#[test]
fn a_final_transaction_that_aborts_is_told_as_aborted() {
    use std::time::Instant;
    use streamscore::Faults;
    use streamscore::Pipeline;
    use streamscore::telemetry::Stats;

    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_env_filter("info,streamscore=debug,ort=warn")
        .with_writer(move || writer.clone())
        .init();

    let mut settings = support::settings("logs-abort", Format::Avro, Format::Avro);
    // One long transaction: open with every record when the stop comes (a
    // transaction closes once its oldest record is this old, so the records
    // are published after the start).
    settings.transactions.commit_interval = Duration::from_millis(60_000);
    settings.kafka.transaction_timeout = Duration::from_millis(120_000);
    support::create(&settings);
    let keyring = support::keyring();
    let mut factory = EventFactory::new(keyring.clone(), Format::Avro, "logs-abort", 8);
    let records: Vec<_> = (0..40).map(|_| factory.next(None)).collect();
    let stats = Arc::new(Stats::default());
    let faults = Arc::new(Faults::default());
    let pipeline = Pipeline::start_with_faults(
        &settings,
        streamscore::share(keyring),
        stats.clone(),
        faults.clone(),
    )
    .expect("pipeline starts");
    support::publish_all(&settings, &records);
    let deadline = Instant::now() + Duration::from_secs(60);
    // Scored counts at commit; batch_rows once inferred.
    while stats.batches().1 < 40 {
        assert!(Instant::now() < deadline, "{}", support::counts(&stats));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        stats.committed(),
        0,
        "still open: {}",
        support::counts(&stats)
    );
    faults.abort_next_commits(1);
    pipeline.stop();
    pipeline
        .join()
        .expect("an aborted final commit is a clean stop");
    assert_eq!(faults.commits_to_abort(), 0, "the final commit was aborted");

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let mut told = None;
    for line in text.lines() {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_no_debug_text(&event, line);
        if event["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("source stopped"))
        {
            told = Some(event);
        }
    }
    let told = told.unwrap_or_else(|| panic!("no stop line: {text}"));
    assert_eq!(
        told["message"],
        "source stopped; the final transaction aborted, the next start reads it again",
        "{text}"
    );
    assert_eq!(told["level"], "WARN", "{told}");
}
