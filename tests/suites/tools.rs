//! The tools: `streamscore-tools produce` and `bench`.
//!
//! One test binary per group, so librdkafka and ONNX Runtime link once per
//! group rather than once per file (the files stay one per subject).

#![allow(clippy::too_many_lines)]

#[path = "../support/mod.rs"]
mod support;

#[path = "../bench.rs"]
mod bench;
#[path = "../tools_cli.rs"]
mod tools_cli;
