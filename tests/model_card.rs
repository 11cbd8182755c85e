//! `streamscore model card` as a data scientist meets it (issue 15): for each
//! shipped model it writes a card that `streamscore check` accepts, reading
//! the same output the hand-written card reads; and a feature mapping that
//! does not fit the graph or the schema is refused naming the feature or
//! field.

use crate::support;

use std::path::Path;
use std::process::{Command, Output};

use streamscore::Keyring;

fn streamscore(args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_streamscore"));
    c.current_dir(support::root())
        .env_remove("RUST_LOG")
        .args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("STREAMSCORE__") {
            c.env_remove(k);
        }
    }
    c.output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The shipped MLP's 24 features, in its matrix's order (every shipped
/// model takes the same matrix).
fn feature_list() -> String {
    let card: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(support::root().join("models/fraud_mlp.card.json")).unwrap(),
    )
    .unwrap();
    let names: Vec<&str> = card["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    names.join(",")
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn the_card_tool_writes_a_card_check_accepts_for_every_shipped_model() {
    let dir = tempfile::tempdir().unwrap();
    let features = feature_list();
    let (_, keyring) = Keyring::generate("k").unwrap();
    for shipped in [
        "models/fraud_gbm.card.json",
        "models/fraud_mlp.card.json",
        "models/zoo/logreg_zipmap.card.json",
        "models/zoo/logreg_tensor.card.json",
        "models/zoo/lightgbm.card.json",
        "models/zoo/xgboost.card.json",
        "models/zoo/gbr_score.card.json",
        "models/zoo/country_pipeline.card.json",
    ] {
        let shipped_path = support::root().join(shipped);
        let hand = json(&shipped_path);
        let model = shipped_path.with_file_name(hand["file"].as_str().unwrap());
        let written = dir
            .path()
            .join(format!("{}.card.json", hand["name"].as_str().unwrap()));
        // A graph with an input per feature names its features itself.
        let per_input = hand.get("inputs").is_some();
        let mut args = vec![
            "model",
            "card",
            "--model",
            model.to_str().unwrap(),
            "--version",
            "7.0.0",
            "--metric",
            "holdout_auc=0.8",
            "--out",
            written.to_str().unwrap(),
        ];
        if !per_input {
            args.extend(["--features", features.as_str()]);
        }
        let out = streamscore(&args);
        assert!(out.status.success(), "{shipped}: {}", text(&out));
        let card = json(&written);
        assert_eq!(card["sha256"], hand["sha256"], "{shipped}");
        assert_eq!(reads(&card), reads(&hand), "{shipped}");
        assert_eq!(card["input"], hand["input"], "{shipped}");
        assert_eq!(card["inputs"], hand["inputs"], "{shipped}");
        assert_eq!(card["features"], hand["features"], "{shipped}");
        assert_eq!(card["version"], "7.0.0");
        assert_eq!(card["evaluation"]["holdout_auc"], 0.8);

        let mut check = Command::new(env!("CARGO_BIN_EXE_streamscore"));
        let out = check
            .current_dir(support::root())
            .env_remove("RUST_LOG")
            .arg("check")
            .env("STREAMSCORE_KEYRING", &keyring)
            .env("STREAMSCORE__MODEL__CARD", &written)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "check refused the card of {shipped}: {}",
            text(&out)
        );
        assert!(text(&out).contains("verified"), "{}", text(&out));
    }
}

/// How a card reads its score: output name, kind (a card without one reads
/// a probability column), positive class.
fn reads(card: &serde_json::Value) -> (String, String, String) {
    let o = &card["output"];
    (
        o["name"].to_string(),
        o["kind"].as_str().unwrap_or("probabilities").to_owned(),
        format!("{}{}", o["positive_class_column"], o["positive_class"]),
    )
}

#[test]
fn a_mapping_that_does_not_fit_the_graph_or_the_schema_is_refused_naming_the_feature_or_field() {
    let dir = tempfile::tempdir().unwrap();
    let out_card = dir.path().join("card.json");
    let run = |features: Option<String>, extra: &[&str]| {
        let mut args = vec![
            "model".to_owned(),
            "card".into(),
            "--model".into(),
            "models/fraud_mlp.onnx".into(),
            "--version".into(),
            "1".into(),
            "--out".into(),
            out_card.to_str().unwrap().into(),
        ];
        if let Some(f) = features {
            args.extend(["--features".into(), f]);
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = streamscore(&refs);
        assert!(!out.status.success(), "accepted {args:?}");
        assert!(!out_card.exists(), "a refused card was written");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let all = feature_list();

    let err = run(None, &[]);
    assert!(err.contains("\"X\"") && err.contains("--features"), "{err}");

    let err = run(Some("amount,merchant_risk".into()), &[]);
    assert!(
        err.contains("\"X\" takes 24 columns and --features names 2"),
        "{err}"
    );

    let string_field = all.replacen("merchant_category", "merchant_category=merchant_country", 1);
    let err = run(Some(string_field), &[]);
    assert!(
        err.contains(
            "feature \"merchant_category\": field \"merchant_country\" is a union of null, string"
        ),
        "{err}"
    );

    let missing = all.replacen("ip_risk", "ip_risk=ip_risk_score", 1);
    let err = run(Some(missing), &[]);
    assert!(
        err.contains("feature \"ip_risk\"") && err.contains("no field \"ip_risk_score\""),
        "{err}"
    );

    let err = run(Some(all.clone()), &["--output", "label"]);
    assert!(err.contains("\"label\" is Tensor<i64>"), "{err}");

    let err = run(Some(all.clone()), &["--output", "proba"]);
    assert!(
        err.contains("--output \"proba\" is not in the graph"),
        "{err}"
    );

    let twice = all.replacen("ip_risk", "device_risk", 1);
    let err = run(Some(twice), &[]);
    assert!(
        err.contains("feature \"device_risk\" is named twice"),
        "{err}"
    );
}

/// A run directory MLflow 3.18 wrote itself (models/mlflow_run.py, the file
/// store): the metrics at their last step (not the files' last lines: MLflow
/// appends step-0 copies when it logs the model) and the run's and model's
/// ids go on the card; the MLmodel lies outside the run folder, under the
/// experiment's models/.
#[test]
fn the_card_tool_reads_metrics_and_ids_from_an_mlflow_run() {
    let dir = tempfile::tempdir().unwrap();
    let written = dir.path().join("card.json");
    let run = "models/zoo/mlflow/225782731850317146/5481e09fbaf542f28a2e7b6e841c34da";
    let out = streamscore(&[
        "model",
        "card",
        "--model",
        "models/zoo/logreg_tensor.onnx",
        "--features",
        &feature_list(),
        "--version",
        "1.0.0",
        "--mlflow-run",
        run,
        "--metric",
        "fraud_rate=0.5",
        "--out",
        written.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let card = json(&written);
    let evaluation = &card["evaluation"];
    assert_eq!(evaluation["holdout_auc"], 0.799_494_393_180_675_9, "{card}");
    assert_eq!(
        evaluation["fraud_rate"], 0.5,
        "the command line wins: {card}"
    );
    let mlflow = &card["training"]["mlflow"];
    assert_eq!(
        mlflow["run_id"], "5481e09fbaf542f28a2e7b6e841c34da",
        "{card}"
    );
    assert_eq!(mlflow["experiment_id"], "225782731850317146", "{card}");
    assert_eq!(
        mlflow["model_id"], "m-e483e5b4fd8d443bb9ebe5840f163827",
        "{card}"
    );
    assert_eq!(mlflow["mlflow_version"], "3.18.0", "{card}");

    let out = streamscore(&[
        "model",
        "card",
        "--model",
        "models/zoo/logreg_tensor.onnx",
        "--features",
        &feature_list(),
        "--version",
        "1.0.0",
        "--mlflow-run",
        "models/zoo/mlflow",
        "--out",
        written.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("has no metrics folder"),
        "{}",
        text(&out)
    );
}

/// A graph with an input per feature is matched by name; a string input
/// must read a string field, and `--features` may only rename its inputs.
#[test]
fn per_feature_inputs_are_matched_by_name_and_a_string_input_needs_a_string_field() {
    let dir = tempfile::tempdir().unwrap();
    let out_card = dir.path().join("card.json");
    let mut names: Vec<String> = feature_list().split(',').map(str::to_owned).collect();
    names.push("merchant_country=card_id".into());
    let renamed = names.join(",");
    names.pop();
    names.push("merchant_country=amount".into());
    let numeric = names.join(",");
    for (features, says) in [
        (renamed.as_str(), None),
        (
            numeric.as_str(),
            Some("feature \"merchant_country\": field \"amount\" is double"),
        ),
        (
            "amount",
            Some("\"amount_avg_30d\" is an input of the graph, and --features does not name it"),
        ),
        (
            &*format!("{},merchant_id", feature_list() + ",merchant_country"),
            Some("--features names \"merchant_id\", which is not an input"),
        ),
    ] {
        let out = streamscore(&[
            "model",
            "card",
            "--model",
            "models/zoo/country_pipeline.onnx",
            "--features",
            features,
            "--version",
            "1",
            "--out",
            out_card.to_str().unwrap(),
        ]);
        match says {
            None => {
                assert!(out.status.success(), "{}", text(&out));
                let card = json(&out_card);
                let last = &card["features"][24];
                assert_eq!(
                    (last["field"].as_str(), last["type"].as_str()),
                    (Some("card_id"), Some("string")),
                    "{card}"
                );
            }
            Some(says) => {
                assert!(!out.status.success());
                assert!(text(&out).contains(says), "{}", text(&out));
            }
        }
    }
}

/// Review findings: a card written in the current folder names its model
/// relative to it (an absolute path broke the card once copied into an
/// image); a refused card leaves the card that was at --out; an MLflow
/// metric whose key has "/" in it (a folder in the file store) is read.
#[test]
fn a_card_in_the_current_folder_names_its_model_relatively_and_a_refusal_keeps_the_old_card() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        support::root().join("models/fraud_mlp.onnx"),
        dir.path().join("m.onnx"),
    )
    .unwrap();
    let metrics = dir.path().join("run/metrics/holdout");
    std::fs::create_dir_all(&metrics).unwrap();
    std::fs::write(metrics.join("auc"), "1 0.5 0\n2 0.75 3\n3 0.6 1\n").unwrap();
    let schema = support::root().join("schemas/card_transaction.v2.avsc");
    let run = |extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_streamscore"));
        c.current_dir(dir.path())
            .env_remove("RUST_LOG")
            .env(
                "ORT_DYLIB_PATH",
                support::root().join(".local/onnxruntime/lib/libonnxruntime.so"),
            )
            .args(["model", "card", "--model", "m.onnx", "--version", "1"])
            .args(["--features", &feature_list(), "--schema"])
            .arg(&schema)
            .args(["--out", "m.card.json"])
            .args(extra);
        c.output().unwrap()
    };
    let out = run(&["--mlflow-run", "run"]);
    assert!(out.status.success(), "{}", text(&out));
    let card = json(&dir.path().join("m.card.json"));
    assert_eq!(card["file"], "m.onnx", "{card}");
    assert_eq!(card["evaluation"]["holdout/auc"], 0.75, "{card}");

    let out = run(&["--threshold", "5"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("threshold 5 is outside 0..=1"),
        "{}",
        text(&out)
    );
    assert_eq!(
        json(&dir.path().join("m.card.json")),
        card,
        "the refused card replaced the old one"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("draft"))
        .collect();
    assert!(left.is_empty(), "drafts left behind: {left:?}");
}
