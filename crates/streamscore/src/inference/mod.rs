//! ONNX Runtime sessions and the worker threads that run them.

mod feed;
mod host_binding;
mod output;
pub(crate) mod session;
pub(crate) mod signature;
pub(crate) mod worker;

/// A loaded ONNX Runtime (its environment); one per process.
pub use ort::environment::Environment as Runtime;
pub(crate) use session::{
    ConvAlgorithmSearch, CudaOptions, Device, DevicePreference, InferenceError, ModelSession,
    init_runtime,
};
