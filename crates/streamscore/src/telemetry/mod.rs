//! Metrics (Prometheus), live counters for the terminal, HTTP endpoints and logs.

mod http;
pub(crate) mod lag;
mod live;
pub mod logging;
pub mod metrics;
pub(crate) mod signals;
mod summary;

pub use http::{Health, serve};
pub use live::LiveStats;
pub use summary::{SUMMARY_EVERY, Summary};
