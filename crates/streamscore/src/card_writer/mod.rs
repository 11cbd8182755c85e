//! `streamscore model card`: from an ONNX file, the reader schema and a
//! feature mapping, the card the processor serves the model by. Everything
//! the card states is read or checked here (the hash, the graph's signature,
//! each feature's Avro field and type), and the written card is loaded back
//! and its graph checked the way `run` and `check` will, so a card this
//! writes is one they accept.

mod fields;
mod mlflow;
mod output;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ort::value::{TensorElementType, ValueType};
use serde::Serialize;

use crate::inference::Runtime;
use crate::inference::signature::{self, GraphSignature};
use crate::model::{ClassLabel, ScoreRead, VerifiedModel};

pub use fields::FeatureMapping;
pub use mlflow::MlflowRun;

#[derive(Debug, thiserror::Error)]
pub enum CardWriteError {
    #[error(transparent)]
    Graph(#[from] crate::inference::InferenceError),
    #[error("input: {0}")]
    Input(String),
    #[error("{0}")]
    Feature(String),
    #[error("output: {0}")]
    Output(String),
    #[error("schema {path}: {message}")]
    Schema { path: String, message: String },
    #[error("MLflow run {path}: {message}")]
    Mlflow { path: String, message: String },
    #[error("{what} {path}: {error}")]
    Io {
        what: &'static str,
        path: String,
        error: std::io::Error,
    },
    #[error("the card written to {path} is not one `check` accepts: {message}")]
    NotAccepted { path: String, message: String },
}

/// What the card tool is asked to write.
#[derive(Debug, Clone)]
pub struct CardRequest {
    pub model: PathBuf,
    /// The reader schema the processor resolves records against.
    pub schema: PathBuf,
    /// The matrix's columns in order; `None`: the names of a graph whose
    /// inputs name them (one input per feature).
    pub features: Option<Vec<FeatureMapping>>,
    /// The output the score is read from; `None`: the one that holds
    /// probabilities or a score, if there is exactly one.
    pub output: Option<String>,
    /// ZipMap: the positive class's label; probabilities: its column.
    pub positive_class: String,
    pub threshold: f64,
    pub name: String,
    pub version: String,
    pub training_data_sha256: Option<String>,
    pub metrics: Vec<(String, f64)>,
    pub mlflow_run: Option<PathBuf>,
    pub out: PathBuf,
}

/// The card as written (the processor reads the fields it needs from it;
/// the rest is the record data scientists asked for).
#[derive(Debug, Serialize)]
struct CardDocument {
    name: String,
    version: String,
    file: String,
    sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<InputDocument>,
    #[serde(skip_serializing_if = "Option::is_none")]
    inputs: Option<Vec<ListedInput>>,
    output: output::OutputDocument,
    features: Vec<fields::FeatureDocument>,
    threshold: f64,
    training: BTreeMap<String, serde_json::Value>,
    evaluation: BTreeMap<String, serde_json::Value>,
}

/// One input of a graph that takes a column per feature.
#[derive(Debug, Serialize)]
struct ListedInput {
    name: String,
    dtype: &'static str,
    shape: [i64; 2],
    features: [String; 1],
}

#[derive(Debug, Serialize)]
struct InputDocument {
    name: String,
    dtype: &'static str,
    shape: Vec<i64>,
}

/// Writes the card and returns what `check` said of it: the loaded model.
pub fn write_card(env: &Runtime, request: &CardRequest) -> Result<VerifiedModel, CardWriteError> {
    let bytes = std::fs::read(&request.model).map_err(|error| CardWriteError::Io {
        what: "cannot read the model",
        path: request.model.display().to_string(),
        error,
    })?;
    let sha256 = hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes));
    let graph = signature::read_graph(env, &request.model)?;
    let (input, inputs, mapping) = layout(&graph, request.features.as_deref())?;
    let schema = crate::codec::schemas::load_schema(&request.schema).map_err(|e| {
        CardWriteError::Schema {
            path: request.schema.display().to_string(),
            message: e.to_string(),
        }
    })?;
    let features = fields::check(&mapping, &schema, &request.schema)?;
    let output = output::choose(&graph, request.output.as_deref(), &request.positive_class)?;
    let mut training = BTreeMap::new();
    let mut evaluation = BTreeMap::new();
    if let Some(hash) = &request.training_data_sha256 {
        training.insert("data_sha256".into(), hash.clone().into());
    }
    if let Some(dir) = &request.mlflow_run {
        let run = MlflowRun::read(dir)?;
        training.insert("mlflow".into(), run.provenance());
        for (k, v) in run.metrics {
            evaluation.insert(k, v.into());
        }
    }
    for (k, v) in &request.metrics {
        evaluation.insert(k.clone(), (*v).into());
    }
    let document = CardDocument {
        name: request.name.clone(),
        version: request.version.clone(),
        file: file_from(&request.out, &request.model),
        sha256,
        input,
        inputs,
        output,
        features,
        threshold: request.threshold,
        training,
        evaluation,
    };
    let text =
        serde_json::to_string_pretty(&document).map_err(|e| CardWriteError::NotAccepted {
            path: request.out.display().to_string(),
            message: e.to_string(),
        })?;
    // Written beside its place (its `file` is relative to its folder) and
    // moved there only once accepted: a refused card neither lands nor
    // removes the card that was there.
    let draft = draft_path(&request.out);
    std::fs::write(&draft, text + "\n").map_err(|error| CardWriteError::Io {
        what: "cannot write the card",
        path: draft.display().to_string(),
        error,
    })?;
    let model = accepted(env, &draft, &graph).and_then(|model| {
        std::fs::rename(&draft, &request.out).map_err(|error| CardWriteError::Io {
            what: "cannot move the card into place",
            path: request.out.display().to_string(),
            error,
        })?;
        Ok(model)
    });
    if model.is_err() {
        let _ = std::fs::remove_file(&draft);
    }
    model
}

fn draft_path(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map_or("card.json".into(), |n| n.to_string_lossy().into_owned());
    out.with_file_name(format!(".{name}.draft-{}", std::process::id()))
}

type Layout = (
    Option<InputDocument>,
    Option<Vec<ListedInput>>,
    Vec<(FeatureMapping, bool)>,
);

/// How the graph takes its features: one float32 matrix whose columns
/// `--features` names in order, or one [N, 1] input per feature (float32 or
/// string), matched by name to the fields (or through `--features`
/// name=field). Each mapping says whether its feature is a string.
fn layout(
    graph: &GraphSignature,
    features: Option<&[FeatureMapping]>,
) -> Result<Layout, CardWriteError> {
    let matrix = match graph.inputs.as_slice() {
        [one] => matrix_width(one).map(|w| (one, w)),
        _ => None,
    };
    if let Some((input, width)) = matrix {
        let Some(mapping) = features else {
            return Err(CardWriteError::Input(format!(
                "{:?} is one float32 matrix of {} columns, which the graph does not name: give them in order with --features name[=field],…",
                input.name,
                width.map_or("any number of".to_owned(), |w| w.to_string())
            )));
        };
        if let Some(w) = width.filter(|&w| w != mapping.len()) {
            return Err(CardWriteError::Input(format!(
                "{:?} takes {w} columns and --features names {}",
                input.name,
                mapping.len()
            )));
        }
        let document = InputDocument {
            name: input.name.clone(),
            dtype: "float32",
            shape: vec![-1, width.map_or(-1, |w| w as i64)],
        };
        let mapping = mapping.iter().map(|m| (m.clone(), false)).collect();
        return Ok((Some(document), None, mapping));
    }
    let mut listed = Vec::with_capacity(graph.inputs.len());
    let mut mapping = Vec::with_capacity(graph.inputs.len());
    for port in &graph.inputs {
        let text = match &port.dtype {
            ValueType::Tensor { ty, shape, .. }
                if shape.len() == 2 && matches!(shape[1], 1 | -1) =>
            {
                match ty {
                    TensorElementType::Float32 => false,
                    TensorElementType::String => true,
                    _ => return Err(per_feature(port)),
                }
            }
            _ => return Err(per_feature(port)),
        };
        let field = match features {
            None => port.name.clone(),
            Some(given) => given
                .iter()
                .find(|m| m.name == port.name)
                .map(|m| m.field.clone())
                .ok_or_else(|| {
                    CardWriteError::Input(format!(
                        "{:?} is an input of the graph, and --features does not name it",
                        port.name
                    ))
                })?,
        };
        listed.push(ListedInput {
            name: port.name.clone(),
            dtype: if text { "string" } else { "float32" },
            shape: [-1, 1],
            features: [port.name.clone()],
        });
        mapping.push((
            FeatureMapping {
                name: port.name.clone(),
                field,
            },
            text,
        ));
    }
    if let Some(extra) = features
        .into_iter()
        .flatten()
        .find(|m| !graph.inputs.iter().any(|p| p.name == m.name))
    {
        return Err(CardWriteError::Input(format!(
            "--features names {:?}, which is not an input of the graph",
            extra.name
        )));
    }
    Ok((None, Some(listed), mapping))
}

/// A float32 [N, F] input's width, when it is one (`Some(None)`: any width).
fn matrix_width(input: &signature::Port) -> Option<Option<usize>> {
    match &input.dtype {
        ValueType::Tensor { ty, shape, .. }
            if *ty == TensorElementType::Float32 && shape.len() == 2 =>
        {
            Some(usize::try_from(shape[1]).ok())
        }
        _ => None,
    }
}

fn per_feature(port: &signature::Port) -> CardWriteError {
    CardWriteError::Input(format!(
        "{:?} is {}; streamscore feeds one float32 matrix [N, features], or one float32 or string [N, 1] input per feature",
        port.name, port.dtype
    ))
}

/// The model file as the card names it: relative to the card's folder when
/// it lies in it or below, else the path as given.
fn file_from(card: &Path, model: &Path) -> String {
    // A bare name's parent is "": the current folder.
    let folder = card
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let model_abs = std::path::absolute(model).unwrap_or_else(|_| model.to_path_buf());
    let folder_abs = std::path::absolute(folder).unwrap_or_else(|_| folder.to_path_buf());
    match model_abs.strip_prefix(&folder_abs) {
        Ok(relative) => relative.display().to_string(),
        Err(_) => model_abs.display().to_string(),
    }
}

/// Loads the written card as `run` does, checks its graph against it, and
/// scores a row and two, as `check`'s warm-up does (a ZipMap without the
/// positive label, a column beyond the classes, a fixed batch size show only
/// when it runs).
fn accepted(
    env: &Runtime,
    card: &Path,
    graph: &GraphSignature,
) -> Result<VerifiedModel, CardWriteError> {
    let not_accepted = |message: String| CardWriteError::NotAccepted {
        path: card.display().to_string(),
        message,
    };
    let model = VerifiedModel::load(card).map_err(|e| not_accepted(e.to_string()))?;
    signature::check_ports(&graph.inputs, &graph.outputs, &model.card).map_err(not_accepted)?;
    let mut session = crate::inference::ModelSession::open(
        env,
        &model,
        crate::inference::DevicePreference::Cpu,
        1,
    )
    .map_err(|e| not_accepted(e.to_string()))?;
    session
        .warm_up(&[1, 2])
        .map_err(|e| not_accepted(e.to_string()))?;
    Ok(model)
}

/// How `--positive-class` reads for each kind of output.
fn read_for(kind: &ValueType, positive: &str) -> Result<ScoreRead, String> {
    match kind {
        ValueType::Sequence(inner) => match inner.as_ref() {
            ValueType::Map { key, .. } if *key == TensorElementType::String => {
                Ok(ScoreRead::Label(ClassLabel::Text(positive.to_owned())))
            }
            _ => positive
                .parse()
                .map(|l| ScoreRead::Label(ClassLabel::Int(l)))
                .map_err(|_| format!("--positive-class {positive:?}: the map's labels are integers")),
        },
        ValueType::Tensor { shape, .. } if shape.len() == 2 && shape[1] != 1 => positive
            .parse()
            .map(ScoreRead::Column)
            .map_err(|_| format!("--positive-class {positive:?}: a probability matrix's class is its column number")),
        _ => Ok(ScoreRead::Value),
    }
}
