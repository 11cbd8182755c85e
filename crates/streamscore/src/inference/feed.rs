//! A batch's features as the graph's inputs: one float32 matrix of every
//! feature (the rows as they are, no copy), or one tensor per input the card
//! lists, its columns gathered from the rows (numbers, or strings for the
//! categorical features a graph encodes itself).

use ort::session::SessionInputValue;
use ort::value::{Tensor, TensorRef};

use crate::features::FeatureRows;
use crate::model::{InputSpec, InputType, ModelCard};

pub(crate) struct Feed {
    inputs: Vec<InputSpec>,
    /// Features a row has (its numbers' width).
    width: usize,
    /// String features a row has.
    text_width: usize,
    /// For each feature, its place among the row's strings.
    text_slot: Vec<Option<usize>>,
}

impl Feed {
    /// `Err` when the card's inputs do not resolve (checked at load already).
    pub(crate) fn new(card: &ModelCard) -> Result<Self, String> {
        let mut next = 0;
        let text_slot = card
            .features
            .iter()
            .map(|f| {
                f.is_text().then(|| {
                    next += 1;
                    next - 1
                })
            })
            .collect();
        Ok(Self {
            inputs: card.model_inputs()?,
            width: card.features.len(),
            text_width: next,
            text_slot,
        })
    }

    pub(crate) fn width(&self) -> usize {
        self.width
    }

    /// The name of the graph's input when it is its only one and takes every
    /// feature, in card order, as one float matrix: a batch is then fed as it is.
    pub(crate) fn whole_matrix(&self) -> Option<&str> {
        match self.inputs.as_slice() {
            [input]
                if input.dtype == InputType::Float32
                    && self.text_width == 0
                    && input.columns.len() == self.width
                    && input.columns.iter().enumerate().all(|(i, &c)| i == c) =>
            {
                Some(&input.name)
            }
            _ => None,
        }
    }

    /// Zero features for `rows` rows (warm-up): numbers 0, strings "".
    pub(crate) fn zeros(&self, rows: usize) -> FeatureRows {
        FeatureRows {
            numbers: vec![0.0; rows * self.width],
            texts: vec![String::new(); rows * self.text_width],
        }
    }

    /// The session's inputs for `rows` rows of `batch`.
    pub(crate) fn inputs<'a>(
        &self,
        numbers: &'a [f32],
        texts: &[String],
        rows: usize,
    ) -> Result<Vec<(String, SessionInputValue<'a>)>, String> {
        if numbers.len() != rows * self.width || texts.len() != rows * self.text_width {
            return Err(format!(
                "expected {} values and {} strings ({} features per row, {} of them strings), got {} and {}",
                rows * self.width,
                rows * self.text_width,
                self.width,
                self.text_width,
                numbers.len(),
                texts.len()
            ));
        }
        let err = |e: ort::Error| e.to_string();
        self.inputs
            .iter()
            .map(|input| {
                let k = input.columns.len();
                let value: SessionInputValue<'a> = match input.dtype {
                    InputType::Float32
                        if k == self.width
                            && input.columns.iter().enumerate().all(|(i, &c)| i == c) =>
                    {
                        TensorRef::from_array_view(([rows, k], numbers))
                            .map_err(err)?
                            .into()
                    }
                    InputType::Float32 => {
                        let mut gathered = Vec::with_capacity(rows * k);
                        for row in numbers.chunks_exact(self.width) {
                            gathered.extend(input.columns.iter().map(|&c| row[c]));
                        }
                        Tensor::from_array(([rows, k], gathered))
                            .map_err(err)?
                            .into()
                    }
                    InputType::Text => {
                        let slots: Vec<usize> = input
                            .columns
                            .iter()
                            .filter_map(|&c| self.text_slot.get(c).copied().flatten())
                            .collect();
                        let mut gathered: Vec<String> = Vec::with_capacity(rows * k);
                        for row in texts.chunks_exact(self.text_width.max(1)) {
                            gathered.extend(slots.iter().map(|&s| row[s].clone()));
                        }
                        Tensor::from_string_array(([rows, k], gathered.as_slice()))
                            .map_err(err)?
                            .into()
                    }
                };
                Ok((input.name.clone(), value))
            })
            .collect()
    }
}
