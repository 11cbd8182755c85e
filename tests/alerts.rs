//! The chart's alerts, tested with Prometheus's own tool: the PrometheusRule
//! is rendered from the chart (release "scorer" in namespace "fraud", default
//! thresholds), its groups are written out as a rules file, and `promtool
//! check rules` and `promtool test rules` run on it with
//! tests/alerts/streamscore.test.yaml. Every alert must have a case that
//! fires and one that stays quiet there, and a runbook section in the
//! chart's README. Values that change how an alert is written (a release
//! that may scale to zero replicas) are variants: each renders the rules
//! again and runs its own test file, which must test every alert the
//! variant writes differently.

use crate::support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The name every test file's `rule_files` gives the rendered rules.
const RULES: &str = "streamscore.rules.yaml";

/// Chart values over the defaults, and the promtool tests for the rules they render.
struct Variant {
    name: &'static str,
    set: &'static str,
    tests: &'static str,
}

const DEFAULT: Variant = Variant {
    name: "default values",
    set: r#"{"metrics": {"prometheusRule": {"enabled": true}}}"#,
    tests: "tests/alerts/streamscore.test.yaml",
};

/// KEDA's Kafka trigger may scale the release to 0 replicas: no target
/// then is the idle state, not an outage.
const SCALE_TO_ZERO: Variant = Variant {
    name: "autoscaling from 0 replicas",
    set: r#"{"metrics": {"prometheusRule": {"enabled": true}}, "autoscaling": {"enabled": true, "minReplicas": 0}}"#,
    tests: "tests/alerts/streamscore-scale-to-zero.test.yaml",
};

const VARIANTS: [Variant; 2] = [DEFAULT, SCALE_TO_ZERO];

fn promtool() -> PathBuf {
    support::tool(".local/bin/promtool", "the alert tests need promtool")
}

fn python() -> PathBuf {
    support::tool(
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

/// The PrometheusRule's groups as the chart renders them for `v`.
fn rendered_groups(v: &Variant) -> Value {
    let out = run(Command::new(python())
        .current_dir(support::root())
        .arg("tests/helm/chart_tool.py")
        .arg("helm/streamscore")
        .arg("--set-json")
        .arg(v.set));
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

/// A test file as JSON (promtool's YAML, read by the venv's PyYAML).
fn unit_tests(v: &Variant) -> Value {
    let out = run(Command::new(python()).current_dir(support::root()).args([
        "-c",
        "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)",
        v.tests,
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
fn workdir(groups: &Value, v: &Variant) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    // JSON is YAML: promtool reads it as is.
    let rules = serde_json::json!({ "groups": groups });
    std::fs::write(dir.path().join(RULES), rules.to_string()).unwrap();
    std::fs::copy(
        support::root().join(v.tests),
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
    for v in &VARIANTS {
        let groups = rendered_groups(v);
        let dir = workdir(&groups, v);
        let out = promtool_in(dir.path(), &["check", "rules", RULES]);
        let n = alerts(&groups).len();
        assert!(
            out.contains(&format!("SUCCESS: {n} rules found")),
            "{}: {out}",
            v.name
        );
    }
}

#[test]
fn every_alert_passes_its_promtool_unit_tests() {
    for v in &VARIANTS {
        let dir = workdir(&rendered_groups(v), v);
        let out = promtool_in(dir.path(), &["test", "rules", "streamscore.test.yaml"]);
        assert!(out.contains("SUCCESS"), "{}: {out}", v.name);
    }
}

/// Alert names with a firing case, and with a quiet case, in `v`'s test file.
fn cases(v: &Variant) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    let tests = unit_tests(v);
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
    (fires, quiet)
}

/// A rule without a firing case could never fire for all we know; one
/// without a quiet case could always fire. A variant's file tests every
/// alert the variant renders differently from the defaults.
#[test]
fn every_alert_has_a_firing_and_a_quiet_case() {
    let defaults = alerts(&rendered_groups(&DEFAULT));
    for v in &VARIANTS {
        let (fires, quiet) = cases(v);
        let mut tested = 0;
        for alert in alerts(&rendered_groups(v)) {
            let name = alert["alert"].as_str().unwrap();
            if v.tests != DEFAULT.tests && defaults.contains(&alert) {
                continue;
            }
            assert!(
                fires.contains(name),
                "{}: no case where {name} fires",
                v.name
            );
            assert!(
                quiet.contains(name),
                "{}: no case where {name} stays quiet",
                v.name
            );
            tested += 1;
        }
        assert!(tested > 0, "{}: renders no alert of its own", v.name);
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
    for alert in VARIANTS.iter().flat_map(|v| alerts(&rendered_groups(v))) {
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
