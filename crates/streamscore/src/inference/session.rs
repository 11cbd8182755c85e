//! ONNX Runtime sessions: loading the shared library once, choosing the
//! execution provider, and scoring feature matrices. Every call here blocks,
//! so sessions live on their own threads (see `pipeline`), never on tokio.

use std::path::Path;
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{HasSelectedOutputs, OutputSelector, RunOptions, Session};

use crate::features::FeatureRows;
use crate::inference::feed::Feed;
use crate::inference::host_binding::HostBinding;
use crate::inference::{output, signature};
use crate::model::{ScoreRead, VerifiedModel};

#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error(
        "ONNX Runtime library not found at {path}: run `make setup` (it copies libonnxruntime.so from the PyPI wheel onnxruntime==1.31.1), or set onnxruntime.library / ORT_DYLIB_PATH"
    )]
    LibraryMissing { path: String },
    #[error("ONNX Runtime library {path} could not be loaded: {message}")]
    LibraryLoad { path: String, message: String },
    #[error("cannot create an ONNX Runtime session for {model}: {message}")]
    Session { model: String, message: String },
    #[error(
        "model.device = \"cuda\" but the CUDA execution provider did not load ({reason}): install onnxruntime-gpu==1.31.1 with the CUDA and cuDNN libraries it needs and point onnxruntime.library at its libonnxruntime.so, or set model.device = \"auto\" to fall back to CPU"
    )]
    CudaUnavailable { reason: String },
    #[error("model {model} cannot be served: {message}")]
    Unsupported { model: String, message: String },
    #[error("inference failed on a batch of {rows} rows: {message}")]
    Run { rows: usize, message: String },
}

/// Where `model.device` asks the sessions to run: `auto` takes CUDA when it
/// is there and says so when it falls back.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    serde::Deserialize,
    serde::Serialize,
    strum::VariantNames,
    strum::EnumString,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum DevicePreference {
    Cpu,
    Cuda,
    Auto,
}

/// The CUDA execution provider's options (`[model.cuda]`); the CPU ignores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CudaOptions {
    /// The GPU, as CUDA numbers them (after `CUDA_VISIBLE_DEVICES`).
    pub device_id: u32,
    /// Most bytes ONNX Runtime's CUDA memory arena may hold; 0: no limit.
    pub memory_limit_bytes: u64,
    pub conv_algorithm_search: ConvAlgorithmSearch,
}

impl Default for CudaOptions {
    fn default() -> Self {
        Self {
            device_id: 0,
            memory_limit_bytes: 0,
            conv_algorithm_search: ConvAlgorithmSearch::Default,
        }
    }
}

/// How cuDNN picks convolution algorithms. `default` searches nothing: right
/// for MLPs and tree ensembles, which have no convolutions, so the first
/// batch of each shape does not pay for a search. ONNX Runtime's own default
/// is `exhaustive` (every algorithm benchmarked on first use).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, strum::VariantNames,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum ConvAlgorithmSearch {
    Default,
    Heuristic,
    Exhaustive,
}

/// Where a session actually runs, after any fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda,
}

impl Device {
    pub fn as_str(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        }
    }
}

static RUNTIME: OnceLock<Result<Environment, String>> = OnceLock::new();

/// Loads libonnxruntime once per process; later calls return the first outcome
/// (a process can load only one ONNX Runtime library).
pub fn init_runtime(library: &Path) -> Result<Environment, InferenceError> {
    if !library.exists() {
        return Err(InferenceError::LibraryMissing {
            path: library.display().to_string(),
        });
    }
    let outcome = RUNTIME.get_or_init(|| {
        let builder = ort::init_from(library).map_err(|e| e.to_string())?;
        builder
            .with_name("streamscore")
            .build()
            .map_err(|e| e.to_string())
    });
    outcome
        .clone()
        .map_err(|message| InferenceError::LibraryLoad {
            path: library.display().to_string(),
            message,
        })
}

/// One session of the model; not shared between threads (`run` needs `&mut`).
pub struct ModelSession {
    session: Session,
    output: String,
    feed: Feed,
    read: ScoreRead,
    /// Only the card's output is computed: a classifier's label output costs
    /// an ArgMax for nothing, and LightGBM's declares a fixed shape [1] that
    /// ONNX Runtime warns about on every batch.
    only_output: RunOptions<HasSelectedOutputs>,
    device: Device,
    /// Set by [`ModelSession::stage_in_host_memory`].
    host: Option<HostBinding>,
    /// The model file, for errors.
    model: String,
    /// `model.cuda.device_id`: where pinned memory is asked for.
    cuda_device_id: i32,
}

impl ModelSession {
    /// [`ModelSession::open_with`] the CUDA provider's default options.
    pub fn open(
        env: &Environment,
        model: &VerifiedModel,
        preference: DevicePreference,
        intra_op_threads: usize,
    ) -> Result<Self, InferenceError> {
        Self::open_with(
            env,
            model,
            preference,
            intra_op_threads,
            &CudaOptions::default(),
        )
    }

    /// Builds a session. `auto` and `cuda` try the CUDA execution provider
    /// (with `cuda`'s options) and `auto` falls back to CPU with a log line
    /// when it does not load.
    pub fn open_with(
        env: &Environment,
        model: &VerifiedModel,
        preference: DevicePreference,
        intra_op_threads: usize,
        cuda: &CudaOptions,
    ) -> Result<Self, InferenceError> {
        let model_name = model.model_path.display().to_string();
        let err = |e: ort::Error| InferenceError::Session {
            model: model_name.clone(),
            message: e.to_string(),
        };
        let device = match preference {
            DevicePreference::Cpu => Device::Cpu,
            DevicePreference::Cuda | DevicePreference::Auto => Device::Cuda,
        };
        let session = match (device, build(env, model, intra_op_threads, device, cuda)) {
            (_, Ok(session)) => Ok((session, device)),
            // A pod that reserved a GPU and runs on CPU is a silent waste (and
            // far slower than it was sized for): `cuda` is a promise, so a
            // failed provider stops the start; only `auto` may fall back.
            (Device::Cuda, Err(cuda_err)) if preference == DevicePreference::Cuda => {
                return Err(InferenceError::CudaUnavailable {
                    reason: cuda_err.to_string(),
                });
            }
            (Device::Cuda, Err(cuda_err)) => {
                tracing::info!(reason = %cuda_err, "CUDA execution provider not available; model.device = \"auto\" falls back to CPU");
                build(env, model, intra_op_threads, Device::Cpu, cuda).map(|s| (s, Device::Cpu))
            }
            (Device::Cpu, Err(e)) => Err(e),
        };
        let (session, device) = session.map_err(err)?;
        signature::check_ports(
            &signature::ports(session.inputs()),
            &signature::ports(session.outputs()),
            &model.card,
        )
        .map_err(|message| InferenceError::Unsupported {
            model: model_name.clone(),
            message,
        })?;
        let only_output = RunOptions::new()
            .map_err(err)?
            .with_outputs(OutputSelector::no_default().with(model.card.output.name.clone()));
        Ok(Self {
            only_output,
            session,
            feed: Feed::new(&model.card).map_err(|message| InferenceError::Unsupported {
                model: model_name.clone(),
                message,
            })?,
            output: model.card.output.name.clone(),
            read: model.card.output.read.clone(),
            device,
            host: None,
            model: model_name,
            cuda_device_id: i32::try_from(cuda.device_id).unwrap_or(i32::MAX),
        })
    }

    /// From now on, stages each batch in host memory of the session's device
    /// and runs it through an IoBinding: page-locked memory on CUDA, which
    /// the GPU reads by DMA without a staging copy (see `host_binding`).
    /// Only for a model whose one input is the float matrix of every feature.
    pub fn stage_in_host_memory(&mut self) -> Result<(), InferenceError> {
        let input = self
            .feed
            .whole_matrix()
            .ok_or_else(|| InferenceError::Unsupported {
                model: self.model.clone(),
                message: "staging in host memory needs one float input that takes every feature"
                    .into(),
            })?;
        let host = HostBinding::new(
            &self.session,
            self.device,
            self.cuda_device_id,
            input,
            &self.output,
            self.feed.width(),
        )
        .map_err(|e| InferenceError::Session {
            model: self.model.clone(),
            message: format!("cannot bind host memory on {}: {e}", self.device.as_str()),
        })?;
        self.host = Some(host);
        Ok(())
    }

    /// Whether batches are staged in host memory of the device.
    pub fn stages_in_host_memory(&self) -> bool {
        self.host.is_some()
    }

    /// Features per row the model takes.
    pub fn width(&self) -> usize {
        self.feed.width()
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Scores `rows` rows of a model without string features, laid out
    /// row-major in `features`; appends one score per row to `scores`.
    pub fn score(
        &mut self,
        features: &[f32],
        rows: usize,
        scores: &mut Vec<f32>,
    ) -> Result<(), InferenceError> {
        self.run(features, &[], rows, scores)
    }

    /// Scores `rows` rows (numbers and strings); appends one score per row
    /// to `scores`.
    pub fn score_rows(
        &mut self,
        features: &FeatureRows,
        rows: usize,
        scores: &mut Vec<f32>,
    ) -> Result<(), InferenceError> {
        self.run(&features.numbers, &features.texts, rows, scores)
    }

    fn run(
        &mut self,
        numbers: &[f32],
        texts: &[String],
        rows: usize,
        scores: &mut Vec<f32>,
    ) -> Result<(), InferenceError> {
        let run_err = |message: String| InferenceError::Run { rows, message };
        if rows == 0 {
            return Ok(());
        }
        if let Some(host) = &mut self.host {
            let before = scores.len();
            return (host.run(&mut self.session, numbers, rows, &self.read, scores)).map_err(
                |message| {
                    scores.truncate(before);
                    run_err(message)
                },
            );
        }
        let inputs = self.feed.inputs(numbers, texts, rows).map_err(run_err)?;
        let outputs = self
            .session
            .run_with_options(inputs, &self.only_output)
            .map_err(|e| run_err(e.to_string()))?;
        let value = outputs
            .get(self.output.as_str())
            .ok_or_else(|| run_err(format!("the model has no output named {:?}", self.output)))?;
        let before = scores.len();
        output::read_scores(value, &self.read, rows, scores).map_err(|message| {
            scores.truncate(before);
            run_err(message)
        })
    }

    /// Runs each batch size once so ONNX Runtime has planned its shapes before
    /// the first real record waits on it.
    pub fn warm_up(&mut self, batch_sizes: &[usize]) -> Result<(), InferenceError> {
        let mut scores = Vec::new();
        for &rows in batch_sizes {
            let zeros = self.feed.zeros(rows);
            scores.clear();
            self.score_rows(&zeros, rows, &mut scores)?;
        }
        Ok(())
    }
}

fn build(
    env: &Environment,
    model: &VerifiedModel,
    intra_op_threads: usize,
    device: Device,
    cuda: &CudaOptions,
) -> ort::Result<Session> {
    let mut builder = Session::builder(env)?
        .with_optimization_level(GraphOptimizationLevel::Level3)?
        .with_intra_threads(intra_op_threads)?
        .with_inter_threads(1)?
        // Spinning threads starve the Kafka and decode stages on small machines.
        .with_intra_op_spinning(false)?
        .with_inter_op_spinning(false)?;
    if device == Device::Cuda {
        builder =
            builder.with_execution_providers([cuda_provider(cuda).build().error_on_failure()])?;
    }
    builder.commit_from_memory(&model.bytes)
}

fn cuda_provider(options: &CudaOptions) -> ort::ep::CUDA {
    use ort::ep::cuda::ConvAlgorithmSearch as Search;
    let search = match options.conv_algorithm_search {
        ConvAlgorithmSearch::Default => Search::Default,
        ConvAlgorithmSearch::Heuristic => Search::Heuristic,
        ConvAlgorithmSearch::Exhaustive => Search::Exhaustive,
    };
    let provider = ort::ep::CUDA::default()
        .with_device_id(i32::try_from(options.device_id).unwrap_or(i32::MAX))
        .with_conv_algorithm_search(search);
    match usize::try_from(options.memory_limit_bytes) {
        Ok(0) | Err(_) => provider,
        Ok(limit) => provider.with_memory_limit(limit),
    }
}
