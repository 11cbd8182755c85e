//! The Kafka Streams reference (benches/kstreams, run by
//! scripts/kstreams-reference): the same job as `streamscore run`, written
//! as a Kafka Streams user writes it (exactly_once_v2, one ONNX Runtime call
//! per record), run as its own process on the same broker and backlog, and
//! measured the way the service is ([`super::service`]): ready is process
//! start to the streams state RUNNING; rows/s and CPU per record from ready
//! until the group's committed offsets reach the input's end; peak RSS from
//! /proc. The independent reader checks its output exactly-once before any
//! figure counts.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use streamscore::clients::{Role, client_config};
use streamscore::{Format, Settings};

use crate::bench::service::{peak_rss_mib, process_cpu, terminate};
use crate::bench::{BenchError, STALL};
use crate::verify;

/// The jar, relative to the repository root.
const JAR: &str = "benches/kstreams/target/streamscore-kstreams-reference.jar";
/// The runner, relative to the repository root.
const SCRIPT: &str = "scripts/kstreams-reference";
/// What builds the jar.
const BUILD: &str = "scripts/setup (or: cd benches/kstreams && mvn -q -B package)";
/// The line the reference prints once its streams state is RUNNING.
const READY_LINE: &str = "kstreams-reference: RUNNING";
/// How often the group's committed offsets are read.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);

/// One run of the reference on a waiting backlog.
pub(crate) struct ReferenceOptions {
    /// Broker and `kafka.properties`, model card and threshold, input
    /// schemas, score schema and its id: as the service would read them.
    pub(crate) settings: Settings,
    /// The topic holding the backlog, already published.
    pub(crate) input: String,
    pub(crate) scores: String,
    pub(crate) dead_letters: String,
    /// The keyring JSON the backlog was sealed with (`Source.keyring_json`).
    pub(crate) keyring_json: String,
    /// Records in the backlog.
    pub(crate) events: u64,
    /// Where the log (and, for the run only, the keyring file) go.
    pub(crate) dir: PathBuf,
    /// application.id (so the consumer group) and the file names: unique per run.
    pub(crate) name: String,
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct ReferenceRun {
    /// Ready to the last commit, as streamscore's cold backlog.
    pub rows_per_s: f64,
    /// Process CPU (user + system, every thread) over the same span.
    pub cpu_us_per_row: f64,
    pub peak_rss_mib: Option<f64>,
    /// Process start to the streams state RUNNING.
    pub ready_s: f64,
    /// Score records a read_committed reader found.
    pub scored: u64,
    /// The independent reader's line, for the report's checks.
    pub verified: String,
}

/// Runs the reference on the backlog of `opts.input` until every record is
/// committed, stops it cleanly and checks its output exactly-once. It
/// blocks for the whole run, as the other scenarios do.
pub(crate) fn run_reference_blocking(opts: &ReferenceOptions) -> Result<ReferenceRun, BenchError> {
    let s = &opts.settings;
    if s.input.format != Format::Avro || s.output.format != Format::Avro {
        return Err(failed(
            "the Kafka Streams reference",
            "it reads and writes Avro only (input.format and output.format = \"avro\")",
        ));
    }
    let root = repo_root();
    let jar = root.join(JAR);
    check_jar(&jar, &root.join("benches/kstreams"))?;
    let offsets = Offsets::new(s, &opts.input, &opts.name)?;
    let keyring = opts.dir.join(format!("{}.keyring.json", opts.name));
    write_private(&keyring, &opts.keyring_json)?;
    let run = Reference::start(&root.join(SCRIPT), &java_args(opts, &keyring), opts);
    let run = run.and_then(|mut reference| {
        let result = measure(&mut reference, &offsets, opts.events);
        let stopped = reference.stop();
        let figures = result?;
        stopped?;
        Ok(figures)
    });
    let _ = std::fs::remove_file(&keyring);
    let mut figures = run?;
    let (scored, verified) = check(opts)?;
    figures.scored = scored;
    figures.verified = verified;
    println!(
        "bench: kafka streams reference: ready after {:.2} s, {:.0} rows/s, {:.1} µs CPU a row, peak RSS {:.0} MiB",
        figures.ready_s,
        figures.rows_per_s,
        figures.cpu_us_per_row,
        figures.peak_rss_mib.unwrap_or(0.0)
    );
    Ok(figures)
}

fn failed(what: &str, e: impl std::fmt::Display) -> BenchError {
    BenchError::Service(format!("kstreams reference: {what}: {e}"))
}

/// Ready, then the drain: (figures without the check's).
fn measure(
    reference: &mut Reference,
    offsets: &Offsets,
    events: u64,
) -> Result<ReferenceRun, BenchError> {
    let ready = reference.wait_ready(STALL)?;
    let cpu_at_ready = process_cpu(reference.pid())?;
    let at_ready = Instant::now();
    let mut last = (0, Instant::now());
    loop {
        reference.check_alive()?;
        let (done, end) = offsets.committed()?;
        if done >= end {
            break;
        }
        if done != last.0 {
            last = (done, Instant::now());
        } else if last.1.elapsed() > STALL {
            return Err(BenchError::Stalled {
                phase: "kstreams reference",
                done: u64::try_from(done).unwrap_or(0),
                expected: u64::try_from(end).unwrap_or(0),
            });
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
    let drain = at_ready.elapsed();
    let cpu = process_cpu(reference.pid())?.saturating_sub(cpu_at_ready);
    Ok(figures(
        events,
        ready,
        drain,
        cpu,
        peak_rss_mib(reference.pid()),
    ))
}

/// The figures from the measured spans.
fn figures(
    events: u64,
    ready: Duration,
    drain: Duration,
    cpu: Duration,
    peak_rss_mib: Option<f64>,
) -> ReferenceRun {
    ReferenceRun {
        rows_per_s: events as f64 / drain.as_secs_f64().max(1e-3),
        cpu_us_per_row: cpu.as_secs_f64() * 1e6 / events.max(1) as f64,
        peak_rss_mib,
        ready_s: ready.as_secs_f64(),
        scored: 0,
        verified: String::new(),
    }
}

/// The independent reader on the reference's topics and group: (scores
/// found, its line). A run that lost or duplicated a record is an error.
fn check(opts: &ReferenceOptions) -> Result<(u64, String), BenchError> {
    let mut s = opts.settings.clone();
    s.kafka.group_id.clone_from(&opts.name);
    s.input.topics = vec![opts.input.clone()];
    s.output.topic.clone_from(&opts.scores);
    s.output.dead_letter_topic.clone_from(&opts.dead_letters);
    let report = verify::verify_settings(&s, Duration::from_secs(120))?;
    if !report.exactly_once()
        || report.produced != report.scored + report.dead_lettered
        || !report.offsets_committed_to_end()
    {
        return Err(BenchError::NotExactlyOnce {
            phase: "kstreams reference",
            line: report.line(),
        });
    }
    Ok((
        report.scored,
        format!("kstreams reference: {}", report.line()),
    ))
}

/// The reference's arguments after the script's name: everything from the
/// settings, so that it reads and writes what the service would.
fn java_args(opts: &ReferenceOptions, keyring: &Path) -> Vec<String> {
    let s = &opts.settings;
    let path = |p: &Path| p.display().to_string();
    let mut args = vec![
        "--bootstrap".into(),
        s.kafka.bootstrap_servers.clone(),
        "--input".into(),
        opts.input.clone(),
        "--output".into(),
        opts.scores.clone(),
        "--dead-letters".into(),
        opts.dead_letters.clone(),
        "--keyring".into(),
        path(keyring),
        "--application-id".into(),
        opts.name.clone(),
        "--model".into(),
        path(&s.model.card),
        "--reader-schema".into(),
        path(&s.input.reader_schema),
        "--score-schema".into(),
        path(&s.output.avro_schema),
        "--score-schema-id".into(),
        s.output.avro_schema_id.to_string(),
        "--commit-interval-ms".into(),
        s.transactions.commit_interval.as_millis().to_string(),
    ];
    for (id, schema) in &s.input.avro_schemas {
        args.push("--writer-schema".into());
        args.push(format!("{id}={}", path(schema)));
    }
    if let Some(threshold) = s.model.threshold {
        args.push("--threshold".into());
        args.push(threshold.to_string());
    }
    for (key, value) in &s.kafka.properties {
        args.push("--property".into());
        args.push(format!("{key}={value}"));
    }
    args
}

/// This checkout: the working directory when the bench runs from the
/// repository root (as its relative config paths assume), else the one
/// this crate was built in.
fn repo_root() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_default();
    if cwd.join(SCRIPT).is_file() {
        return cwd;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The jar must exist and be newer than its sources: a stale one would
/// measure old code, and the runner would rebuild it inside the ready time.
fn check_jar(jar: &Path, project: &Path) -> Result<(), BenchError> {
    let built = std::fs::metadata(jar)
        .and_then(|m| m.modified())
        .map_err(|_| {
            failed(
                "the jar is missing",
                format!("{} not found; build it with {BUILD}", jar.display()),
            )
        })?;
    let newest = newest_file(&project.join("src"))
        .into_iter()
        .chain(modified(&project.join("pom.xml")))
        .max();
    match newest {
        Some(source) if source > built => Err(failed(
            "the jar is older than its sources",
            format!("rebuild {} with {BUILD}", jar.display()),
        )),
        _ => Ok(()),
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The latest modification time of any file under `dir`.
fn newest_file(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let time = if path.is_dir() {
            newest_file(&path)
        } else {
            modified(&path)
        };
        newest = newest.max(time);
    }
    newest
}

/// The keyring for the reference's --keyring, readable by this user only.
fn write_private(path: &Path, text: &str) -> Result<(), BenchError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(text.as_bytes())
    };
    write().map_err(|error| BenchError::Write {
        path: path.display().to_string(),
        error,
    })
}

/// The reference's consumer group progress, read without joining it: the
/// input's end offsets once (the backlog is published before the start),
/// then the group's committed offsets at each call.
struct Offsets {
    consumer: BaseConsumer,
    partitions: TopicPartitionList,
    end: i64,
}

impl Offsets {
    fn new(settings: &Settings, topic: &str, group_id: &str) -> Result<Self, BenchError> {
        let kafka = |e: rdkafka::error::KafkaError| BenchError::Kafka(e.to_string());
        let consumer: BaseConsumer = client_config(settings, Role::ToolReader { group_id })
            .create()
            .map_err(kafka)?;
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(kafka)?;
        let ids: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if ids.is_empty() {
            return Err(BenchError::Kafka(format!("topic {topic} not found")));
        }
        let mut partitions = TopicPartitionList::new();
        let mut end = 0;
        for p in ids {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .map_err(kafka)?;
            end += high;
            partitions.add_partition(topic, p);
        }
        Ok(Self {
            consumer,
            partitions,
            end,
        })
    }

    /// (committed, end), summed over the input's partitions.
    fn committed(&self) -> Result<(i64, i64), BenchError> {
        let committed = self
            .consumer
            .committed_offsets(self.partitions.clone(), Duration::from_secs(10))
            .map_err(|e| BenchError::Kafka(e.to_string()))?;
        let done = committed
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            })
            .sum();
        Ok((done, self.end))
    }
}

/// The reference process: scripts/kstreams-reference execs the JVM, so its
/// pid is the JVM's and /proc tells its CPU and memory.
struct Reference {
    child: Child,
    started: Instant,
    log: PathBuf,
}

impl Reference {
    fn start(script: &Path, args: &[String], opts: &ReferenceOptions) -> Result<Self, BenchError> {
        let log = opts.dir.join(format!("{}.log", opts.name));
        let out = File::create(&log).map_err(|e| failed("log", e))?;
        let err = out.try_clone().map_err(|e| failed("log", e))?;
        let child = Command::new(script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| failed(&format!("cannot start {}", script.display()), e))?;
        Ok(Self {
            child,
            started: Instant::now(),
            log,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the RUNNING line; returns how long after the start it came.
    fn wait_ready(&mut self, within: Duration) -> Result<Duration, BenchError> {
        while self.started.elapsed() < within {
            self.check_alive()?;
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text.lines().any(|l| l.starts_with(READY_LINE)) {
                return Ok(self.started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(failed(
            "not ready",
            format!(
                "no RUNNING line within {} s; see {}",
                within.as_secs(),
                self.log.display()
            ),
        ))
    }

    fn check_alive(&mut self) -> Result<(), BenchError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(failed(
                "exited",
                format!("{status}; see {}", self.log.display()),
            )),
            Err(e) => Err(failed("wait", e)),
        }
    }

    /// SIGTERM: Kafka Streams closes (its last transaction committed) and
    /// the process exits 0.
    fn stop(&mut self) -> Result<(), BenchError> {
        let status = terminate(&mut self.child)?;
        if status.success() {
            Ok(())
        } else {
            Err(failed(
                "did not exit cleanly",
                format!("{status}; see {}", self.log.display()),
            ))
        }
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        // A run that failed half-way must not leave a JVM behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> ReferenceOptions {
        let mut settings = Settings::load_with_env(None, false).expect("the defaults load");
        settings.kafka.bootstrap_servers = "127.0.0.1:9".into();
        settings
            .kafka
            .properties
            .insert("security.protocol".into(), "PLAINTEXT".into());
        settings.model.threshold = Some(0.25);
        ReferenceOptions {
            settings,
            input: "run.backlog".into(),
            scores: "run.ks-scores".into(),
            dead_letters: "run.dead-letters".into(),
            keyring_json: String::new(),
            events: 10,
            dir: PathBuf::from("/tmp"),
            name: "run.kstreams".into(),
        }
    }

    fn value_of<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn the_reference_reads_and_writes_what_the_service_would() {
        let args = java_args(&options(), Path::new("/tmp/k.json"));
        assert_eq!(value_of(&args, "--bootstrap"), ["127.0.0.1:9"]);
        assert_eq!(value_of(&args, "--input"), ["run.backlog"]);
        assert_eq!(value_of(&args, "--output"), ["run.ks-scores"]);
        assert_eq!(value_of(&args, "--dead-letters"), ["run.dead-letters"]);
        assert_eq!(value_of(&args, "--application-id"), ["run.kstreams"]);
        assert_eq!(value_of(&args, "--keyring"), ["/tmp/k.json"]);
        assert_eq!(value_of(&args, "--model"), ["models/fraud_gbm.card.json"]);
        assert_eq!(
            value_of(&args, "--writer-schema"),
            [
                "1=schemas/card_transaction.v1.avsc",
                "2=schemas/card_transaction.v2.avsc"
            ]
        );
        assert_eq!(
            value_of(&args, "--reader-schema"),
            ["schemas/card_transaction.v2.avsc"]
        );
        assert_eq!(value_of(&args, "--score-schema-id"), ["101"]);
        assert_eq!(value_of(&args, "--commit-interval-ms"), ["100"]);
        assert_eq!(value_of(&args, "--threshold"), ["0.25"]);
        assert_eq!(
            value_of(&args, "--property"),
            ["security.protocol=PLAINTEXT"]
        );
        // Every flag has its value: the Java side reads them in pairs.
        assert_eq!(args.len() % 2, 0);
    }

    #[test]
    fn figures_count_from_ready_and_per_record() {
        let run = figures(
            100_000,
            Duration::from_millis(1_600),
            Duration::from_secs(2),
            Duration::from_millis(3_900),
            Some(319.0),
        );
        assert!((run.rows_per_s - 50_000.0).abs() < 1e-6);
        assert!((run.cpu_us_per_row - 39.0).abs() < 1e-9);
        assert!((run.ready_s - 1.6).abs() < 1e-9);
        assert_eq!(run.peak_rss_mib, Some(319.0));
    }

    #[test]
    fn a_jar_older_than_its_sources_is_refused_naming_the_build() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path();
        std::fs::create_dir_all(project.join("src/main")).unwrap();
        let jar = project.join("r.jar");
        let missing = check_jar(&jar, project).unwrap_err().to_string();
        assert!(missing.contains("scripts/setup"), "{missing}");
        std::fs::write(project.join("src/main/A.java"), "").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&jar, "").unwrap();
        check_jar(&jar, project).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(project.join("pom.xml"), "").unwrap();
        let stale = check_jar(&jar, project).unwrap_err().to_string();
        assert!(stale.contains("older than its sources"), "{stale}");
    }
}
