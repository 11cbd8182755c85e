//! The graph's inputs and outputs against the card, checked once when a
//! session opens: a model the processor cannot feed, or whose score it cannot
//! read, is refused at start with the input or output named and what is
//! supported, never on the first batch.

use ort::value::{Outlet, TensorElementType, ValueType};

use crate::model::{ClassLabel, InputSpec, InputType, ModelCard, ScoreRead};

const SUPPORTED_INPUT: &str =
    "supported: float32 or string tensors [N, columns], each column a feature of the card";
const SUPPORTED_OUTPUT: &str = "supported: kind \"probabilities\" (a float32 tensor [N, classes]), \"zipmap\" (a sequence of maps int64 or string → float32, ZipMap), \"score\" (a float32 tensor [N] or [N, 1])";

/// `Err` is one line naming the input or output and what is supported.
pub(crate) fn check_ports(
    inputs: &[Port],
    outputs: &[Port],
    card: &ModelCard,
) -> Result<(), String> {
    let specs = card.model_inputs()?;
    check_inputs(inputs, &specs)?;
    check_output(outputs, &card.output.name, &card.output.read)
}

fn check_inputs(inputs: &[Port], specs: &[InputSpec]) -> Result<(), String> {
    for spec in specs {
        let Some(input) = inputs.iter().find(|i| i.name == spec.name) else {
            return Err(format!(
                "the card's input {:?} is not in the graph, whose inputs are {}",
                spec.name,
                list(inputs)
            ));
        };
        let element = match spec.dtype {
            InputType::Float32 => TensorElementType::Float32,
            InputType::Text => TensorElementType::String,
        };
        let width = spec.columns.len();
        let fits = match &input.dtype {
            ValueType::Tensor { ty, shape, .. } => {
                *ty == element
                    && shape.len() == 2
                    && (shape[1] == -1 || usize::try_from(shape[1]).is_ok_and(|w| w == width))
            }
            _ => false,
        };
        if !fits {
            return Err(format!(
                "input {:?} is {}, and the card feeds it {width} {} column(s); {SUPPORTED_INPUT}",
                spec.name,
                input.dtype,
                spec.dtype.as_str()
            ));
        }
    }
    if let Some(unfed) = inputs
        .iter()
        .find(|i| !specs.iter().any(|s| s.name == i.name))
    {
        return Err(format!(
            "the graph's input {:?} is not on the card, which feeds {}; every input needs its features",
            unfed.name,
            specs
                .iter()
                .map(|s| format!("{:?}", s.name))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(())
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
