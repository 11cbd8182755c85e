//! The Helm chart, as `helm lint` / `helm install --dry-run` would see it:
//! linted and rendered with the Helm v4 SDK (PyPI helm-python-sdk, through
//! tests/helm/chart_tool.py), every manifest validated against the
//! Kubernetes schemas of the oldest and newest versions the chart supports
//! (kubernetes-validate), the custom resources (ServiceMonitor,
//! PrometheusRule, ScaledObject) checked against what they point at, and the
//! rendered config run through `streamscore check`.

use crate::support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use streamscore::Keyring;
use streamscore::Settings;

const CHART: &str = "helm/streamscore";
const GPU_VALUES: &str = "helm/streamscore/ci/gpu-autoscaling-values.yaml";
/// The chart's kubeVersion floor, and the newest schemas kubernetes-validate has.
const KUBE_VERSIONS: [&str; 2] = ["1.27.0", "1.37.0"];
/// Custom resources: no Kubernetes schema; checked field by field below.
const CUSTOM_KINDS: [&str; 5] = [
    "KafkaUser",
    "ServiceMonitor",
    "PrometheusRule",
    "ScaledObject",
    "TriggerAuthentication",
];

/// Lints and renders the chart; `set` is merged over the values file like `--set-json`.
fn render(values: Option<&str>, set: Value) -> Value {
    let mut cmd = Command::new(support::python(
        "the chart tests need helm-python-sdk and kubernetes-validate",
    ));
    cmd.current_dir(support::root())
        .arg("tests/helm/chart_tool.py")
        .arg(CHART)
        .arg("--set-json")
        .arg(set.to_string());
    if let Some(v) = values {
        cmd.args(["--values", v]);
    }
    for k in KUBE_VERSIONS {
        cmd.args(["--kube", k]);
    }
    let out = cmd.output().expect("chart_tool.py runs");
    assert!(
        out.status.success(),
        "chart_tool.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("chart_tool.py prints JSON")
}

fn manifests(r: &Value) -> &Vec<Value> {
    r["manifests"].as_array().expect("a manifest list")
}

fn find<'a>(r: &'a Value, kind: &str) -> Vec<&'a Value> {
    manifests(r)
        .iter()
        .filter(|m| m["kind"] == kind)
        .map(|m| &m["doc"])
        .collect()
}

fn one<'a>(r: &'a Value, kind: &str) -> &'a Value {
    let found = find(r, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, got {}", found.len());
    found[0]
}

/// Lint has no warning or error, the values pass the schema, and every
/// manifest is valid for every Kubernetes version (custom kinds aside).
fn assert_clean(r: &Value) {
    assert!(
        r["rejected"].is_null(),
        "values rejected: {}",
        r["rejected"]
    );
    let lint = &r["lint"];
    assert_eq!(lint["errors"], serde_json::json!([]), "{lint}");
    let serious: Vec<&Value> = lint["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["severity"].as_i64().unwrap_or(3) >= 2)
        .collect();
    assert!(serious.is_empty(), "lint warnings or errors: {serious:?}");
    assert!(!manifests(r).is_empty());
    for m in manifests(r) {
        let kind = m["kind"].as_str().unwrap_or_default();
        for version in KUBE_VERSIONS {
            let verdict = m["validation"][version].as_str().unwrap_or_default();
            if CUSTOM_KINDS.contains(&kind) {
                assert_eq!(verdict, "no schema", "{kind} on {version}");
            } else {
                assert_eq!(
                    verdict, "ok",
                    "{kind} {} ({}) on Kubernetes {version}",
                    m["name"], m["template"]
                );
            }
        }
    }
}

/// The rendered streamscore.toml, written to a file the processor can read.
fn rendered_config(r: &Value, dir: &tempfile::TempDir) -> (String, PathBuf) {
    let toml = find(r, "ConfigMap")
        .into_iter()
        .find_map(|m| m["data"]["streamscore.toml"].as_str())
        .expect("a ConfigMap holds streamscore.toml")
        .to_owned();
    let path = dir.path().join("streamscore.toml");
    std::fs::write(&path, &toml).unwrap();
    (toml, path)
}

/// `streamscore check --config F`: validates, loads the keyring, creates the
/// Kafka clients, loads and verifies the model, warms it up. A fresh keyring
/// stands in for the Secret the pod mounts at `keys.file`.
fn check(config: &PathBuf) -> String {
    let dir = tempfile::tempdir().unwrap();
    let keyring = dir.path().join("keyring.json");
    std::fs::write(&keyring, Keyring::generate("chart").unwrap().1).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_streamscore"))
        .current_dir(support::root())
        .env_remove("RUST_LOG")
        .env("STREAMSCORE__KEYS__FILE", &keyring)
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "streamscore check refused the rendered config:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("check: ok"), "{stdout}");
    stdout
}

/// One string field of every object in a JSON list.
fn field_strings<'a>(list: &'a Value, field: &str) -> Vec<&'a str> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|item| item[field].as_str().expect("a string field"))
        .collect()
}

fn container(r: &Value) -> &Value {
    &one(r, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
}

fn env_value<'a>(c: &'a Value, name: &str) -> Option<&'a Value> {
    c["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .map(|e| {
            if e["value"].is_null() {
                &e["valueFrom"]
            } else {
                &e["value"]
            }
        })
}

#[test]
fn default_values_render_valid_manifests_the_processor_accepts() {
    let r = render(None, serde_json::json!({}));
    assert_clean(&r);
    assert_eq!(
        find(&r, "ConfigMap").len(),
        1,
        "the dashboard is behind a flag"
    );
    for kind in ["StatefulSet", "ServiceAccount", "PodDisruptionBudget"] {
        one(&r, kind);
    }
    assert_eq!(
        find(&r, "Service").len(),
        2,
        "metrics and governing services"
    );
    for kind in [
        "Secret",
        "ServiceMonitor",
        "PrometheusRule",
        "ScaledObject",
        "TriggerAuthentication",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
    ] {
        assert!(find(&r, kind).is_empty(), "{kind} is behind a flag");
    }

    let dir = tempfile::tempdir().unwrap();
    let (toml, path) = rendered_config(&r, &dir);
    let settings = Settings::load(Some(&path)).expect("the processor's own validation");
    let out = check(&path);
    assert!(out.contains("SHA-256"), "{out}");

    // Pod spec: what the README and DESIGN promise an SRE.
    let sts = one(&r, "StatefulSet");
    let pod = &sts["spec"]["template"]["spec"];
    let c = container(&r);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let grace_s = (settings.shutdown.grace_period.as_millis() as u64).div_ceil(1000);
    let termination = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        termination > grace_s && termination <= grace_s + 30,
        "terminationGracePeriodSeconds {termination} must just exceed the processor's grace {grace_s} s"
    );
    assert_eq!(
        env_value(c, "STREAMSCORE__KAFKA__TRANSACTIONAL_ID"),
        Some(&Value::from("$(POD_NAME)")),
        "one transactional.id per pod ordinal"
    );
    assert_eq!(
        env_value(c, "STREAMSCORE__KAFKA__GROUP_INSTANCE_ID"),
        Some(&Value::from("$(POD_NAME)"))
    );
    assert_eq!(sts["spec"]["replicas"], 2);
    // A fixed replica count: a stop is a restart, the partitions wait for it.
    assert_eq!(
        settings.shutdown.leave_group,
        streamscore::LeaveGroup::Never
    );
    assert!(
        toml.contains("listen = \"0.0.0.0:9464\""),
        "reachable by probes: {toml}"
    );
    assert_eq!(c["ports"][0]["containerPort"], 9464);
}

#[test]
fn a_batching_value_reaches_the_rendered_config_and_the_processor() {
    let base = render(None, serde_json::json!({}));
    let r = render(
        None,
        serde_json::json!({"batching": {"mode": "adaptive", "maxBatchSize": 512, "minBatchSize": 16, "latencyTargetMs": 30}}),
    );
    assert_clean(&r);
    let dir = tempfile::tempdir().unwrap();
    let (toml, path) = rendered_config(&r, &dir);
    assert!(toml.contains("max_batch_size = 512"), "{toml}");
    let settings = Settings::load(Some(&path)).unwrap();
    assert_eq!(settings.batching.max_batch_size, 512);
    assert_eq!(settings.batching.min_batch_size, 16);
    assert_eq!(settings.batching.latency_target, Duration::from_millis(30));
    let out = check(&path);
    assert!(out.contains("\"max_batch_size\": 512"), "{out}");
    assert!(
        out.contains("batch sizes [1, 16, 32, 64, 128, 256, 512]"),
        "warmed up at every size a batch can take (1: closed by the delay): {out}"
    );
    // A config change rolls the pods.
    let checksum = |r: &Value| {
        one(r, "StatefulSet")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            .clone()
    };
    assert_ne!(checksum(&base), checksum(&r));
}

/// librdkafka property values written as numbers or booleans in values
/// reach the clients as librdkafka reads them: a values file's numbers are
/// floats, and 1000000 written as "1e+06" would be refused by every pod.
#[test]
fn numeric_and_boolean_kafka_properties_reach_the_clients_as_written() {
    let r = render(
        None,
        serde_json::json!({"kafka": {
            "producer": {"queue.buffering.max.messages": 1000000, "linger.ms": 5},
            "consumer": {"fetch.wait.max.ms": 100, "check.crcs": true},
            "properties": {"socket.keepalive.enable": true}
        }}),
    );
    assert_clean(&r);
    let dir = tempfile::tempdir().unwrap();
    let (toml, path) = rendered_config(&r, &dir);
    for line in [
        "\"queue.buffering.max.messages\" = \"1000000\"",
        "\"linger.ms\" = \"5\"",
        "\"fetch.wait.max.ms\" = \"100\"",
        "\"check.crcs\" = \"true\"",
        "\"socket.keepalive.enable\" = \"true\"",
    ] {
        assert!(toml.contains(line), "{line} in {toml}");
    }
    // check creates every client: librdkafka accepts each value.
    check(&path);
}

/// After a failure exit the processor keeps serving /metrics for
/// `telemetry.exit_linger_ms`, so Prometheus scrapes its last counters; the
/// chart's default is twice the ServiceMonitor's 15 s interval (at least one
/// scrape lands in it), and a set value reaches the processor.
#[test]
fn the_exit_linger_reaches_the_processor_with_two_scrape_intervals_by_default() {
    for (set, wanted) in [
        (serde_json::json!({}), 30_000),
        (
            serde_json::json!({"telemetry": {"exitLingerMs": 120000}}),
            120_000,
        ),
        (serde_json::json!({"telemetry": {"exitLingerMs": 0}}), 0),
    ] {
        let r = render(None, set.clone());
        assert_clean(&r);
        let dir = tempfile::tempdir().unwrap();
        let (toml, path) = rendered_config(&r, &dir);
        assert!(
            toml.contains(&format!("exit_linger_ms = {wanted}\n")),
            "{set}: {toml}"
        );
        let settings = Settings::load(Some(&path)).unwrap();
        assert_eq!(
            settings.telemetry.exit_linger,
            Duration::from_millis(wanted),
            "{set}"
        );
    }
    for bad in [serde_json::json!(600001), serde_json::json!(-1)] {
        let set = serde_json::json!({"telemetry": {"exitLingerMs": bad}});
        let why = render(None, set.clone())["rejected"]
            .as_str()
            .unwrap_or_else(|| panic!("{set} was accepted"))
            .to_owned();
        assert!(why.contains("exitLingerMs"), "{set}: {why}");
    }
}

#[test]
fn gpu_and_autoscaling_values_render_valid_manifests() {
    let r = render(Some(GPU_VALUES), serde_json::json!({}));
    assert_clean(&r);
    let c = container(&r);
    assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], 1);
    assert!(
        c["image"].as_str().unwrap().ends_with("-cuda"),
        "{}",
        c["image"]
    );
    let sts = one(&r, "StatefulSet");
    let pod = &sts["spec"]["template"]["spec"];
    assert_eq!(pod["tolerations"][0]["key"], "nvidia.com/gpu");
    assert!(
        sts["spec"]["replicas"].is_null(),
        "the autoscaler owns the replica count"
    );
    assert_eq!(
        env_value(c, "STREAMSCORE__KAFKA__TRANSACTIONAL_ID"),
        Some(&Value::from("prod-$(POD_NAME)"))
    );
    let password = env_value(c, "STREAMSCORE__KAFKA__PROPERTIES__SASL_PASSWORD")
        .expect("the SASL password comes from the Secret");
    assert_eq!(password["secretKeyRef"]["key"], "sasl-password");

    let dir = tempfile::tempdir().unwrap();
    let (_, path) = rendered_config(&r, &dir);
    let settings = Settings::load(Some(&path)).expect("the processor's own validation");
    assert_eq!(settings.model.device, streamscore::DevicePreference::Cuda);
    // The autoscaler removes pods for good: a stopped pod leaves the group.
    assert_eq!(
        settings.shutdown.leave_group,
        streamscore::LeaveGroup::Always
    );
    assert_eq!(settings.batching.max_batch_size, 2048);
    assert_eq!(
        settings
            .kafka
            .properties
            .get("ssl.ca.location")
            .map(String::as_str),
        Some("/etc/kafka-ca/ca.crt"),
        "dotted librdkafka keys survive the TOML: {:?}",
        settings.kafka.properties
    );
    assert_eq!(
        settings
            .kafka
            .properties
            .get("sasl.mechanism")
            .map(String::as_str),
        Some("SCRAM-SHA-512")
    );
    assert_eq!(
        settings
            .kafka
            .consumer
            .get("fetch.wait.max.ms")
            .map(String::as_str),
        Some("50")
    );
    assert_eq!(settings.input.topics.len(), 2);
    assert_eq!(settings.model.threshold, Some(0.7));

    // The Secret holds what the pod references.
    let secret = one(&r, "Secret");
    for key in ["keyring.json", "sasl-username", "sasl-password"] {
        assert!(secret["data"][key].is_string(), "Secret lacks {key}");
    }

    // Custom resources point at what exists.
    let service = find(&r, "Service")
        .into_iter()
        .find(|s| s["spec"]["clusterIP"].is_null())
        .expect("the metrics Service");
    let monitor = one(&r, "ServiceMonitor");
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        service["spec"]["ports"][0]["name"]
    );
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&service["metadata"]["labels"][k], v, "selector label {k}");
    }
    let scaled = one(&r, "ScaledObject");
    assert_eq!(scaled["spec"]["scaleTargetRef"]["kind"], "StatefulSet");
    assert_eq!(
        scaled["spec"]["scaleTargetRef"]["name"],
        sts["metadata"]["name"]
    );
    let triggers = scaled["spec"]["triggers"].as_array().unwrap();
    assert_eq!(triggers.len(), 2, "one lag trigger per input topic");
    assert_eq!(triggers[0]["metadata"]["consumerGroup"], "fraud-scoring");
    let rule = one(&r, "PrometheusRule");
    let alerts = field_strings(&rule["spec"]["groups"][0]["rules"], "alert");
    for wanted in [
        "StreamscoreConsumerLagHigh",
        "StreamscoreDeadLetterRatioHigh",
        "StreamscoreP99LatencyHigh",
        "StreamscoreTransactionsAborting",
    ] {
        assert!(alerts.contains(&wanted), "{wanted} missing from {alerts:?}");
    }
    assert_only_exported_metrics(&rule.to_string(), "the PrometheusRule");
    let dashboard = find(&r, "ConfigMap")
        .into_iter()
        .find(|m| m["data"]["streamscore.json"].is_string())
        .expect("the dashboard ConfigMap");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
}

#[test]
fn the_schema_rejects_bad_values_naming_the_key() {
    for (set, key) in [
        (
            serde_json::json!({"batching": {"maxBatchSize": 0}}),
            "maxBatchSize",
        ),
        (
            serde_json::json!({"batching": {"maxBatchSize": 70000}}),
            "maxBatchSize",
        ),
        (serde_json::json!({"batching": {"mode": "dynamic"}}), "mode"),
        (
            serde_json::json!({"shutdown": {"leaveGroup": "sometimes"}}),
            "leaveGroup",
        ),
        (
            serde_json::json!({"shutdown": {"leaveGroup": "never"}, "kafka": {"staticMembership": false}}),
            "leaveGroup",
        ),
        (serde_json::json!({"model": {"device": "tpu"}}), "device"),
        (
            serde_json::json!({"transactions": {"commitIntervalMs": "fast"}}),
            "commitIntervalMs",
        ),
        (
            serde_json::json!({"input": {"topics": ["no spaces"]}}),
            "topics",
        ),
        (
            serde_json::json!({"batching": {"maxBatchSise": 64}}),
            "maxBatchSise",
        ),
    ] {
        let r = render(None, set.clone());
        let why = r["rejected"]
            .as_str()
            .unwrap_or_else(|| panic!("{set} was accepted"));
        assert!(why.contains(key), "{set}: {why}");
    }
}

/// A control for the validation above: a manifest Kubernetes would refuse
/// must come back as an error, or "ok" would prove nothing.
#[test]
fn the_validator_refuses_a_manifest_kubernetes_would_refuse() {
    let r = render(
        None,
        serde_json::json!({"podSecurityContext": {"runAsUser": "nobody"}}),
    );
    let sts = manifests(&r)
        .iter()
        .find(|m| m["kind"] == "StatefulSet")
        .unwrap();
    for version in KUBE_VERSIONS {
        let verdict = sts["validation"][version].as_str().unwrap();
        assert!(
            verdict.starts_with("error:") && verdict.contains("runAsUser"),
            "{version}: {verdict}"
        );
    }
}

/// Every `streamscore_…` series a dashboard panel or alert queries is one the processor exports.
fn assert_only_exported_metrics(text: &str, what: &str) {
    use streamscore::keyring_watch::{KEYRING_KEYS, KEYRING_RELOAD_FAILURES, KEYRING_RELOADS};
    use streamscore::telemetry::metrics::*;
    let exported = [
        END_TO_END_LATENCY,
        STAGE_DURATION,
        BATCH_SIZE,
        CONSUMED,
        SCORED,
        DEAD_LETTERED,
        TRANSACTIONS,
        REREAD,
        CONSUMER_LAG,
        CONSUMER_LAG_SECONDS,
        ASSIGNED_PARTITIONS,
        REBALANCES,
        INFERENCE_ERRORS,
        BUILD_INFO,
        MODEL_INFO,
        BATCH_TARGET_SIZE,
        LAST_COMMIT_TIMESTAMP,
        CONSECUTIVE_ABORTS,
        PRODUCERS_REPLACED,
        DEAD_LETTER_VALUES_OMITTED,
        MODEL_SWAPS,
        MODEL_SWAP_FAILURES,
        SHADOW_DECISIONS,
        SHADOW_SCORE_DIFFERENCE,
        KEYRING_KEYS,
        KEYRING_RELOADS,
        KEYRING_RELOAD_FAILURES,
    ];
    let mut seen = 0;
    for (i, _) in text.match_indices("streamscore_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        assert!(
            exported.contains(&base),
            "{what} queries {name}, which the processor does not export"
        );
        seen += 1;
    }
    assert!(seen > 0, "{what} queries no streamscore metric at all");
}

#[test]
fn the_dashboard_shows_what_an_operator_needs_from_exported_metrics() {
    let path = support::root()
        .join(CHART)
        .join("dashboards/streamscore.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("valid JSON");
    let titles = field_strings(&dashboard["panels"], "title");
    for wanted in [
        "Throughput",
        "End-to-end latency",
        "Per-stage latency (p99)",
        "Batch size",
        "Dead letters by reason",
        "Consumer lag",
        "Consumer lag (seconds)",
        "Partitions and rebalances",
        "Process CPU and memory",
        "Keyring",
        "Transactions",
    ] {
        assert!(titles.contains(&wanted), "no {wanted} panel in {titles:?}");
    }
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        exprs.iter().any(|e| e.contains("histogram_quantile(0.99")
            && e.contains("end_to_end_latency_seconds_bucket")),
        "p99 from the histogram"
    );
    assert!(
        exprs
            .iter()
            .any(|e| e.contains("streamscore_consumer_lag_seconds{")),
        "lag in seconds as the processor measures it"
    );
    assert!(
        !exprs
            .iter()
            .any(|e| e.contains("consumer_lag{") && e.contains("records_consumed_total")),
        "no lag-in-seconds estimate from the consume rate: the processor measures it"
    );
    assert_only_exported_metrics(&exprs.join("\n"), "the dashboard");
}

/// The autoscalers read the lag the processor measures: in seconds from its
/// own gauge, in records summed over the instances of this release.
#[test]
fn the_autoscalers_use_the_measured_lag_of_this_release() {
    let r = render(
        Some(GPU_VALUES),
        serde_json::json!({"autoscaling": {"keda": {"prometheusServerAddress": "http://prometheus:9090"}}}),
    );
    assert_clean(&r);
    let triggers = one(&r, "ScaledObject")["spec"]["triggers"].clone();
    let query = triggers[0]["metadata"]["query"].as_str().unwrap();
    assert!(
        query.contains("streamscore_consumer_lag_seconds{")
            && query.contains("namespace=\"fraud\"")
            && query.contains("service=\"scorer-streamscore\""),
        "{query}"
    );
    assert_only_exported_metrics(query, "the KEDA query");

    let r = render(
        Some(GPU_VALUES),
        serde_json::json!({"autoscaling": {"engine": "hpa"}}),
    );
    assert_clean(&r);
    let hpa = one(&r, "HorizontalPodAutoscaler");
    let metric = &hpa["spec"]["metrics"][0]["external"]["metric"];
    assert_eq!(metric["name"], "streamscore_consumer_lag");
    assert_eq!(
        metric["selector"]["matchLabels"],
        serde_json::json!({"namespace": "fraud", "service": "scorer-streamscore"}),
        "this release's lag only, not every release's in the namespace"
    );
}

/// A scaler that reads the lag from the pods' own metrics sees nothing at 0
/// replicas (nothing exports it), so from 0 it could never scale up: the
/// chart refuses `minReplicas: 0` with it, in one line naming the keys. KEDA's
/// Kafka trigger reads the lag from the brokers and may start from 0.
#[test]
fn autoscaling_from_zero_replicas_needs_a_lag_source_outside_the_pods() {
    for (set, wanted) in [
        (
            serde_json::json!({"autoscaling": {"enabled": true, "minReplicas": 0, "keda": {"prometheusServerAddress": "http://prometheus:9090"}}}),
            &[
                "autoscaling.minReplicas = 0",
                "autoscaling.keda.prometheusServerAddress (http://prometheus:9090)",
            ][..],
        ),
        (
            serde_json::json!({"autoscaling": {"enabled": true, "minReplicas": 0, "engine": "hpa"}}),
            &["autoscaling.minReplicas = 0", "autoscaling.engine = hpa"],
        ),
    ] {
        let why = refusal(set.clone());
        for w in wanted {
            assert!(why.contains(w), "{set}: {why:?} lacks {w:?}");
        }
        assert!(!why.trim_end().contains('\n'), "one line: {why:?}");
    }

    // The controls: the Kafka trigger from 0, and the Prometheus trigger from 1.
    let r = render(
        None,
        serde_json::json!({"autoscaling": {"enabled": true, "minReplicas": 0}}),
    );
    assert_clean(&r);
    let scaled = one(&r, "ScaledObject");
    assert_eq!(scaled["spec"]["minReplicaCount"], 0);
    assert_eq!(scaled["spec"]["triggers"][0]["type"], "kafka");
    let r = render(
        None,
        serde_json::json!({"autoscaling": {"enabled": true, "minReplicas": 1, "keda": {"prometheusServerAddress": "http://prometheus:9090"}}}),
    );
    assert_clean(&r);
    assert_eq!(one(&r, "ScaledObject")["spec"]["minReplicaCount"], 1);
}

/// The age of the oldest uncommitted record does not divide across
/// replicas as a backlog in records does: the seconds trigger compares the
/// age itself with its threshold (metricType Value, HPA's ratio current/target
/// times the replicas), where the records triggers keep KEDA's default
/// (AverageValue: the backlog divided by the replicas).
#[test]
fn the_lag_seconds_trigger_compares_the_age_itself_not_a_share_per_replica() {
    let r = render(
        Some(GPU_VALUES),
        serde_json::json!({"autoscaling": {"keda": {"prometheusServerAddress": "http://prometheus:9090", "lagSecondsPerReplica": 45}}}),
    );
    assert_clean(&r);
    let trigger = &one(&r, "ScaledObject")["spec"]["triggers"][0];
    assert_eq!(trigger["type"], "prometheus");
    assert_eq!(trigger["metricType"], "Value", "{trigger}");
    assert_eq!(trigger["metadata"]["threshold"], "45");

    let r = render(Some(GPU_VALUES), serde_json::json!({}));
    assert_clean(&r);
    for t in one(&r, "ScaledObject")["spec"]["triggers"]
        .as_array()
        .unwrap()
    {
        assert_eq!(t["type"], "kafka");
        assert!(
            t["metricType"].is_null() || t["metricType"] == "AverageValue",
            "lag in records divides across replicas: {t}"
        );
    }
}

/// Kubernetes label-selector semantics (matchLabels AND every matchExpression).
fn selector_matches(selector: &Value, labels: &Value) -> bool {
    let label = |k: &str| labels[k].as_str();
    let by_labels = selector["matchLabels"]
        .as_object()
        .map(|m| m.iter().all(|(k, v)| label(k) == v.as_str()))
        .unwrap_or(true);
    let by_expressions = selector["matchExpressions"]
        .as_array()
        .map(|exprs| {
            exprs.iter().all(|e| {
                let key = e["key"].as_str().expect("a key");
                let values: Vec<&str> = e["values"]
                    .as_array()
                    .map(|v| v.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                match e["operator"].as_str().expect("an operator") {
                    "In" => label(key).is_some_and(|l| values.contains(&l)),
                    "NotIn" => !label(key).is_some_and(|l| values.contains(&l)),
                    "Exists" => label(key).is_some(),
                    "DoesNotExist" => label(key).is_none(),
                    other => panic!("unknown selector operator {other}"),
                }
            })
        })
        .unwrap_or(true);
    by_labels && by_expressions
}

#[test]
fn the_label_selector_matcher_follows_kubernetes_semantics() {
    let labels = serde_json::json!({"app": "a", "tier": "metrics"});
    for (selector, want) in [
        (serde_json::json!({}), true),
        (serde_json::json!({"matchLabels": {"app": "a"}}), true),
        (serde_json::json!({"matchLabels": {"app": "b"}}), false),
        (
            serde_json::json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["metrics"]}]}),
            true,
        ),
        (
            serde_json::json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["metrics"]}]}),
            false,
        ),
        (
            serde_json::json!({"matchExpressions": [{"key": "other", "operator": "NotIn", "values": ["x"]}]}),
            true,
        ),
        (
            serde_json::json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}),
            false,
        ),
        (
            serde_json::json!({"matchLabels": {"app": "a"}, "matchExpressions": [{"key": "other", "operator": "Exists"}]}),
            false,
        ),
    ] {
        assert_eq!(selector_matches(&selector, &labels), want, "{selector}");
    }
}

/// Two Services with the same labels and port would each be scraped: every
/// pod twice, every dashboard sum doubled.
#[test]
fn the_service_monitor_scrapes_each_pod_once() {
    let r = render(Some(GPU_VALUES), serde_json::json!({}));
    let monitor = one(&r, "ServiceMonitor");
    let namespaces = monitor["spec"]["namespaceSelector"]["matchNames"].clone();
    let selected: Vec<&Value> = find(&r, "Service")
        .into_iter()
        .filter(|s| {
            namespaces
                .as_array()
                .is_none_or(|ns| ns.contains(&s["metadata"]["namespace"]))
        })
        .filter(|s| selector_matches(&monitor["spec"]["selector"], &s["metadata"]["labels"]))
        .collect();
    let names: Vec<&Value> = selected.iter().map(|s| &s["metadata"]["name"]).collect();
    assert_eq!(selected.len(), 1, "the ServiceMonitor selects {names:?}");
    let service = selected[0];
    let pod_labels = &one(&r, "StatefulSet")["spec"]["template"]["metadata"]["labels"];
    assert!(
        selector_matches(
            &serde_json::json!({"matchLabels": service["spec"]["selector"]}),
            pod_labels
        ),
        "the scraped Service selects the pods"
    );
    let endpoint_port = &monitor["spec"]["endpoints"][0]["port"];
    let port = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| &p["name"] == endpoint_port)
        .expect("the scraped Service has the endpoint's port");
    assert_eq!(port["targetPort"], container(&r)["ports"][0]["name"]);
}

/// What rendering refused, or a panic naming the values it accepted.
fn refusal(set: Value) -> String {
    let r = render(None, set.clone());
    r["rejected"]
        .as_str()
        .unwrap_or_else(|| panic!("{set} was accepted"))
        .to_owned()
}

/// Rules across keys that `validate()` applies at start: the chart applies
/// them at render time, so `helm install` refuses what the pod would refuse,
/// in one line naming the keys, the values and the rule. Every entry of
/// `CROSS_FIELD_RULES` has a case here, found by its keys, or an exemption
/// saying why the chart cannot break it.
#[test]
fn rendering_refuses_what_the_processors_cross_field_rules_refuse() {
    use streamscore::CROSS_FIELD_RULES;
    // The keys of a rule the chart has nothing to refuse for, and why.
    let exempt: [(&[&str], &str); 1] = [(
        &["keys.file", "keys.env"],
        "the chart always writes keys.file, /etc/streamscore/keys/ + secrets.keys.keyring \
         (a non-empty file name by the schema), so the key source is never empty",
    )];
    // Each case with the keys of the CROSS_FIELD_RULES entry it breaks, or
    // None for the range bounds naming another key (RANGES) and the
    // chart's own SASL rule.
    const COMMIT: &[&str] = &[
        "transactions.commit_interval_ms",
        "kafka.transaction_timeout_ms",
    ];
    const NOT_READ: &[&str] = &["input.topics", "output.topic", "output.dead_letter_topic"];
    const DIFFER: &[&str] = &["output.dead_letter_topic", "output.topic"];
    const SHADOW: &[&str] = &[
        "model.shadow_card",
        "output.shadow_topic",
        "output.topic",
        "output.dead_letter_topic",
        "input.topics",
    ];
    const LEAVE: &[&str] = &[
        "shutdown.leave_group",
        "kafka.group_instance_id",
        "kafka.consumer.group.protocol",
    ];
    const REGISTRY_MODE: &[&str] = &[
        "output.schema_registry.mode",
        "input.schema_registry.urls",
        "output.format",
    ];
    const REGISTRY_AUTH: &[&str] = &[
        "input.schema_registry.basic_auth_user",
        "input.schema_registry.bearer_token_file",
        "input.schema_registry.bearer_token_env",
    ];
    const REGISTRY_WAIT: &[&str] = &[
        "input.schema_registry.max_wait_ms",
        "kafka.consumer.max.poll.interval.ms",
    ];
    type Keys = Option<&'static [&'static str]>;
    let cases: [(Keys, Value, &[&str]); 16] = [
        (
            Some(REGISTRY_MODE),
            serde_json::json!({"schemaRegistry": {"outputMode": "register"}}),
            &[
                "schemaRegistry.outputMode = register",
                "schemaRegistry.urls is empty",
            ],
        ),
        (
            Some(REGISTRY_MODE),
            serde_json::json!({"schemaRegistry": {"urls": ["http://r:8081"], "outputMode": "lookup"}, "output": {"format": "json"}}),
            &["schemaRegistry.outputMode = lookup", "output.format = json"],
        ),
        (
            Some(REGISTRY_AUTH),
            serde_json::json!({"schemaRegistry": {"urls": ["http://r:8081"], "basicAuthUser": "u", "bearerToken": true}}),
            &["schemaRegistry.bearerToken = true", "basicAuthUser"],
        ),
        (
            Some(REGISTRY_WAIT),
            serde_json::json!({"schemaRegistry": {"maxWaitMs": 120000}, "kafka": {"consumer": {"max.poll.interval.ms": 150000}}}),
            &[
                "schemaRegistry.maxWaitMs = 120000",
                "max.poll.interval.ms (150000) less 60000",
            ],
        ),
        (
            Some(COMMIT),
            serde_json::json!({"transactions": {"commitIntervalMs": 30001}}),
            &[
                "transactions.commitIntervalMs = 30001",
                "half of kafka.transactionTimeoutMs (60000)",
            ],
        ),
        (
            Some(COMMIT),
            serde_json::json!({"kafka": {"transactionTimeoutMs": 1000}, "transactions": {"commitIntervalMs": 501}}),
            &[
                "transactions.commitIntervalMs = 501",
                "kafka.transactionTimeoutMs (1000)",
            ],
        ),
        (
            None,
            serde_json::json!({"batching": {"minBatchSize": 257}}),
            &["batching.minBatchSize = 257", "batching.maxBatchSize (256)"],
        ),
        (
            None,
            serde_json::json!({"kafka": {"maxMessageBytes": 100000}, "input": {"maxRecordBytes": 100001}}),
            &[
                "input.maxRecordBytes = 100001",
                "kafka.maxMessageBytes (100000)",
            ],
        ),
        (
            Some(NOT_READ),
            serde_json::json!({"input": {"topics": ["transactions", "scores"]}}),
            &["input.topics", "output.topic (scores)", "loop"],
        ),
        (
            Some(NOT_READ),
            serde_json::json!({"input": {"topics": ["scores-dlq"]}}),
            &["input.topics", "output.deadLetterTopic (scores-dlq)"],
        ),
        (
            Some(DIFFER),
            serde_json::json!({"output": {"deadLetterTopic": "scores"}}),
            &["output.deadLetterTopic = scores", "other than output.topic"],
        ),
        (
            Some(SHADOW),
            serde_json::json!({"model": {"shadowCard": "models/zoo/logreg_tensor.card.json"}, "output": {"shadowTopic": "scores-dlq"}}),
            &[
                "output.shadowTopic = scores-dlq",
                "other than output.topic and output.deadLetterTopic",
            ],
        ),
        (
            Some(SHADOW),
            serde_json::json!({"model": {"shadowCard": "models/zoo/logreg_tensor.card.json"}, "input": {"topics": ["transactions", "scores-shadow"]}}),
            &["output.shadowTopic = scores-shadow", "would loop"],
        ),
        (
            Some(LEAVE),
            serde_json::json!({"shutdown": {"leaveGroup": "always"}, "kafka": {"consumer": {"group.protocol": "consumer"}}}),
            &[
                "shutdown.leaveGroup = always",
                "group.protocol = consumer",
                "kafka.staticMembership",
            ],
        ),
        (
            None,
            serde_json::json!({"kafka": {"sasl": {"enabled": true}, "properties": {"security.protocol": "SSL"}}}),
            &[
                "kafka.properties.security.protocol = SSL",
                "kafka.sasl.enabled",
            ],
        ),
        (
            Some(LEAVE),
            serde_json::json!({"autoscaling": {"enabled": true}, "kafka": {"properties": {"group_protocol": "CONSUMER"}}}),
            &["shutdown.leaveGroup = always", "group.protocol = consumer"],
        ),
    ];
    for rule in CROSS_FIELD_RULES {
        let covered = cases.iter().any(|(keys, ..)| *keys == Some(rule.keys));
        let exempted = exempt.iter().find(|(keys, _)| *keys == rule.keys);
        assert!(
            covered || exempted.is_some(),
            "CROSS_FIELD_RULES {:?} ({}) has no chart refusal case and no exemption",
            rule.keys,
            rule.rule
        );
        if let (true, Some((_, why))) = (covered, exempted) {
            panic!(
                "CROSS_FIELD_RULES {:?} has a chart refusal case and an exemption: {why}",
                rule.keys
            );
        }
    }
    for keys in cases
        .iter()
        .filter_map(|(keys, ..)| *keys)
        .chain(exempt.iter().map(|(keys, _)| *keys))
    {
        assert!(
            CROSS_FIELD_RULES.iter().any(|rule| rule.keys == keys),
            "{keys:?} names no CROSS_FIELD_RULES entry"
        );
    }
    for (_, set, wanted) in cases {
        let why = refusal(set.clone());
        for w in wanted {
            assert!(why.contains(w), "{set}: {why:?} lacks {w:?}");
        }
        let line = why.trim_end();
        assert!(!line.contains('\n'), "one line: {why:?}");
    }
}

/// The librdkafka properties the processor pins for exactly-once
/// (`PINNED_PROPERTIES`), differentially: for each name a value the
/// processor refuses and, where there is one, a value it accepts, across the
/// three tables and both spellings. The chart refuses exactly what
/// `Settings::load` refuses (given the config the chart would have
/// rendered), with the processor's own line; what it accepts it writes as
/// the processor read it.
#[test]
fn rendering_refuses_exactly_the_pinned_properties_the_processor_refuses() {
    use serde_json::json;
    use streamscore::PINNED_PROPERTIES;
    let cases = [
        ("properties", "isolation_level", json!("read_uncommitted")),
        ("consumer", "isolation.level", json!(" Read_Committed ")),
        ("consumer", "enable.auto.commit", json!(true)),
        ("properties", "enable_auto_commit", json!("F")),
        ("producer", "enable_auto_offset_store", json!("1")),
        ("consumer", "enable.auto.offset.store", json!(false)),
        ("producer", "enable.idempotence", json!(false)),
        ("properties", "enable_idempotence", json!("T")),
        ("producer", "transactional_id", json!("scorer-0")),
        ("properties", "transaction.timeout.ms", json!(60000)),
        ("consumer", "message_max_bytes", json!("1048576")),
        ("consumer", "auto.offset.reset", json!("Latest")),
        ("properties", "auto_offset_reset", json!("earliest")),
        ("producer", "statistics.interval.ms", json!(0)),
        ("consumer", "statistics_interval_ms", json!(" +00")),
        ("properties", "statistics.interval.ms", json!(1000)),
        // Credentials: the processor refuses them in its config file.
        ("properties", "sasl.password", json!("hunter2")),
        ("consumer", "ssl_key_password", json!("hunter2")),
        ("producer", "sasl.oauthbearer.client.secret", json!("s3")),
        ("properties", "sasl_jaas_config", json!("x required;")),
        ("properties", "ssl.keystore.location", json!("/etc/ks.p12")),
    ];
    let dir = tempfile::tempdir().unwrap();
    let (defaults, _) = rendered_config(&render(None, json!({})), &dir);
    let path = dir.path().join("case.toml");
    let mut refused = Vec::new();
    let mut accepted = 0;
    for (table, key, value) in &cases {
        // The processor's side: the defaults with the line the ConfigMap
        // writes for the value (its string form, quoted).
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let header = format!("[kafka.{table}]\n");
        let line = format!("{} = {}\n", json!(key), json!(text));
        let toml = defaults.replacen(&header, &format!("{header}{line}"), 1);
        assert_ne!(toml, defaults, "no {header:?} in the rendered config");
        std::fs::write(&path, &toml).unwrap();
        let processor = Settings::load(Some(&path));
        let set = json!({"kafka": {*table: {*key: value}}});
        let r = render(None, set.clone());
        match (processor, r["rejected"].as_str()) {
            (Err(e), Some(why)) => {
                let e = e.to_string();
                assert!(why.contains(&e), "{set}: the chart says {why:?}, not {e:?}");
                assert!(!why.trim_end().contains('\n'), "one line: {why:?}");
                refused.push(key.replace('_', "."));
            }
            (Ok(_), None) => {
                let case_dir = tempfile::tempdir().unwrap();
                let (rendered, _) = rendered_config(&r, &case_dir);
                assert_eq!(
                    rendered, toml,
                    "{set}: not written as the processor read it"
                );
                accepted += 1;
            }
            (Err(e), None) => panic!("{set}: the chart renders what the processor refuses: {e}"),
            (Ok(_), Some(why)) => {
                panic!("{set}: the chart refuses what the processor accepts: {why}")
            }
        }
    }
    for name in PINNED_PROPERTIES {
        assert!(
            refused.iter().any(|r| r == name),
            "no case that the processor refuses for {name}"
        );
    }
    for name in [
        "sasl.password",
        "ssl.key.password",
        "sasl.oauthbearer.client.secret",
        "sasl.jaas.config",
    ] {
        assert!(
            refused.iter().any(|r| r == name),
            "{name} not refused: {refused:?}"
        );
    }
    assert!(accepted >= 5, "only {accepted} accepted cases");
}

/// The controls: on the allowed side of each boundary the chart renders and
/// the processor accepts what it rendered.
#[test]
fn rendering_accepts_cross_field_values_at_their_boundary() {
    for set in [
        serde_json::json!({"transactions": {"commitIntervalMs": 30000}}),
        serde_json::json!({"batching": {"minBatchSize": 256}}),
        serde_json::json!({"kafka": {"maxMessageBytes": 100000}, "input": {"maxRecordBytes": 100000}}),
        serde_json::json!({"shutdown": {"leaveGroup": "never"}, "kafka": {"consumer": {"group.protocol": "consumer"}}}),
        serde_json::json!({"shutdown": {"leaveGroup": "always"}, "kafka": {"consumer": {"group.protocol": "classic"}}}),
    ] {
        let r = render(None, set.clone());
        assert!(r["rejected"].is_null(), "{set}: {}", r["rejected"]);
        let dir = tempfile::tempdir().unwrap();
        let (_, path) = rendered_config(&r, &dir);
        if let Err(e) = Settings::load(Some(&path)) {
            panic!("{set}: the processor refuses what the chart rendered: {e}");
        }
    }
}

/// A count is an integer: 12.5 is refused, not rounded to 13.
#[test]
fn the_schema_refuses_fractions_for_integer_values() {
    for set in [
        serde_json::json!({"batching": {"maxBatchSize": 12.5}}),
        serde_json::json!({"batching": {"minBatchSize": 1.5}}),
        serde_json::json!({"transactions": {"commitIntervalMs": 100.5}}),
        serde_json::json!({"shutdown": {"gracePeriodMs": 30000.5}}),
        serde_json::json!({"model": {"sessions": 1.5}}),
    ] {
        let why = refusal(set.clone());
        assert!(why.contains("want integer"), "{set}: {why}");
    }
}

/// An umbrella chart passes `global:` to every subchart; refusing it makes
/// this chart unusable as a dependency.
#[test]
fn an_umbrella_charts_global_values_are_accepted() {
    let r = render(
        None,
        serde_json::json!({"global": {"imageRegistry": "registry.example", "storageClass": "fast"}}),
    );
    assert_clean(&r);
}

#[test]
fn priority_class_and_extra_env_from_reach_the_pod() {
    let env_from = serde_json::json!([
        {"secretRef": {"name": "scorer-extra"}},
        {"configMapRef": {"name": "scorer-tuning", "optional": true}}
    ]);
    let r = render(
        None,
        serde_json::json!({"priorityClassName": "scoring-critical", "extraEnvFrom": env_from}),
    );
    assert_clean(&r);
    let pod = &one(&r, "StatefulSet")["spec"]["template"]["spec"];
    assert_eq!(pod["priorityClassName"], "scoring-critical");
    assert_eq!(container(&r)["envFrom"], env_from);

    let plain = render(None, serde_json::json!({}));
    let pod = &one(&plain, "StatefulSet")["spec"]["template"]["spec"];
    assert!(pod["priorityClassName"].is_null());
    assert!(container(&plain)["envFrom"].is_null());
}

fn port_numbers(rule: &Value) -> Vec<(String, Value)> {
    rule["ports"]
        .as_array()
        .map(|ports| {
            ports
                .iter()
                .map(|p| {
                    (
                        p["protocol"].as_str().unwrap_or("TCP").to_owned(),
                        p["port"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_network_policy_admits_scrapes_from_the_given_peers_and_restricts_egress_on_request() {
    let peers = serde_json::json!([
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]);
    let r = render(
        Some(GPU_VALUES),
        serde_json::json!({"networkPolicy": {"enabled": true, "metricsFrom": peers}}),
    );
    assert_clean(&r);
    let policy = one(&r, "NetworkPolicy");
    let pod_labels = &one(&r, "StatefulSet")["spec"]["template"]["metadata"]["labels"];
    assert!(selector_matches(&policy["spec"]["podSelector"], pod_labels));
    assert_eq!(
        policy["spec"]["policyTypes"],
        serde_json::json!(["Ingress"])
    );
    let ingress = policy["spec"]["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 1, "{ingress:?}");
    assert_eq!(ingress[0]["from"], peers);
    assert_eq!(
        port_numbers(&ingress[0]),
        vec![("TCP".to_owned(), Value::from(9464))]
    );
    assert!(policy["spec"]["egress"].is_null());

    let kafka = serde_json::json!([{"ipBlock": {"cidr": "10.20.0.0/16"}}]);
    let r = render(
        Some(GPU_VALUES),
        serde_json::json!({"networkPolicy": {"enabled": true, "egress": {"enabled": true, "kafkaTo": kafka}}}),
    );
    assert_clean(&r);
    let policy = one(&r, "NetworkPolicy");
    assert_eq!(
        policy["spec"]["policyTypes"],
        serde_json::json!(["Ingress", "Egress"])
    );
    let egress = policy["spec"]["egress"].as_array().unwrap();
    let dns = egress
        .iter()
        .find(|rule| port_numbers(rule).contains(&("UDP".to_owned(), Value::from(53))))
        .expect("DNS allowed");
    assert!(port_numbers(dns).contains(&("TCP".to_owned(), Value::from(53))));
    let brokers = egress
        .iter()
        .find(|rule| rule["to"] == kafka)
        .expect("the brokers allowed");
    assert_eq!(
        port_numbers(brokers),
        vec![("TCP".to_owned(), Value::from(9093))],
        "the ports of kafka.bootstrapServers"
    );
}

/// KEDA's Kafka scaler reads the group's lag from the brokers itself: with
/// SASL/TLS on, it needs the same credentials as the pods, or it sees no lag.
#[test]
fn keda_authenticates_to_a_sasl_tls_kafka_with_the_pods_credentials() {
    let r = render(
        Some(GPU_VALUES),
        serde_json::json!({"autoscaling": {"keda": {"tls": {"secretName": "kafka-ca-pem", "caKey": "ca.crt"}}}}),
    );
    assert_clean(&r);
    let auth = one(&r, "TriggerAuthentication");
    let refs = auth["spec"]["secretTargetRef"].as_array().unwrap();
    let param = |name: &str| {
        refs.iter()
            .find(|p| p["parameter"] == name)
            .unwrap_or_else(|| panic!("no {name} parameter in {refs:?}"))
    };
    let secret = one(&r, "Secret");
    for p in ["username", "password"] {
        assert_eq!(param(p)["name"], secret["metadata"]["name"]);
        let key = param(p)["key"].as_str().unwrap();
        assert!(secret["data"][key].is_string(), "the Secret lacks {key}");
    }
    assert_eq!(param("ca")["name"], "kafka-ca-pem");
    assert_eq!(param("ca")["key"], "ca.crt");
    let triggers = one(&r, "ScaledObject")["spec"]["triggers"]
        .as_array()
        .unwrap()
        .clone();
    for t in &triggers {
        assert_eq!(t["authenticationRef"]["name"], auth["metadata"]["name"]);
        assert_eq!(t["metadata"]["sasl"], "scram_sha512");
        assert_eq!(t["metadata"]["tls"], "enable");
    }

    // TLS without SASL: tls on, no credentials.
    let r = render(
        None,
        serde_json::json!({"autoscaling": {"enabled": true}, "kafka": {"properties": {"security.protocol": "ssl"}}}),
    );
    assert_clean(&r);
    let trigger = &one(&r, "ScaledObject")["spec"]["triggers"][0];
    assert_eq!(trigger["metadata"]["tls"], "enable");
    assert!(trigger["metadata"]["sasl"].is_null());
    assert!(find(&r, "TriggerAuthentication").is_empty());

    // A mechanism KEDA needs more than a password for: refused, naming the way out.
    let why = refusal(serde_json::json!({
        "autoscaling": {"enabled": true},
        "kafka": {"sasl": {"enabled": true, "mechanism": "OAUTHBEARER"}},
        "secrets": {"create": true, "keyring": "{}", "saslUsername": "u", "saslPassword": "p"}
    }));
    assert!(
        why.contains("autoscaling.keda.authenticationRef") && why.contains("OAUTHBEARER"),
        "{why}"
    );

    // A plaintext Kafka: nothing to authenticate.
    let r = render(None, serde_json::json!({"autoscaling": {"enabled": true}}));
    assert!(find(&r, "TriggerAuthentication").is_empty());
    let trigger = &one(&r, "ScaledObject")["spec"]["triggers"][0];
    assert!(trigger["authenticationRef"].is_null());
    assert!(trigger["metadata"]["tls"].is_null());
}

/// A model of the team's own from a volume (issue 15): the volume is mounted
/// read-only where the card names it, and the rendered config points there.
#[test]
fn a_model_volume_is_mounted_read_only_where_the_card_is() {
    let volume = serde_json::json!({"persistentVolumeClaim": {"claimName": "fraud-models"}});
    let r = render(
        None,
        serde_json::json!({"model": {"card": "/models/fraud-2.1.0.card.json", "volume": volume}}),
    );
    assert_clean(&r);
    let pod = &one(&r, "StatefulSet")["spec"]["template"]["spec"];
    let volumes = pod["volumes"].as_array().unwrap();
    let model = volumes
        .iter()
        .find(|v| v["name"] == "model")
        .expect("a model volume");
    assert_eq!(
        model["persistentVolumeClaim"],
        volume["persistentVolumeClaim"]
    );
    let mounts = container(&r)["volumeMounts"].as_array().unwrap();
    let mount = mounts
        .iter()
        .find(|m| m["name"] == "model")
        .expect("a model mount");
    assert_eq!(
        (mount["mountPath"].as_str(), mount["readOnly"].as_bool()),
        (Some("/models"), Some(true))
    );
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = rendered_config(&r, &dir);
    assert!(
        config.contains("card = \"/models/fraud-2.1.0.card.json\""),
        "{config}"
    );

    let plain = render(None, serde_json::json!({}));
    let pod = &one(&plain, "StatefulSet")["spec"]["template"]["spec"];
    assert!(
        !pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "model")
    );
}

/// The schema registry's values reach the processor: its URL, the password
/// and the CA and client certificate as mounted files (never in the
/// ConfigMap), and the output's registration; the rendered config loads.
/// Values the processor would refuse are refused at render time.
#[test]
fn schema_registry_values_reach_the_processor_with_secrets_as_files() {
    let set = serde_json::json!({
        "schemaRegistry": {
            "urls": ["https://registry.data:8081"],
            "basicAuthUser": "streamscore",
            "tlsSecret": "registry-client-tls",
            "clientCertificate": true,
            "maxWaitMs": 60000,
            "outputMode": "lookup",
        },
        "secrets": {"create": true, "keyring": "{}", "schemaRegistryPassword": "s3cret-pw"},
    });
    let r = render(None, set);
    assert_clean(&r);
    let dir = tempfile::tempdir().unwrap();
    let (config, path) = rendered_config(&r, &dir);
    assert!(!config.contains("s3cret-pw"), "{config}");
    let s = streamscore::Settings::load_with_env(Some(&path), false)
        .unwrap_or_else(|e| panic!("the processor refuses the rendered config: {e}\n{config}"));
    let sr = &s.input.schema_registry;
    assert_eq!(sr.urls, ["https://registry.data:8081"]);
    assert_eq!(sr.basic_auth_user.as_deref(), Some("streamscore"));
    assert_eq!(
        sr.basic_auth_password_file.as_deref(),
        Some(std::path::Path::new(
            "/etc/streamscore/keys/schema-registry-password"
        ))
    );
    assert_eq!(
        sr.ca_file.as_deref(),
        Some(std::path::Path::new("/etc/streamscore/registry-tls/ca.crt"))
    );
    assert!(sr.certificate_file.is_some() && sr.key_file.is_some());
    assert_eq!(sr.max_wait, std::time::Duration::from_secs(60));
    assert_eq!(
        s.output.schema_registry.mode,
        streamscore::RegistryMode::Lookup
    );
    assert!(
        s.input.avro_schemas.is_empty(),
        "with a registry, the image's default id mapping does not shadow its ids"
    );

    let pod = &one(&r, "StatefulSet")["spec"]["template"]["spec"];
    let volumes = pod["volumes"].as_array().unwrap();
    let keys = volumes.iter().find(|v| v["name"] == "keys").unwrap();
    assert!(
        field_strings(&keys["secret"]["items"], "key").contains(&"schema-registry-password"),
        "{keys}"
    );
    let tls = volumes
        .iter()
        .find(|v| v["name"] == "registry-tls")
        .expect("the registry's TLS Secret is a volume");
    assert_eq!(tls["secret"]["secretName"], "registry-client-tls");
    let mounts = container(&r)["volumeMounts"].as_array().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m["name"] == "registry-tls"
                && m["mountPath"] == "/etc/streamscore/registry-tls")
    );
    let secret = one(&r, "Secret");
    assert!(
        secret["data"]["schema-registry-password"].is_string(),
        "{secret}"
    );

    for (set, says) in [
        (
            serde_json::json!({"schemaRegistry": {"outputMode": "register"}}),
            "config: schemaRegistry.outputMode = register is not allowed: auto or off when schemaRegistry.urls is empty",
        ),
        (
            serde_json::json!({"schemaRegistry": {"urls": ["http://r:8081"], "outputMode": "lookup"}, "output": {"format": "json"}}),
            "config: schemaRegistry.outputMode = lookup is not allowed: auto or off when output.format = json",
        ),
        (
            serde_json::json!({"schemaRegistry": {"urls": ["http://r:8081"], "basicAuthUser": "u", "bearerToken": true}}),
            "config: schemaRegistry.bearerToken = true is not allowed",
        ),
        (
            serde_json::json!({"schemaRegistry": {"urls": ["http://r:8081"], "clientCertificate": true}}),
            "config: schemaRegistry.clientCertificate = true is not allowed",
        ),
        (
            serde_json::json!({"schemaRegistry": {"urls": ["http://user:pw@r:8081"]}}),
            "/schemaRegistry/urls/0",
        ),
    ] {
        let refused = refusal(set.clone());
        assert!(refused.contains(says), "{set}: {refused}");
    }
}

/// The chart's Strimzi KafkaUser grants exactly what `streamscore acls`
/// prints for the config the chart renders, with the transactional ids by
/// the prefix every pod's id starts with.
#[test]
fn the_strimzi_kafka_user_grants_the_set_streamscore_acls_prints() {
    let r = render(
        None,
        serde_json::json!({
            "strimzi": {"kafkaUser": {"enabled": true, "cluster": "prod-kafka"}},
            "input": {"topics": ["card-transactions", "wallet-transactions"]},
            "kafka": {"transactionalIdPrefix": "eu1-", "sasl": {"enabled": true}},
        }),
    );
    assert_clean(&r);
    let user = one(&r, "KafkaUser");
    assert_eq!(
        user["metadata"]["labels"]["strimzi.io/cluster"],
        "prod-kafka"
    );
    let dir = tempfile::tempdir().unwrap();
    let (_, path) = rendered_config(&r, &dir);
    let settings = streamscore::Settings::load_with_env(Some(&path), false).unwrap();
    let pod = one(&r, "StatefulSet")["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let prefix = format!("eu1-{pod}-");
    let mut printed: Vec<(String, String, String, String)> =
        streamscore::acls::minimal(&settings, Some(&prefix))
            .iter()
            .map(|a| {
                (
                    a.resource.as_str().to_owned(),
                    a.name.clone(),
                    if a.prefixed { "prefix" } else { "literal" }.to_owned(),
                    a.operation.to_owned(),
                )
            })
            .collect();
    let mut rendered: Vec<(String, String, String, String)> = user["spec"]["authorization"]["acls"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|acl| {
            let r = &acl["resource"];
            acl["operations"].as_array().unwrap().iter().map(move |op| {
                (
                    r["type"].as_str().unwrap().to_owned(),
                    r["name"].as_str().unwrap().to_owned(),
                    r["patternType"].as_str().unwrap().to_owned(),
                    op.as_str().unwrap().to_owned(),
                )
            })
        })
        .collect();
    printed.sort();
    rendered.sort();
    assert_eq!(rendered, printed);
    assert!(
        rendered
            .iter()
            .any(|(_, name, pattern, _)| name == &prefix && pattern == "prefix"),
        "{rendered:?}"
    );
}

/// A Strimzi KafkaUser with SCRAM: the pods (and KEDA) log in as that user
/// with the password Strimzi writes into the user's own Secret (key
/// `password`), not a copy in the release's Secret; kafka.sasl.passwordSecret
/// and kafka.sasl.username override it; the user without SASL is refused.
#[test]
fn a_strimzi_scram_user_logs_in_with_the_password_strimzi_writes() {
    let set = serde_json::json!({
        "strimzi": {"kafkaUser": {"enabled": true, "cluster": "prod-kafka", "name": "fraud-scorer"}},
        "kafka": {"sasl": {"enabled": true}},
        "secrets": {"create": true, "keyring": "{}"},
        "autoscaling": {"enabled": true, "engine": "keda"},
    });
    let r = render(None, set.clone());
    assert_clean(&r);
    assert_eq!(one(&r, "KafkaUser")["metadata"]["name"], "fraud-scorer");
    let c = container(&r);
    assert_eq!(
        env_value(c, "STREAMSCORE__KAFKA__PROPERTIES__SASL_USERNAME"),
        Some(&Value::from("fraud-scorer"))
    );
    let password = env_value(c, "STREAMSCORE__KAFKA__PROPERTIES__SASL_PASSWORD").unwrap();
    assert_eq!(
        password["secretKeyRef"],
        serde_json::json!({"name": "fraud-scorer", "key": "password"})
    );
    let release_secret = one(&r, "Secret");
    assert_eq!(
        release_secret["data"].as_object().unwrap().len(),
        1,
        "the keyring only, no copied credentials: {release_secret}"
    );
    let auth = &one(&r, "TriggerAuthentication")["spec"];
    assert_eq!(
        auth["secretTargetRef"],
        serde_json::json!([{"parameter": "password", "name": "fraud-scorer", "key": "password"}])
    );
    assert_eq!(
        auth["env"],
        serde_json::json!([{"parameter": "username", "name": "STREAMSCORE__KAFKA__PROPERTIES__SASL_USERNAME", "containerName": c["name"]}])
    );

    let mut own = set.clone();
    own["kafka"]["sasl"]["passwordSecret"] =
        serde_json::json!({"name": "vault-kafka", "key": "pw"});
    own["kafka"]["sasl"]["username"] = Value::from("svc-fraud");
    let r = render(None, own);
    assert_clean(&r);
    let c = container(&r);
    assert_eq!(
        env_value(c, "STREAMSCORE__KAFKA__PROPERTIES__SASL_USERNAME"),
        Some(&Value::from("svc-fraud"))
    );
    assert_eq!(
        env_value(c, "STREAMSCORE__KAFKA__PROPERTIES__SASL_PASSWORD").unwrap()["secretKeyRef"],
        serde_json::json!({"name": "vault-kafka", "key": "pw"})
    );

    let mut other_user = set.clone();
    other_user["kafka"]["sasl"]["username"] = Value::from("svc-fraud");
    let refused = refusal(other_user);
    assert!(
        refused.contains(
            "config: kafka.sasl.username = svc-fraud is not allowed with strimzi.kafkaUser"
        ),
        "{refused}"
    );

    let mut without_sasl = set;
    without_sasl["kafka"]["sasl"]["enabled"] = Value::from(false);
    let refused = refusal(without_sasl);
    assert!(
        refused.contains("config: strimzi.kafkaUser.authentication = scram-sha-512 is not allowed without kafka.sasl.enabled"),
        "{refused}"
    );
}

/// kafka.tls: the pods mount the client certificate and the CA (a Strimzi
/// KafkaUser's user.crt/user.key and its cluster CA's Secret here), the
/// processor gets SSL and their paths, KEDA's TriggerAuthentication the same
/// PEMs; the rendered config loads, and a location also set by hand is refused.
#[test]
fn mutual_tls_values_reach_the_processor_and_keda() {
    let set = serde_json::json!({
        "kafka": {"tls": {"secretName": "scorer", "caSecretName": "prod-kafka-cluster-ca-cert",
                          "certKey": "user.crt", "keyKey": "user.key"}},
        "autoscaling": {"enabled": true, "engine": "keda"},
    });
    let r = render(None, set);
    assert_clean(&r);
    let dir = tempfile::tempdir().unwrap();
    let (config, path) = rendered_config(&r, &dir);
    let s = streamscore::Settings::load_with_env(Some(&path), false)
        .unwrap_or_else(|e| panic!("{e}\n{config}"));
    let p = &s.kafka.properties;
    assert_eq!(p.get("security.protocol").map(String::as_str), Some("SSL"));
    assert_eq!(
        p.get("ssl.ca.location").map(String::as_str),
        Some("/etc/streamscore/kafka-tls/ca/ca.crt")
    );
    assert_eq!(
        p.get("ssl.key.location").map(String::as_str),
        Some("/etc/streamscore/kafka-tls/client/user.key")
    );
    let pod = &one(&r, "StatefulSet")["spec"]["template"]["spec"];
    let volumes = pod["volumes"].as_array().unwrap();
    let ca = volumes
        .iter()
        .find(|v| v["name"] == "kafka-tls-ca")
        .unwrap();
    assert_eq!(ca["secret"]["secretName"], "prod-kafka-cluster-ca-cert");
    let auth = one(&r, "TriggerAuthentication");
    let refs = auth["spec"]["secretTargetRef"].as_array().unwrap();
    let params: Vec<(&str, &str, &str)> = refs
        .iter()
        .map(|t| {
            (
                t["parameter"].as_str().unwrap(),
                t["name"].as_str().unwrap(),
                t["key"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        params,
        [
            ("ca", "prod-kafka-cluster-ca-cert", "ca.crt"),
            ("cert", "scorer", "user.crt"),
            ("key", "scorer", "user.key")
        ]
    );
    let scaled = one(&r, "ScaledObject");
    assert!(
        scaled["spec"]["triggers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["metadata"]["tls"] == "enable"),
        "{scaled}"
    );

    let refused = refusal(serde_json::json!({
        "kafka": {"tls": {"secretName": "scorer"}, "properties": {"ssl.key.location": "/k"}},
    }));
    assert!(
        refused.contains(
            "kafka.properties.ssl.key.location = /k is not allowed with kafka.tls.secretName"
        ),
        "{refused}"
    );
}
