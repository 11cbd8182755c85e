//! Tests that need no broker: the chart, the alerts, the Dockerfiles, hostile input and inference.
//!
//! One test binary per group, so librdkafka and ONNX Runtime link once per
//! group rather than once per file (the files stay one per subject).

#![allow(clippy::too_many_lines)]

#[path = "../support/mod.rs"]
mod support;

#[path = "../alerts.rs"]
mod alerts;
#[path = "../default_model.rs"]
mod default_model;
#[path = "../docker.rs"]
mod docker;
#[path = "../helm_chart.rs"]
mod helm_chart;
#[path = "../hostile_input.rs"]
mod hostile_input;
#[path = "../inference.rs"]
mod inference;
#[path = "../model_card.rs"]
mod model_card;
