//! Model card verification and ONNX Runtime sessions.

pub mod card;
pub mod session;
pub mod worker;

pub use card::{CardError, ModelCard, VerifiedModel};
/// A loaded ONNX Runtime (its environment); one per process.
pub use ort::environment::Environment as Runtime;
pub use session::{Device, InferenceError, ModelSession, init_runtime};
