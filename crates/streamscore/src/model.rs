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

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TensorSpec {
    pub name: String,
}

/// A graph input as the card lists it (`inputs`): its name, element type and
/// the features that are its columns, in order.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct InputListing {
    pub name: String,
    pub dtype: String,
    pub features: Vec<String>,
}

/// What a graph input takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputType {
    Float32,
    /// Strings: categorical features the graph encodes itself.
    Text,
}

impl InputType {
    pub fn as_str(self) -> &'static str {
        match self {
            InputType::Float32 => "float32",
            InputType::Text => "string",
        }
    }
}

/// One graph input, resolved: its columns are features of the card, by index.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    pub name: String,
    pub dtype: InputType,
    pub columns: Vec<usize>,
}

/// The graph output the score is read from, and how.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawOutputSpec")]
pub struct OutputSpec {
    pub name: String,
    pub read: ScoreRead,
}

/// How a row's score sits in the output: the shapes the classifiers that
/// data scientists export (scikit-learn through skl2onnx, LightGBM and
/// XGBoost through onnxmltools, PyTorch) give it.
#[derive(Debug, Clone, PartialEq)]
pub enum ScoreRead {
    /// `kind = "probabilities"`: a float32 tensor [N, classes]; the score is
    /// this column.
    Column(usize),
    /// `kind = "zipmap"`: a sequence of N maps class label → probability
    /// (skl2onnx's and onnxmltools' default ZipMap); the score is the value
    /// at this label.
    Label(ClassLabel),
    /// `kind = "score"`: a float32 tensor [N] or [N, 1] that is the score
    /// itself (a regressor, or a classifier exported without its classes).
    Value,
}

impl ScoreRead {
    /// The card's `kind` for this read.
    pub fn kind(&self) -> &'static str {
        match self {
            ScoreRead::Column(_) => "probabilities",
            ScoreRead::Label(_) => "zipmap",
            ScoreRead::Value => "score",
        }
    }
}

/// A class label as ZipMap keys it: int64 for classes that are integers,
/// string otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ClassLabel {
    Int(i64),
    Text(String),
}

impl std::fmt::Display for ClassLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClassLabel::Int(i) => write!(f, "{i}"),
            ClassLabel::Text(t) => write!(f, "{t:?}"),
        }
    }
}

/// The card's `output` as written; `kind` defaults to `probabilities`, which
/// every card had before there were kinds.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutputSpec {
    name: String,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    positive_class_column: Option<usize>,
    #[serde(default)]
    positive_class: Option<ClassLabel>,
    /// Informational: the element type, as the card tool writes it.
    #[serde(default)]
    #[allow(dead_code)]
    dtype: Option<String>,
}

impl TryFrom<RawOutputSpec> for OutputSpec {
    type Error = String;

    fn try_from(raw: RawOutputSpec) -> Result<Self, String> {
        let kind = raw.kind.as_deref().unwrap_or("probabilities");
        let read = match (kind, raw.positive_class_column, raw.positive_class) {
            ("probabilities", Some(column), None) => ScoreRead::Column(column),
            ("zipmap", None, Some(label)) => ScoreRead::Label(label),
            ("score", None, None) => ScoreRead::Value,
            ("probabilities", _, _) => {
                return Err(format!(
                    "output {:?}: kind \"probabilities\" needs positive_class_column (the column of the positive class) and no positive_class",
                    raw.name
                ));
            }
            ("zipmap", _, _) => {
                return Err(format!(
                    "output {:?}: kind \"zipmap\" needs positive_class (the positive class's label, as the map keys it) and no positive_class_column",
                    raw.name
                ));
            }
            ("score", _, _) => {
                return Err(format!(
                    "output {:?}: kind \"score\" is the score itself and takes neither positive_class nor positive_class_column",
                    raw.name
                ));
            }
            (other, _, _) => {
                return Err(format!(
                    "output {:?}: kind {other:?} is not one of probabilities, zipmap, score",
                    raw.name
                ));
            }
        };
        Ok(Self {
            name: raw.name,
            read,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FeatureSpec {
    pub name: String,
    /// Field of the input record the value comes from.
    pub field: String,
    /// The field's Avro type as the card states it; `string` makes it a text
    /// feature (a null one is fed as ""), anything else a number.
    #[serde(default, rename = "type")]
    pub avro_type: Option<String>,
}

impl FeatureSpec {
    pub fn is_text(&self) -> bool {
        self.avro_type.as_deref() == Some("string")
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ModelCard {
    pub name: String,
    pub version: String,
    pub file: String,
    pub sha256: String,
    /// One float32 matrix of every feature, in order (`input`), or one
    /// entry per graph input (`inputs`).
    #[serde(default)]
    pub input: Option<TensorSpec>,
    #[serde(default)]
    pub inputs: Option<Vec<InputListing>>,
    pub output: OutputSpec,
    pub features: Vec<FeatureSpec>,
    pub threshold: f64,
}

impl ModelCard {
    /// The graph inputs with their columns; `Err` says what does not fit.
    pub fn model_inputs(&self) -> Result<Vec<InputSpec>, String> {
        match (&self.input, &self.inputs) {
            (Some(matrix), None) => {
                if let Some(text) = self.features.iter().find(|f| f.is_text()) {
                    return Err(format!(
                        "feature {:?} is a string, and input {:?} is one float32 matrix: a card with string features lists its graph's inputs (`inputs`)",
                        text.name, matrix.name
                    ));
                }
                Ok(vec![InputSpec {
                    name: matrix.name.clone(),
                    dtype: InputType::Float32,
                    columns: (0..self.features.len()).collect(),
                }])
            }
            (None, Some(listed)) => self.resolve_inputs(listed),
            (Some(_), Some(_)) => Err("it has both `input` and `inputs`; keep one".into()),
            (None, None) => Err("it has neither `input` nor `inputs`".into()),
        }
    }

    fn resolve_inputs(&self, listed: &[InputListing]) -> Result<Vec<InputSpec>, String> {
        let mut used = vec![false; self.features.len()];
        let mut inputs = Vec::with_capacity(listed.len());
        for input in listed {
            let dtype = match input.dtype.as_str() {
                "float32" => InputType::Float32,
                "string" => InputType::Text,
                other => {
                    return Err(format!(
                        "input {:?} has dtype {other:?}; supported: float32, string",
                        input.name
                    ));
                }
            };
            if input.features.is_empty() {
                return Err(format!("input {:?} lists no features", input.name));
            }
            let mut columns = Vec::with_capacity(input.features.len());
            for name in &input.features {
                let Some(k) = self.features.iter().position(|f| &f.name == name) else {
                    return Err(format!(
                        "input {:?} takes feature {name:?}, which `features` does not list",
                        input.name
                    ));
                };
                if std::mem::replace(&mut used[k], true) {
                    return Err(format!("feature {name:?} feeds two inputs"));
                }
                if self.features[k].is_text() != (dtype == InputType::Text) {
                    return Err(format!(
                        "feature {name:?} is {} and input {:?} takes {}",
                        if self.features[k].is_text() {
                            "a string"
                        } else {
                            "a number"
                        },
                        input.name,
                        dtype.as_str()
                    ));
                }
                columns.push(k);
            }
            inputs.push(InputSpec {
                name: input.name.clone(),
                dtype,
                columns,
            });
        }
        match used.iter().position(|u| !u) {
            Some(k) => Err(format!(
                "feature {:?} feeds no input",
                self.features[k].name
            )),
            None => Ok(inputs),
        }
    }
}

/// A card whose model file has been found and verified.
#[derive(Debug, Clone)]
pub struct VerifiedModel {
    pub card: ModelCard,
    pub model_path: PathBuf,
    /// The bytes whose SHA-256 was checked: sessions are built from these,
    /// never from the path again, so a file replaced in between (a hot swap
    /// makes that routine) cannot serve a graph other than the one verified.
    pub bytes: std::sync::Arc<[u8]>,
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
        card.model_inputs().map_err(format_err)?;
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
        Ok(Self {
            card,
            model_path,
            bytes: bytes.into(),
        })
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

    fn output(json: &str) -> Result<OutputSpec, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn output_kinds_read_as_written_and_a_card_without_a_kind_reads_a_column() {
        let legacy = output(r#"{"name": "p", "dtype": "float32", "positive_class_column": 1}"#);
        assert_eq!(legacy.unwrap().read, ScoreRead::Column(1));
        let zip =
            output(r#"{"name": "output_probability", "kind": "zipmap", "positive_class": 1}"#);
        assert_eq!(zip.unwrap().read, ScoreRead::Label(ClassLabel::Int(1)));
        let text = output(r#"{"name": "o", "kind": "zipmap", "positive_class": "fraud"}"#);
        assert_eq!(
            text.unwrap().read,
            ScoreRead::Label(ClassLabel::Text("fraud".into()))
        );
        let score = output(r#"{"name": "variable", "kind": "score", "dtype": "float32"}"#);
        assert_eq!(score.unwrap().read, ScoreRead::Value);
    }

    #[test]
    fn an_output_whose_fields_do_not_fit_its_kind_is_refused_saying_what_it_needs() {
        for (json, says) in [
            (r#"{"name": "p"}"#, "needs positive_class_column"),
            (
                r#"{"name": "p", "kind": "zipmap", "positive_class_column": 1}"#,
                "needs positive_class",
            ),
            (
                r#"{"name": "p", "kind": "score", "positive_class": 1}"#,
                "takes neither",
            ),
            (
                r#"{"name": "p", "kind": "logits"}"#,
                "not one of probabilities, zipmap, score",
            ),
            (
                r#"{"name": "p", "positive_class_colum": 1}"#,
                "unknown field",
            ),
        ] {
            let err = output(json).unwrap_err();
            assert!(err.contains(says), "{json}: {err}");
        }
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
