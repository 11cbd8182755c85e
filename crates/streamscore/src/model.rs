//! The model card: what the model is, what it was trained on, and how to feed
//! it. The processor trusts the model file only if its SHA-256 matches.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum CardError {
    /// The OS error is in the message, not a `source`: with both, a
    /// printed chain says it twice.
    #[error("cannot read model card {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("model card {path} is not valid: {message}")]
    Format { path: String, message: String },
    #[error(
        "model file {path} is missing: the card names it; restore it from git (git checkout -- models/) or retrain with models/train.py"
    )]
    ModelMissing { path: String },
    #[error(
        "model file {path} has SHA-256 {actual}, but its card says {expected}: refusing to serve a model that is not the one described"
    )]
    ShaMismatch {
        path: String,
        expected: String,
        actual: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
pub struct TensorSpec {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OutputSpec {
    pub name: String,
    /// Column of the probability matrix holding the positive class.
    pub positive_class_column: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FeatureSpec {
    pub name: String,
    /// Field of the input record the value comes from.
    pub field: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ModelCard {
    pub name: String,
    pub version: String,
    pub file: String,
    pub sha256: String,
    pub input: TensorSpec,
    pub output: OutputSpec,
    pub features: Vec<FeatureSpec>,
    pub threshold: f64,
}

/// A card whose model file has been found and verified.
#[derive(Debug, Clone)]
pub struct VerifiedModel {
    pub card: ModelCard,
    pub model_path: PathBuf,
}

impl VerifiedModel {
    /// Reads the card, finds the model beside it and checks its SHA-256.
    pub fn load(card_path: &Path) -> Result<Self, CardError> {
        let text = std::fs::read_to_string(card_path).map_err(|error| CardError::Read {
            path: card_path.display().to_string(),
            error,
        })?;
        let format_err = |message: String| CardError::Format {
            path: card_path.display().to_string(),
            message,
        };
        let card: ModelCard = serde_json::from_str(&text).map_err(|e| format_err(e.to_string()))?;
        if card.features.is_empty() {
            return Err(format_err("it lists no features".into()));
        }
        if !(0.0..=1.0).contains(&card.threshold) {
            return Err(format_err(format!(
                "threshold {} is outside 0..=1",
                card.threshold
            )));
        }
        let model_path = card_path
            .parent()
            .unwrap_or(Path::new("."))
            .join(&card.file);
        let bytes = std::fs::read(&model_path).map_err(|_| CardError::ModelMissing {
            path: model_path.display().to_string(),
        })?;
        let actual = hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes));
        if !actual.eq_ignore_ascii_case(&card.sha256) {
            return Err(CardError::ShaMismatch {
                path: model_path.display().to_string(),
                expected: card.sha256.clone(),
                actual,
            });
        }
        Ok(Self { card, model_path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARD: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../models/fraud_mlp.card.json"
    );

    #[test]
    fn shipped_card_verifies() {
        let model = VerifiedModel::load(Path::new(CARD)).unwrap();
        assert_eq!(model.card.name, "fraud_mlp");
        assert_eq!(model.card.features.len(), 24);
    }

    #[test]
    fn tampered_model_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let card = std::fs::read_to_string(CARD).unwrap();
        std::fs::write(dir.path().join("fraud_mlp.card.json"), card).unwrap();
        let mut model = std::fs::read(Path::new(CARD).with_file_name("fraud_mlp.onnx")).unwrap();
        let last = model.len() - 1;
        model[last] ^= 1;
        std::fs::write(dir.path().join("fraud_mlp.onnx"), model).unwrap();
        let err = VerifiedModel::load(&dir.path().join("fraud_mlp.card.json")).unwrap_err();
        assert!(matches!(err, CardError::ShaMismatch { .. }), "{err}");
        std::fs::remove_file(dir.path().join("fraud_mlp.onnx")).unwrap();
        let err = VerifiedModel::load(&dir.path().join("fraud_mlp.card.json")).unwrap_err();
        assert!(matches!(err, CardError::ModelMissing { .. }), "{err}");
    }
}
