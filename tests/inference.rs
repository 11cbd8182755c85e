//! ONNX Runtime through `ort` with the wheel's libonnxruntime: scores equal
//! Python onnxruntime's row by row; on a machine without the CUDA provider
//! `auto` falls back to CPU and `cuda` refuses to start.

use crate::support;

use streamscore::DevicePreference;
use streamscore::FeaturePlan;
use streamscore::Fields;
use streamscore::{Device, ModelSession, Runtime, VerifiedModel, init_runtime};

fn model() -> VerifiedModel {
    VerifiedModel::load(&support::root().join("models/fraud_mlp.card.json")).unwrap()
}

fn runtime() -> Runtime {
    init_runtime(&support::root().join(".local/onnxruntime/lib/libonnxruntime.so"))
        .expect("libonnxruntime from `make setup`")
}

#[test]
fn batch_scores_equal_python_onnxruntime() {
    let text =
        std::fs::read_to_string(support::root().join("models/fixtures/fraud_mlp.expected.json"))
            .unwrap();
    let fixture: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rows = fixture["rows"].as_array().unwrap();
    let model = model();
    assert_eq!(
        fixture["model_sha256"], model.card.sha256,
        "fixture is for another model: rerun models/make_fixtures.py"
    );
    let plan = FeaturePlan::new(&model.card);
    let mut features = Vec::new();
    for row in rows {
        let fields = Fields::Json(row["event"].as_object().unwrap().clone());
        plan.extract(&fields, &mut features).unwrap();
    }
    let mut session = ModelSession::open(&runtime(), &model, DevicePreference::Cpu, 1).unwrap();
    let mut scores = Vec::new();
    session.score(&features, rows.len(), &mut scores).unwrap();
    assert_eq!(scores.len(), rows.len());
    for (row, got) in rows.iter().zip(&scores) {
        let want = row["score"].as_f64().unwrap();
        assert!(
            (f64::from(*got) - want).abs() < 1e-5,
            "{}: {got} vs {want}",
            row["event"]["event_id"]
        );
    }
    // Batch composition must not change a row's score.
    let mut one = Vec::new();
    session
        .score(&features[..plan.width()], 1, &mut one)
        .unwrap();
    assert!((one[0] - scores[0]).abs() < 1e-6);
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
