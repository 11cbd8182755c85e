//! Helpers for the integration tests: the real Kafka broker that `make test`
//! starts (scripts/kafka), unique topics per test, and running a pipeline in
//! process until everything it read is committed.

#![allow(dead_code)]

pub mod broker;
pub mod cluster;
pub mod group;
pub mod process;
pub mod registry;
pub mod scrape;
pub mod supervisor;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use streamscore::Keyring;
use streamscore::Pipeline;
use streamscore::telemetry::Stats;
use streamscore::{Format, Settings};
use streamscore_tools::admin::create_topics;
use streamscore_tools::events::OutRecord;
use streamscore_tools::publish;
use streamscore_tools::verify::{self, Report};

/// The repository root (the tests belong to crates/streamscore or
/// crates/streamscore-tools, two levels below it).
pub fn root() -> PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .expect("the crate sits two levels below the repository root")
        .to_path_buf()
}

/// The Python of `make setup`'s venv (confluent-kafka, fastavro, cryptography,
/// the Helm SDK, kubernetes-validate); `needs` says what the test uses it for.
/// Missing is a failure naming the fix, never a skip.
pub fn python(needs: &str) -> PathBuf {
    let python = root().join(".local/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: {needs}; run `make setup`",
        python.display()
    );
    python
}

/// The broker `make test` started (`STREAMSCORE_BOOTSTRAP`), or else one
/// this test process starts for itself, so a plain `cargo test` runs every
/// test rather than skipping or failing: `scripts/kafka run` keeps it until
/// this process exits (its command waits on our pid), then stops and deletes
/// it.
pub fn bootstrap() -> String {
    if let Ok(address) = std::env::var("STREAMSCORE_BOOTSTRAP") {
        return address;
    }
    static OWN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    OWN.get_or_init(start_own_broker).clone()
}

fn start_own_broker() -> String {
    use std::io::{BufRead, Write};
    use std::process::{Command, Stdio};
    let pid = std::process::id();
    let name = format!("auto-{pid}");
    // Straight to stderr: the harness captures `eprintln!` of a passing
    // test, and this notice is for whoever runs `cargo test`.
    let _ = writeln!(
        std::io::stderr(),
        "STREAMSCORE_BOOTSTRAP is not set: starting Kafka broker {name} for this test process \
         (scripts/kafka; `make test` starts one for all)"
    );
    let mut child = Command::new(root().join("scripts/kafka"))
        .args([
            "run",
            &name,
            "--",
            "tail",
            &format!("--pid={pid}"),
            "-f",
            "/dev/null",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("scripts/kafka runs");
    let mut lines = std::io::BufReader::new(child.stderr.take().expect("piped")).lines();
    let mut said = Vec::new();
    let address = loop {
        match lines.next() {
            Some(Ok(line)) => match line.rsplit_once(" up at ") {
                Some((_, address)) => break address.trim().to_owned(),
                None => said.push(line),
            },
            _ => panic!(
                "the test broker did not start (run `make setup` first?):\n{}",
                said.join("\n")
            ),
        }
    };
    // Drain what it says later, so it never blocks on a full pipe, and reap
    // it if it ends while this process still runs.
    std::thread::spawn(move || {
        lines.for_each(drop);
        let _ = child.wait();
    });
    address
}

/// Tests that run several processor processes take turns: on 2 cores, two
/// such tests at once would only measure the scheduler.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn unique(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "t-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Default settings bound to fresh topics, a fresh group and transactional id.
pub fn settings(name: &str, input: Format, output: Format) -> Settings {
    let id = unique(name);
    let mut s = Settings::load_with_env(None, false).expect("default settings are valid");
    s.kafka.bootstrap_servers = bootstrap();
    s.kafka.group_id = id.clone();
    s.kafka.transactional_id = format!("{id}-txn");
    s.input.topics = vec![format!("{id}.in")];
    s.input.format = input;
    s.output.topic = format!("{id}.scores");
    s.output.dead_letter_topic = format!("{id}.dlq");
    s.output.format = output;
    s.model.card = root().join("models/fraud_mlp.card.json");
    s.input.reader_schema = root().join(&s.input.reader_schema);
    for path in s.input.avro_schemas.values_mut() {
        *path = root().join(&*path);
    }
    s.output.avro_schema = root().join(&s.output.avro_schema);
    s.onnxruntime.library = Some(root().join(".local/onnxruntime/lib/libonnxruntime.so"));
    s.validate().expect("test settings are valid");
    s
}

/// Creates every input topic with 3 partitions, and the output topics.
pub fn create(settings: &Settings) {
    create_inputs(settings, &vec![3; settings.input.topics.len()]);
}

/// Creates the input topics with these partition counts (one per
/// `input.topics` entry, in order), and the output topics.
pub fn create_inputs(settings: &Settings, partitions: &[i32]) {
    assert_eq!(partitions.len(), settings.input.topics.len());
    let mut topics: Vec<(&str, i32)> = settings
        .input
        .topics
        .iter()
        .map(String::as_str)
        .zip(partitions.iter().copied())
        .collect();
    topics.push((settings.output.topic.as_str(), 3));
    topics.push((settings.output.dead_letter_topic.as_str(), 1));
    if settings.model.shadow_card.is_some() {
        topics.push((settings.output.shadow_topic.as_str(), 3));
    }
    block_on(create_topics(settings, &topics)).expect("topics can be created");
}

/// Grows `topic` to `total` partitions while it is in use.
pub fn add_partitions(settings: &Settings, topic: &str, total: usize) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = streamscore::clients::tool_config(settings)
        .create()
        .expect("admin client");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = block_on(admin.create_partitions(&[NewPartitions::new(topic, total)], &options))
        .expect("create_partitions answers");
    for r in results {
        r.unwrap_or_else(|(t, code)| panic!("cannot add partitions to {t}: {code}"));
    }
}

/// Runs an admin future to completion on the test's thread.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A tool `make setup` installs under the repository, or a failure saying so.
pub fn tool(path: &str, what: &str) -> PathBuf {
    let path = root().join(path);
    assert!(
        path.exists(),
        "{} is missing: {what}; run `make setup`",
        path.display()
    );
    path
}

/// A fresh single-key keyring.
pub fn keyring() -> Arc<Keyring> {
    Arc::new(Keyring::generate("test-key").unwrap().0)
}

/// A pipeline's counts on one line, for assertion messages.
pub fn counts(s: &Stats) -> String {
    format!(
        "consumed {}, scored {}, dead-lettered {}, transactions committed {}, aborted {}, producers replaced {}",
        s.consumed(),
        s.scored(),
        s.dead_lettered(),
        s.transactions_committed(),
        s.transactions_aborted(),
        s.producers_replaced()
    )
}

/// Publishes to the first input topic.
pub fn publish_all(settings: &Settings, records: &[OutRecord]) {
    publish_to(settings, &settings.input.topics[0], None, records);
}

/// Publishes to `topic`, to one `partition` when given (else by key).
pub fn publish_to(settings: &Settings, topic: &str, partition: Option<i32>, records: &[OutRecord]) {
    let producer = publish::publisher(settings).unwrap();
    for r in records {
        match partition {
            Some(p) => publish::publish_to_partition(&producer, topic, p, r).unwrap(),
            None => publish::publish(&producer, topic, r).unwrap(),
        }
    }
    publish::flush(&producer).unwrap();
}

/// Runs a pipeline until it has committed `expected` records (or times out),
/// stops it cleanly, and verifies the topics with the independent reader.
pub fn run_and_verify(settings: &Settings, keyring: Arc<Keyring>, expected: u64) -> Report {
    run_with_faults_and_verify(settings, keyring, expected, Arc::default())
}

/// As [`run_and_verify`], with `faults` armed (aborted commits, say).
pub fn run_with_faults_and_verify(
    settings: &Settings,
    keyring: Arc<Keyring>,
    expected: u64,
    faults: Arc<streamscore::Faults>,
) -> Report {
    let stats = Arc::new(Stats::default());
    let pipeline =
        Pipeline::start_with_faults(settings, streamscore::share(keyring), stats.clone(), faults)
            .expect("pipeline starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    while stats.committed() < expected && Instant::now() < deadline && !pipeline.has_stopped() {
        std::thread::sleep(Duration::from_millis(50));
    }
    pipeline.stop();
    pipeline.join().expect("pipeline stops cleanly");
    verify_topics(settings)
}

/// Reads the topics back with the independent reader. A transaction left
/// open by a SIGKILLed instance holds back the read_committed view (the last
/// stable offset) until the broker aborts it after `transaction.timeout.ms`;
/// so a record only counts as lost if it is still missing after that long.
/// Duplicates cannot disappear, so they are never waited out.
pub fn verify_topics(settings: &Settings) -> Report {
    let settle = settings.kafka.transaction_timeout + Duration::from_secs(10);
    let deadline = Instant::now() + settle;
    loop {
        let report = verify::verify_settings(settings, Duration::from_secs(60))
            .expect("topics can be read back");
        if report.lost == 0 || Instant::now() > deadline {
            return report;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Publishes `events` records at `rate`/s on a thread, `bad_percent` of them
/// bad (every kind in turn); returns how many were published.
pub fn stream(
    settings: &Settings,
    keyring: Arc<Keyring>,
    events: u64,
    rate: u64,
    bad_percent: u32,
) -> std::thread::JoinHandle<u64> {
    let topic = settings.input.topics[0].clone();
    stream_to(settings, &topic, keyring, events, rate, bad_percent)
}

/// As [`stream`], to any input topic.
pub fn stream_to(
    settings: &Settings,
    topic: &str,
    keyring: Arc<Keyring>,
    events: u64,
    rate: u64,
    bad_percent: u32,
) -> std::thread::JoinHandle<u64> {
    let factory =
        streamscore_tools::events::EventFactory::new(keyring, settings.input.format, "stream", 11);
    let settings = patient(settings);
    let topic = topic.to_owned();
    std::thread::spawn(move || {
        let producer = publish::publisher(&settings).unwrap();
        let plan = publish::StreamPlan {
            events: Some(events),
            rate,
            bad_per_mille: u64::from(bad_percent) * 10,
        };
        let streamed = publish::stream(
            &producer,
            &topic,
            factory,
            &plan,
            &AtomicU64::new(0),
            &Default::default(),
        );
        match streamed {
            // A broker restarting outlasts one flush: keep flushing while
            // the records may still be delivered.
            Err(publish::PublishError::Unacknowledged { .. }) => {
                let give_up = Instant::now() + STREAM_PATIENCE;
                loop {
                    match publish::flush(&producer) {
                        Err(publish::PublishError::Unacknowledged { .. })
                            if Instant::now() < give_up => {}
                        other => break other.unwrap(),
                    }
                }
            }
            other => other.unwrap(),
        }
    })
}

/// How long the streams of the tests that crash, halt and restart the
/// broker wait for a record's acknowledgement: librdkafka's default, the
/// patience these tests had before the tools were given 60 s (a restart can
/// take longer on a loaded machine).
const STREAM_PATIENCE: Duration = Duration::from_secs(300);

/// The settings for a stream's producer only (never the processor's):
/// records wait [`STREAM_PATIENCE`] for their acknowledgement.
fn patient(settings: &Settings) -> Settings {
    let mut settings = settings.clone();
    settings.kafka.properties.insert(
        "message.timeout.ms".into(),
        STREAM_PATIENCE.as_millis().to_string(),
    );
    settings
}

/// Waits until the group has committed every input record (offsets at the end).
pub fn wait_committed(settings: &Settings, timeout: Duration) -> (i64, i64) {
    let deadline = Instant::now() + timeout;
    let mut last = (0, -1);
    loop {
        // A slow answer under load is not a failure: keep asking until the deadline.
        if let Ok(progress) =
            verify::committed_progress(settings, &settings.input.topics, &settings.kafka.group_id)
        {
            last = progress;
        }
        if (last.0 == last.1 && last.1 > 0) || Instant::now() > deadline {
            return last;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Records committed so far by the group (0 while it cannot tell).
pub fn committed_so_far(settings: &Settings) -> i64 {
    verify::committed_progress(settings, &settings.input.topics, &settings.kafka.group_id)
        .map(|(done, _)| done)
        .unwrap_or(0)
}

/// Runs a command that must succeed; returns its standard output.
pub fn run_ok(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every way a keyring's keys could show up in text (base64, hex, byte
/// list), for tests that check none of them leaks.
pub fn key_material(keyring_json: &str) -> Vec<String> {
    use base64::Engine;
    let keys: serde_json::Value = serde_json::from_str(keyring_json).unwrap();
    let mut out = Vec::new();
    for b64 in keys["keys"].as_object().unwrap().values() {
        let b64 = b64.as_str().unwrap();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        out.extend([b64.to_owned(), hex::encode(&raw), format!("{raw:?}")]);
    }
    assert!(!out.is_empty());
    out
}

pub fn assert_no_key_material(text: &str, keyring_json: &str) {
    for secret in key_material(keyring_json) {
        assert!(!text.contains(&secret), "key material reached the output");
    }
}

/// A number from the environment (a longer run's size or seed), else `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The independent check at the end of a fault run: every produced record
/// read back, exactly once, and the group's offsets at the input's end;
/// `log` (the processor's) goes with a failure.
pub fn assert_exactly_once(settings: &Settings, produced: u64, what: &str, log: &str) -> Report {
    let report = verify_topics(settings);
    assert_eq!(report.produced, produced, "{what}");
    assert!(
        report.exactly_once(),
        "{what}: {}\nprocessor log tail:\n{log}",
        report.line()
    );
    assert!(
        report.offsets_committed_to_end(),
        "{what}: {:?}",
        report.committed_vs_end
    );
    report
}
