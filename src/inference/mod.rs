//! Model card verification and ONNX Runtime sessions.

pub mod card;
pub mod session;
pub mod worker;

pub use card::{CardError, ModelCard, VerifiedModel};
pub use session::{Device, InferenceError, ModelSession, init_runtime};
