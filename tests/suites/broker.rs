//! Tests against the one broker `make test` starts (or one of their own under
//! plain `cargo test`): the pipeline in process and as its own process, the
//! command line and the keyring tools (their refusals sit beside runs that
//! must be scored), lag, logs, health, preflight, TLS, the Python examples,
//! request errors from librdkafka's mock cluster, re-reads after aborts.
//!
//! One test binary per group, so librdkafka and ONNX Runtime link once per
//! group rather than once per file (the files stay one per subject).

#![allow(clippy::too_many_lines)]

#[path = "../support/mod.rs"]
mod support;

#[path = "../cli.rs"]
mod cli;
#[path = "../example_consumer.rs"]
mod example_consumer;
#[path = "../group_commit.rs"]
mod group_commit;
#[path = "../health.rs"]
mod health;
#[path = "../input_topics.rs"]
mod input_topics;
#[path = "../keys.rs"]
mod keys;
#[path = "../lag.rs"]
mod lag;
#[path = "../logs.rs"]
mod logs;
#[path = "../model_swap.rs"]
mod model_swap;
#[path = "../pipeline.rs"]
mod pipeline;
#[path = "../preflight.rs"]
mod preflight;
#[path = "../python_producer.rs"]
mod python_producer;
#[path = "../request_errors.rs"]
mod request_errors;
#[path = "../reread.rs"]
mod reread;
#[path = "../schema_registry.rs"]
mod schema_registry;
#[path = "../shadow.rs"]
mod shadow;
#[path = "../tls.rs"]
mod tls;
