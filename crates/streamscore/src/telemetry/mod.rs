//! Metrics: the counters (kept once, rendered at scrape time), the Prometheus
//! recorder's histograms and gauges, the HTTP endpoints, logs.

mod counters;
mod http;
pub(crate) mod lag;
pub mod logging;
pub mod metrics;
pub(crate) mod signals;
mod summary;

pub use counters::Counters;
pub(crate) use counters::Rebalance;
pub use http::{Health, serve};
pub use summary::{SUMMARY_EVERY, Summary};
