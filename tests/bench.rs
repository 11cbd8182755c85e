//! `streamscore-tools bench` end to end on the test broker, at a size that fits a
//! test run: the ceilings, the pipeline, the sweep, the scenarios and the
//! Kafka Streams reference all run, every measured run is verified exactly once, and the outputs have their promised shape.
//! No figure is asserted: speed is the bench's to report, not a test's.

use crate::support;

use std::process::Command;

#[test]
fn bench_prints_both_ceilings_the_sweep_and_its_last_line() {
    let _turn = support::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("adaptive.toml");
    std::fs::write(
        &config,
        "[batching]\nmode = \"adaptive\"\nmax_batch_size = 128\nlatency_target_ms = 10\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let stdout = support::run_ok(
        Command::new(env!("CARGO_BIN_EXE_streamscore-tools"))
            .current_dir(support::root())
            .args(["bench", "--events", "3000", "--levels", "2"])
            .args(["--level-seconds", "1", "--inference-seconds", "0.3"])
            .args(["--light-rate", "500"])
            .arg("--config")
            .arg(&config)
            .arg("--out")
            .arg(&out)
            .env("STREAMSCORE_BOOTSTRAP", support::bootstrap()),
    );

    for expected in [
        "| (a) raw Kafka: consume → transactional produce, no work (best of 2) |",
        "| (b) ONNX Runtime alone, batch 128 ",
        "| streamscore, end to end ",
        "Batching: adaptive (max 128 rows, max delay 5 ms, min 1 rows, latency target 10 ms)",
        "| 50% | ",
        "| 100% | ",
        "| inference | batch | ",
        "| commit | transaction | ",
        "- pipeline: verified: 3000 produced, 3000 scored, 0 dead-lettered, 0 lost, 0 duplicated",
        "- Throughput ≥ 85% of the kafka ceiling: ",
        "### Scenarios: `streamscore run` as its own process",
        "| 100 ms | ",
        "| 10 ms | ",
        "Pause: SIGSTOP for 1.5 s a third of the way through the backlog.",
        "- cold backlog and steady ≥ 85% of the kafka ceiling: ",
        "- commit_interval_ms = 10: p99 ≤ 30 ms at 500 rows/s: ",
        "- idle ≤ 2% of a core: ",
        "- ready ≤ 2 s: ",
        "- service: verified: 4000 produced, 4000 scored, 0 dead-lettered, 0 lost, 0 duplicated",
        "- pause: verified: 3000 produced, 3000 scored, 0 dead-lettered, 0 lost, 0 duplicated",
        "- short: verified: 4000 produced, 4000 scored, 0 dead-lettered, 0 lost, 0 duplicated",
        "### Kafka Streams reference (benches/kstreams)",
        "| Kafka Streams | ",
        "streamscore against Kafka Streams: ",
        "- ≥ 4× Kafka Streams' throughput: ",
        "- ≥ 5× less CPU a record than Kafka Streams: ",
        "- kstreams reference: verified: 3000 produced, 3000 scored, 0 dead-lettered, 0 lost, 0 duplicated",
        "- p99 at 50% load ≤ commit interval 100 ms + 2 × max delay 5 ms + inference p99 = ",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    let sweep = stdout
        .lines()
        .find(|l| l.starts_with("- sweep: verified: "))
        .unwrap_or_else(|| panic!("no sweep verification in:\n{stdout}"));
    assert!(sweep.ends_with(" 0 lost, 0 duplicated"), "{sweep}");

    let last = stdout.lines().last().unwrap();
    let shape = last
        .strip_prefix("bench: ")
        .and_then(|l| l.split_once(" rows/s, p99 "))
        .and_then(|(rows, rest)| Some((rows, rest.split_once(" ms, ")?)))
        .and_then(|(rows, (p99, rest))| Some((rows, p99, rest.split_once("% of kafka ceiling, ")?)))
        .and_then(|(rows, p99, (kafka, rest))| {
            Some((
                rows,
                p99,
                kafka,
                rest.strip_suffix("% of inference ceiling")?,
            ))
        });
    let (rows, p99, kafka, inference) =
        shape.unwrap_or_else(|| panic!("last line has the wrong shape: {last}"));
    for number in [rows, p99, kafka, inference] {
        let v: f64 = number
            .parse()
            .unwrap_or_else(|_| panic!("{number:?} in {last}"));
        assert!(v > 0.0 && v.is_finite(), "{last}");
    }

    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(
        stdout.contains(md.trim()),
        "results.md is the printed report"
    );
    let png = std::fs::read(out.join("latency.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}
