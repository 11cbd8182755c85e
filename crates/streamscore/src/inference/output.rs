//! Reading one score a row out of what the model returned, in the shape its
//! card names (the graph's type was checked against it at start).

use ort::value::{DynMapValueType, DynValue};

use crate::model::{ClassLabel, ScoreRead};

/// Appends `rows` scores to `scores`; `Err` says what did not fit.
pub(crate) fn read_scores(
    value: &DynValue,
    read: &ScoreRead,
    rows: usize,
    scores: &mut Vec<f32>,
) -> Result<(), String> {
    match read {
        ScoreRead::Column(column) => {
            let (shape, probs) = value
                .try_extract_tensor::<f32>()
                .map_err(|e| e.to_string())?;
            let columns = shape.get(1).copied().unwrap_or(1).max(1) as usize;
            if probs.len() != rows * columns || *column >= columns {
                return Err(format!("unexpected output shape {shape:?}"));
            }
            scores.extend(probs.chunks_exact(columns).map(|row| row[*column]));
        }
        ScoreRead::Value => {
            let (shape, values) = value
                .try_extract_tensor::<f32>()
                .map_err(|e| e.to_string())?;
            if values.len() != rows {
                return Err(format!(
                    "unexpected output shape {shape:?}: one score a row expected"
                ));
            }
            scores.extend_from_slice(values);
        }
        ScoreRead::Label(label) => {
            let maps = value
                .try_extract_sequence::<DynMapValueType>()
                .map_err(|e| e.to_string())?;
            if maps.len() != rows {
                return Err(format!("{} maps for {rows} rows", maps.len()));
            }
            for map in &maps {
                scores.push(probability_of(map, label)?);
            }
        }
    }
    Ok(())
}

/// The value at `label` in one ZipMap row; a row without it is an error, not
/// a score of 0: it means the card names a class the model does not have.
fn probability_of(map: &ort::value::DynMap, label: &ClassLabel) -> Result<f32, String> {
    let found = match label {
        ClassLabel::Int(wanted) => map
            .try_extract_key_values::<i64, f32>()
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|(k, _)| k == wanted)
            .map(|(_, v)| v),
        ClassLabel::Text(wanted) => map
            .try_extract_key_values::<String, f32>()
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|(k, _)| k == wanted)
            .map(|(_, v)| v),
    };
    found.ok_or_else(|| format!("a row's map has no class {label}"))
}
