//! ONNX Runtime through `ort` with the wheel's libonnxruntime: scores equal
//! Python onnxruntime's row by row; on a machine without the CUDA provider
//! `auto` falls back to CPU and `cuda` refuses to start.

use crate::support;

use streamscore::DevicePreference;
use streamscore::Fields;
use streamscore::{Device, ModelSession, Runtime, VerifiedModel, init_runtime};
use streamscore::{FeaturePlan, FeatureRows};

fn model() -> VerifiedModel {
    VerifiedModel::load(&support::root().join("models/fraud_mlp.card.json")).unwrap()
}

fn runtime() -> Runtime {
    init_runtime(&support::root().join(".local/onnxruntime/lib/libonnxruntime.so"))
        .expect("libonnxruntime from `make setup`")
}

/// Every fixture in models/fixtures, one model shape each (tensor
/// probabilities, ZipMap, a single score column; an MLP, a logistic
/// regression, LightGBM, XGBoost, a gradient-boosted regressor).
#[test]
fn batch_scores_equal_python_onnxruntime_for_every_model_shape() {
    let dir = support::root().join("models/fixtures");
    let mut fixtures: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".expected.json"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 6, "fixtures: {fixtures:?}");
    let mut not_staged = Vec::new();
    for path in fixtures {
        let fixture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let card = fixture["card"]
            .as_str()
            .unwrap_or("models/fraud_mlp.card.json");
        if !batch_scores_equal_python_onnxruntime(card, &fixture) {
            not_staged.push(card.to_owned());
        }
    }
    // Only the graph that takes one input per feature (strings among them).
    assert_eq!(not_staged, ["models/zoo/country_pipeline.card.json"]);
}

/// Returns whether the model could be staged in host memory.
fn batch_scores_equal_python_onnxruntime(card: &str, fixture: &serde_json::Value) -> bool {
    let rows = fixture["rows"].as_array().unwrap();
    let model = VerifiedModel::load(&support::root().join(card)).unwrap();
    assert_eq!(
        fixture["model_sha256"], model.card.sha256,
        "{card}: the fixture is for another model: rerun its script"
    );
    let plan = FeaturePlan::new(&model.card);
    let mut features = FeatureRows::default();
    for row in rows {
        let fields = Fields::Json(row["event"].as_object().unwrap().clone());
        plan.extract(&fields, &mut features).unwrap();
    }
    let mut session = ModelSession::open(&runtime(), &model, DevicePreference::Cpu, 1).unwrap();
    let mut scores = Vec::new();
    session
        .score_rows(&features, rows.len(), &mut scores)
        .unwrap();
    assert_eq!(scores.len(), rows.len(), "{card}");
    for (row, got) in rows.iter().zip(&scores) {
        let want = row["score"].as_f64().unwrap();
        assert!(
            (f64::from(*got) - want).abs() < 1e-5,
            "{card} {}: {got} vs {want}",
            row["event"]["event_id"]
        );
    }
    // Batch composition must not change a row's score.
    let first = FeatureRows {
        numbers: features.numbers[..plan.width()].to_vec(),
        texts: features.texts[..plan.text_width()].to_vec(),
    };
    let mut one = Vec::new();
    session.score_rows(&first, 1, &mut one).unwrap();
    assert!((one[0] - scores[0]).abs() < 1e-6, "{card}");
    // Staged in host memory and run through an IoBinding (page-locked on
    // CUDA, the session's own memory here): the same scores, or a clear
    // refusal for a model whose inputs are not one matrix of every feature.
    match session.stage_in_host_memory() {
        Ok(()) => {
            assert!(session.stages_in_host_memory(), "{card}");
            let mut staged = Vec::new();
            for _ in 0..2 {
                staged.clear();
                session
                    .score_rows(&features, rows.len(), &mut staged)
                    .unwrap();
                assert_eq!(staged, scores, "{card}: staged in host memory");
            }
            session.score_rows(&first, 1, &mut staged).unwrap();
            let one_staged = staged[rows.len()];
            assert!(
                (one_staged - scores[0]).abs() < 1e-6,
                "{card}: one row staged"
            );
            // And back to the whole batch: the output is bound again for it.
            staged.clear();
            session
                .score_rows(&features, rows.len(), &mut staged)
                .unwrap();
            assert_eq!(staged, scores, "{card}: staged again after one row");
            let mut none = Vec::new();
            assert!(session.score(&[1.0], 1, &mut none).is_err(), "{card}");
            assert!(none.is_empty(), "{card}");
        }
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.contains("one float input that takes every feature"),
                "{card}: {text}"
            );
            return false;
        }
    }
    true
}

#[test]
fn auto_falls_back_to_cpu_without_the_cuda_provider() {
    let model = model();
    let mut session = ModelSession::open(&runtime(), &model, DevicePreference::Auto, 1).unwrap();
    assert_eq!(session.device(), Device::Cpu);
    let mut scores = Vec::new();
    session
        .score(&vec![0.5; model.card.features.len()], 1, &mut scores)
        .unwrap();
    assert_eq!(scores.len(), 1);
}

/// A pod that asked for a GPU and holds one it cannot use is a silent waste:
/// `cuda` fails the start (and `check`), naming the key and what to install.
#[test]
fn cuda_without_the_cuda_provider_fails_the_start() {
    let err = ModelSession::open(&runtime(), &model(), DevicePreference::Cuda, 1)
        .err()
        .expect("model.device = \"cuda\" on a machine without CUDA must not start");
    let text = err.to_string();
    assert!(text.contains("model.device = \"cuda\""), "{text}");
    assert!(text.contains("\"auto\""), "says how to fall back: {text}");
    assert!(
        text.contains("onnxruntime-gpu"),
        "says what to install: {text}"
    );
}

#[test]
fn wrong_row_width_is_an_error_not_a_panic() {
    let model = model();
    let mut session = ModelSession::open(&runtime(), &model, DevicePreference::Cpu, 1).unwrap();
    let mut scores = Vec::new();
    assert!(session.score(&[1.0, 2.0, 3.0], 1, &mut scores).is_err());
    assert!(scores.is_empty());
}

/// Opens the shipped model under a card changed by `edit` (written beside a
/// copy of the model) and returns why it was refused.
fn refusal(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let dir = tempfile::tempdir().unwrap();
    let models = support::root().join("models");
    let mut card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(models.join("fraud_mlp.card.json")).unwrap())
            .unwrap();
    edit(&mut card);
    std::fs::copy(
        models.join("fraud_mlp.onnx"),
        dir.path().join("fraud_mlp.onnx"),
    )
    .unwrap();
    let path = dir.path().join("card.json");
    std::fs::write(&path, card.to_string()).unwrap();
    let loaded = match VerifiedModel::load(&path) {
        Ok(model) => model,
        Err(e) => return e.to_string(),
    };
    match ModelSession::open(&runtime(), &loaded, DevicePreference::Cpu, 1) {
        Ok(_) => panic!("a card that does not fit its graph was accepted: {card}"),
        Err(e) => e.to_string(),
    }
}

/// A card that does not describe its graph stops the start with one line
/// naming the input or output and what is supported, never a wrong score or
/// an error on every batch (issue 15).
#[test]
fn a_card_that_does_not_fit_its_graph_is_refused_naming_the_input_or_output() {
    let text = refusal(|c| {
        c["output"] =
            serde_json::json!({"name": "probabilities", "kind": "zipmap", "positive_class": 1})
    });
    assert!(
        text.contains("output \"probabilities\"")
            && text.contains("Tensor<f32>")
            && text.contains("supported"),
        "{text}"
    );

    let text =
        refusal(|c| c["output"] = serde_json::json!({"name": "probabilities", "kind": "score"}));
    assert!(
        text.contains("output \"probabilities\"") && text.contains("supported"),
        "{text}"
    );

    let text = refusal(|c| c["output"]["positive_class_column"] = 2.into());
    assert!(
        text.contains("output \"probabilities\" has 2 columns")
            && text.contains("positive_class_column is 2"),
        "{text}"
    );

    let text = refusal(|c| c["output"]["name"] = "proba".into());
    assert!(
        text.contains("output \"proba\" is not in the graph")
            && text.contains("\"probabilities\" Tensor<f32>"),
        "{text}"
    );

    let text = refusal(|c| c["input"]["name"] = "features".into());
    assert!(
        text.contains("input \"features\" is not in the graph") && text.contains("\"X\""),
        "{text}"
    );

    let text = refusal(|c| {
        c["features"].as_array_mut().unwrap().pop();
    });
    assert!(
        text.contains("input \"X\" is Tensor<f32>(dyn, 24)")
            && text.contains("feeds it 23 float32 column(s)")
            && text.contains("supported: float32 or string tensors"),
        "{text}"
    );

    let text = refusal(|c| c["output"]["kind"] = "logits".into());
    assert!(
        text.contains("kind \"logits\" is not one of probabilities, zipmap, score"),
        "{text}"
    );
}

/// A card's `inputs` must cover the graph and the features: string features
/// feed string inputs, numbers float32 ones, each feature one input.
#[test]
fn a_card_whose_inputs_do_not_cover_the_graph_or_the_features_is_refused() {
    let text = refusal(|c| {
        c["inputs"] =
            serde_json::json!([{"name": "X", "dtype": "float32", "features": ["amount"]}]);
        c.as_object_mut().unwrap().remove("input");
    });
    assert!(
        text.contains("feature \"amount_avg_30d\" feeds no input"),
        "{text}"
    );

    let text = refusal(|c| {
        c["features"][0]["type"] = "string".into();
    });
    assert!(
        text.contains("feature \"amount\" is a string, and input \"X\" is one float32 matrix"),
        "{text}"
    );

    let text = refusal(|c| {
        c["inputs"] = serde_json::json!([{"name": "X", "dtype": "int64", "features": ["amount"]}]);
        c.as_object_mut().unwrap().remove("input");
    });
    assert!(
        text.contains("input \"X\" has dtype \"int64\"; supported: float32, string"),
        "{text}"
    );
}
