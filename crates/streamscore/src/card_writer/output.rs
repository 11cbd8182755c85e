//! Which graph output the card reads the score from, and how.

use ort::value::{TensorElementType, ValueType};
use serde::Serialize;

use crate::inference::signature::{GraphSignature, Port};
use crate::model::{ClassLabel, ScoreRead};

use super::CardWriteError;

/// The card's `output`, as written.
#[derive(Debug, Serialize)]
pub(super) struct OutputDocument {
    name: String,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    dtype: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    positive_class_column: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    positive_class: Option<serde_json::Value>,
}

/// A float32 matrix, a ZipMap or a float32 score column: the outputs a score
/// can be read from (a label output cannot).
fn readable(port: &Port) -> bool {
    match &port.dtype {
        ValueType::Tensor { ty, shape, .. } => {
            *ty == TensorElementType::Float32 && matches!(shape.len(), 1 | 2)
        }
        ValueType::Sequence(inner) => matches!(
            inner.as_ref(),
            ValueType::Map { value, .. } if *value == TensorElementType::Float32
        ),
        _ => false,
    }
}

/// `wanted` if given, else the one readable output (a name with "prob" in it
/// wins a tie, as skl2onnx and onnxmltools name theirs).
pub(super) fn choose(
    graph: &GraphSignature,
    wanted: Option<&str>,
    positive: &str,
) -> Result<OutputDocument, CardWriteError> {
    let listed = || {
        graph
            .outputs
            .iter()
            .map(|p| format!("{:?} {}", p.name, p.dtype))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let port = match wanted {
        Some(name) => graph
            .outputs
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| {
                CardWriteError::Output(format!(
                    "--output {name:?} is not in the graph, whose outputs are {}",
                    listed()
                ))
            })?,
        None => {
            let candidates: Vec<&Port> = graph.outputs.iter().filter(|p| readable(p)).collect();
            let probs: Vec<&Port> = candidates
                .iter()
                .copied()
                .filter(|p| p.name.to_ascii_lowercase().contains("prob"))
                .collect();
            match (candidates.as_slice(), probs.as_slice()) {
                ([one], _) | (_, [one]) => *one,
                _ => {
                    return Err(CardWriteError::Output(format!(
                        "cannot tell which output holds the score; name it with --output (outputs: {})",
                        listed()
                    )));
                }
            }
        }
    };
    if !readable(port) {
        return Err(CardWriteError::Output(format!(
            "{:?} is {}; a score is read from a float32 tensor [N, classes] or [N] or [N, 1], or a sequence of maps → float32 (ZipMap)",
            port.name, port.dtype
        )));
    }
    let read = super::read_for(&port.dtype, positive).map_err(CardWriteError::Output)?;
    let (dtype, column, label) = match &read {
        ScoreRead::Column(c) => (Some("float32"), Some(*c), None),
        ScoreRead::Label(ClassLabel::Int(i)) => (None, None, Some((*i).into())),
        ScoreRead::Label(ClassLabel::Text(t)) => (None, None, Some(t.clone().into())),
        ScoreRead::Value => (Some("float32"), None, None),
    };
    Ok(OutputDocument {
        name: port.name.clone(),
        kind: read.kind(),
        dtype,
        positive_class_column: column,
        positive_class: label,
    })
}
