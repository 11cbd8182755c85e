//! Metrics: the counts and latency histograms (kept once, in [`Stats`],
//! rendered at scrape time), the Prometheus recorder's gauges, the HTTP
//! endpoints, logs.

mod histogram;
mod http;
pub(crate) mod lag;
pub mod logging;
pub mod metrics;
pub(crate) mod shadow;
pub(crate) mod signals;
mod stats;
mod summary;

pub use histogram::HistogramSnapshot;
pub use http::{Health, serve};
pub(crate) use stats::Rebalance;
pub use stats::{Stats, Step};
pub use summary::{SUMMARY_EVERY, Summary};
