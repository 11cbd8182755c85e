//! Re-reads after aborts, counted in the process-wide Prometheus counters: alone in its binary, so no other pipeline in the process adds to what it counts.
//!
//! One test binary per group, so librdkafka and ONNX Runtime link once per
//! group rather than once per file (the files stay one per subject).

#![allow(clippy::too_many_lines)]

#[path = "../support/mod.rs"]
mod support;

#[path = "../reread.rs"]
mod reread;
