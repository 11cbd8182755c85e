//! Batches staged in host memory that ONNX Runtime's execution provider
//! allocates, and run through an IoBinding. On CUDA that memory is
//! page-locked: the GPU copies the batch in (and the scores out) by DMA
//! straight from it, where a plain run has the driver stage a pageable
//! buffer (our copy into the pinned buffer replaces the driver's). On CPU it
//! is the session's own memory: the binding, the per-shape output and the
//! reading back are the same code, tested here without a GPU; what only a
//! GPU exercises is the pinned allocator and reading host-accessible GPU
//! memory (ort's `api-23` check). Whether it pays is measured
//! (`streamscore-tools inference --pinned`) before it becomes a setting.

use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, Session};
use ort::value::Tensor;

use crate::inference::Device;
use crate::inference::output;
use crate::model::ScoreRead;

pub(crate) struct HostBinding {
    allocator: Allocator,
    binding: IoBinding,
    /// Where the scores land; the output is bound again whenever the row
    /// count changes, since ONNX Runtime reuses a bound output's buffer
    /// (and refuses one of another shape).
    scores_memory: MemoryInfo<'static>,
    output: String,
    bound_rows: Option<usize>,
    /// The graph's one input: the float matrix of every feature.
    input: String,
    width: usize,
}

impl HostBinding {
    /// Host memory of the session's device for the batch and the scores,
    /// bound per batch.
    pub(crate) fn new(
        session: &Session,
        device: Device,
        cuda_device_id: i32,
        input: &str,
        output: &str,
        width: usize,
    ) -> ort::Result<Self> {
        let memory = |kind| match device {
            // ONNX Runtime files the pinned allocator under the session's GPU.
            Device::Cuda => MemoryInfo::new(
                AllocationDevice::CUDA_PINNED,
                cuda_device_id,
                AllocatorType::Device,
                kind,
            ),
            Device::Cpu => MemoryInfo::new(
                AllocationDevice::CPU,
                0,
                AllocatorType::Device,
                MemoryType::Default,
            ),
        };
        Ok(Self {
            allocator: Allocator::new(session, memory(MemoryType::CPUInput)?)?,
            binding: session.create_binding()?,
            scores_memory: memory(MemoryType::CPUOutput)?,
            output: output.to_owned(),
            bound_rows: None,
            input: input.to_owned(),
            width,
        })
    }

    /// Copies `rows` rows into the bound memory, runs, and appends the scores.
    pub(crate) fn run(
        &mut self,
        session: &mut Session,
        numbers: &[f32],
        rows: usize,
        read: &ScoreRead,
        scores: &mut Vec<f32>,
    ) -> Result<(), String> {
        if numbers.len() != rows * self.width {
            return Err(format!(
                "expected {} values ({} features per row), got {}",
                rows * self.width,
                self.width,
                numbers.len()
            ));
        }
        let err = |e: ort::Error| e.to_string();
        let mut batch = Tensor::<f32>::new(&self.allocator, [rows, self.width]).map_err(err)?;
        let (_, staged) = batch.try_extract_tensor_mut().map_err(err)?;
        staged.copy_from_slice(numbers);
        if self.bound_rows != Some(rows) {
            self.bound_rows = None;
            self.binding.clear_outputs();
            self.binding
                .bind_output_to_device(self.output.as_str(), &self.scores_memory)
                .map_err(err)?;
            self.bound_rows = Some(rows);
        }
        self.binding
            .bind_input(self.input.as_str(), &batch)
            .map_err(err)?;
        let outputs = session.run_binding(&self.binding).map_err(err)?;
        let value = (outputs.get(self.output.as_str()))
            .ok_or_else(|| format!("the model has no output named {:?}", self.output))?;
        output::read_scores(value, read, rows, scores)
    }
}
