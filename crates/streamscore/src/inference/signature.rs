//! The graph's inputs and outputs against the card, checked once when a
//! session opens: a model the processor cannot feed, or whose score it cannot
//! read, is refused at start with the input or output named and what is
//! supported, never on the first batch.

use ort::value::{Outlet, TensorElementType, ValueType};

use crate::model::{ClassLabel, ModelCard, ScoreRead};

const SUPPORTED_INPUT: &str = "supported: one float32 tensor [N, features]";
const SUPPORTED_OUTPUT: &str = "supported: kind \"probabilities\" (a float32 tensor [N, classes]), \"zipmap\" (a sequence of maps int64 or string → float32, ZipMap), \"score\" (a float32 tensor [N] or [N, 1])";

/// `Err` is one line naming the input or output and what is supported.
pub(crate) fn check_ports(
    inputs: &[Port],
    outputs: &[Port],
    card: &ModelCard,
) -> Result<(), String> {
    check_input(inputs, &card.input.name, card.features.len())?;
    check_output(outputs, &card.output.name, &card.output.read)
}

fn check_input(inputs: &[Port], name: &str, width: usize) -> Result<(), String> {
    let Some(input) = inputs.iter().find(|i| i.name == name) else {
        return Err(format!(
            "the card's input {name:?} is not in the graph, whose inputs are {}",
            list(inputs)
        ));
    };
    if inputs.len() > 1 {
        return Err(format!(
            "the graph has {} inputs ({}) and streamscore feeds only {name:?}; {SUPPORTED_INPUT}",
            inputs.len(),
            list(inputs)
        ));
    }
    let fits = match &input.dtype {
        ValueType::Tensor { ty, shape, .. } => {
            *ty == TensorElementType::Float32
                && shape.len() == 2
                && (shape[1] == -1 || usize::try_from(shape[1]).is_ok_and(|w| w == width))
        }
        _ => false,
    };
    if fits {
        Ok(())
    } else {
        Err(format!(
            "input {name:?} is {}, and the card lists {width} features; {SUPPORTED_INPUT}",
            &input.dtype
        ))
    }
}

fn check_output(outputs: &[Port], name: &str, read: &ScoreRead) -> Result<(), String> {
    let Some(output) = outputs.iter().find(|o| o.name == name) else {
        return Err(format!(
            "the card's output {name:?} is not in the graph, whose outputs are {}",
            list(outputs)
        ));
    };
    let dtype = &output.dtype;
    let problem = match (read, dtype) {
        (ScoreRead::Column(column), ValueType::Tensor { ty, shape, .. })
            if *ty == TensorElementType::Float32 && shape.len() == 2 =>
        {
            match usize::try_from(shape[1]) {
                Ok(classes) if *column >= classes => Some(format!(
                    "has {classes} columns, and the card's positive_class_column is {column}"
                )),
                _ => None,
            }
        }
        (ScoreRead::Label(label), ValueType::Sequence(inner)) => match inner.as_ref() {
            ValueType::Map { key, value } if *value == TensorElementType::Float32 => {
                match (label, key) {
                    (ClassLabel::Int(_), TensorElementType::Int64)
                    | (ClassLabel::Text(_), TensorElementType::String) => None,
                    _ => Some(format!(
                        "is keyed by {key}, and the card's positive_class {label} is not"
                    )),
                }
            }
            _ => Some(format!(
                "is {dtype}, which kind \"zipmap\" does not read; {SUPPORTED_OUTPUT}"
            )),
        },
        (ScoreRead::Value, ValueType::Tensor { ty, shape, .. })
            if *ty == TensorElementType::Float32
                && (shape.len() == 1 || (shape.len() == 2 && matches!(shape[1], -1 | 1))) =>
        {
            None
        }
        _ => Some(format!(
            "is {dtype}, which kind {:?} does not read; {SUPPORTED_OUTPUT}",
            read.kind()
        )),
    };
    match problem {
        None => Ok(()),
        Some(p) => Err(format!("output {name:?} {p}")),
    }
}

fn list(ports: &[Port]) -> String {
    let names: Vec<String> = ports
        .iter()
        .map(|o| format!("{:?} {}", o.name, o.dtype))
        .collect();
    names.join(", ")
}

/// A session's inputs or outputs as ports.
pub(crate) fn ports(outlets: &[Outlet]) -> Vec<Port> {
    outlets
        .iter()
        .map(|o| Port {
            name: o.name().to_owned(),
            dtype: o.dtype().clone(),
        })
        .collect()
}

/// One input or output of a graph, as ONNX Runtime reads it.
#[derive(Debug, Clone)]
pub(crate) struct Port {
    pub(crate) name: String,
    pub(crate) dtype: ValueType,
}

/// A graph's inputs and outputs.
#[derive(Debug, Clone)]
pub(crate) struct GraphSignature {
    pub(crate) inputs: Vec<Port>,
    pub(crate) outputs: Vec<Port>,
}

/// Reads the signature of the model at `path` (a CPU session, opened and
/// dropped): what the card tool describes.
pub(crate) fn read_graph(
    env: &ort::environment::Environment,
    path: &std::path::Path,
) -> Result<GraphSignature, super::InferenceError> {
    let err = |e: ort::Error| super::InferenceError::Session {
        model: path.display().to_string(),
        message: e.to_string(),
    };
    let session = ort::session::Session::builder(env)
        .map_err(err)?
        .commit_from_file(path)
        .map_err(err)?;
    Ok(GraphSignature {
        inputs: ports(session.inputs()),
        outputs: ports(session.outputs()),
    })
}
