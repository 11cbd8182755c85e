//! The chart's alerts, tested with Prometheus's own tool: the PrometheusRule
//! is rendered from the chart (release "scorer" in namespace "fraud", default
//! thresholds), its groups are written out as a rules file, and `promtool
//! check rules` and `promtool test rules` run on it with
//! tests/alerts/streamscore.test.yaml. Every alert must have a case that
//! fires and one that stays quiet there, and a runbook section in the
//! chart's README.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const TESTS: &str = "tests/alerts/streamscore.test.yaml";
/// The name the test file's `rule_files` gives the rendered rules.
const RULES: &str = "streamscore.rules.yaml";

fn tool(path: &str, what: &str) -> PathBuf {
    let path = support::root().join(path);
    assert!(
        path.exists(),
        "{} is missing: {what}; run `make setup`",
        path.display()
    );
    path
}

fn promtool() -> PathBuf {
    tool(".local/bin/promtool", "the alert tests need promtool")
}

fn python() -> PathBuf {
    tool(
        ".local/venv/bin/python",
        "the alert tests render the chart with helm-python-sdk",
    )
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("the tool starts");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The PrometheusRule's groups as the chart renders them.
fn rendered_groups() -> Value {
    let out = run(Command::new(python())
        .current_dir(support::root())
        .arg("tests/helm/chart_tool.py")
        .arg("helm/streamscore")
        .arg("--set-json")
        .arg(r#"{"metrics": {"prometheusRule": {"enabled": true}}}"#));
    let r: Value = serde_json::from_slice(&out.stdout).expect("chart_tool.py prints JSON");
    assert!(r["rejected"].is_null(), "{}", r["rejected"]);
    let rule = r["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|m| m["kind"] == "PrometheusRule")
        .expect("a PrometheusRule");
    rule["doc"]["spec"]["groups"].clone()
}

/// The test file as JSON (promtool's YAML, read by the venv's PyYAML).
fn unit_tests() -> Value {
    let out = run(Command::new(python()).current_dir(support::root()).args([
        "-c",
        "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)",
        TESTS,
    ]));
    serde_json::from_slice(&out.stdout).expect("the test file as JSON")
}

fn alerts(groups: &Value) -> Vec<Value> {
    groups
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
        .filter(|r| r["alert"].is_string())
        .cloned()
        .collect()
}

/// Rules and tests side by side in a fresh directory, as `rule_files` expects.
fn workdir(groups: &Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    // JSON is YAML: promtool reads it as is.
    let rules = serde_json::json!({ "groups": groups });
    std::fs::write(dir.path().join(RULES), rules.to_string()).unwrap();
    std::fs::copy(
        support::root().join(TESTS),
        dir.path().join("streamscore.test.yaml"),
    )
    .unwrap();
    dir
}

fn promtool_in(dir: &Path, args: &[&str]) -> String {
    let out = run(Command::new(promtool()).current_dir(dir).args(args));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_rendered_rules_pass_promtool_check() {
    let groups = rendered_groups();
    let dir = workdir(&groups);
    let out = promtool_in(dir.path(), &["check", "rules", RULES]);
    let n = alerts(&groups).len();
    assert!(out.contains(&format!("SUCCESS: {n} rules found")), "{out}");
}

#[test]
fn every_alert_passes_its_promtool_unit_tests() {
    let dir = workdir(&rendered_groups());
    let out = promtool_in(dir.path(), &["test", "rules", "streamscore.test.yaml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

/// A rule without a firing case could never fire for all we know; one
/// without a quiet case could always fire.
#[test]
fn every_alert_has_a_firing_and_a_quiet_case() {
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    let tests = unit_tests();
    for case in tests["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().cloned().unwrap_or_default())
    {
        let name = case["alertname"].as_str().expect("alertname").to_owned();
        let expected = case["exp_alerts"].as_array().map_or(0, Vec::len);
        if expected == 0 {
            quiet.insert(name);
        } else {
            fires.insert(name);
        }
    }
    for alert in alerts(&rendered_groups()) {
        let name = alert["alert"].as_str().unwrap();
        assert!(fires.contains(name), "no case where {name} fires");
        assert!(quiet.contains(name), "no case where {name} stays quiet");
    }
}

/// GitHub's anchor for a Markdown heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn every_alert_links_a_runbook_section_of_the_chart_readme() {
    let readme =
        std::fs::read_to_string(support::root().join("helm/streamscore/README.md")).unwrap();
    let anchors: BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect();
    for alert in alerts(&rendered_groups()) {
        let name = alert["alert"].as_str().unwrap();
        let url = alert["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no runbook_url"));
        let (page, fragment) = url
            .split_once('#')
            .unwrap_or_else(|| panic!("{name}: {url} names no section"));
        assert!(
            page.ends_with("helm/streamscore/README.md"),
            "{name}: {url} is not the chart README"
        );
        assert!(
            anchors.contains(fragment),
            "{name}: the chart README has no section #{fragment}"
        );
        assert!(
            alert["labels"]["severity"].is_string(),
            "{name} has no severity"
        );
    }
}
