//! Faults: SIGKILLs, broker hangs and restarts, rebalances, and the stalls that must never wedge the processor.
//!
//! One test binary per group, so librdkafka and ONNX Runtime link once per
//! group rather than once per file (the files stay one per subject).

#![allow(clippy::too_many_lines)]

#[path = "../support/mod.rs"]
mod support;

#[path = "../acls.rs"]
mod acls;
#[path = "../broker_faults.rs"]
mod broker_faults;
#[path = "../chaos.rs"]
mod chaos;
#[path = "../cluster.rs"]
mod cluster;
#[path = "../never_wedge.rs"]
mod never_wedge;
#[path = "../rebalance.rs"]
mod rebalance;
#[path = "../registry_outage.rs"]
mod registry_outage;
