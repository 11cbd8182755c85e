//! Metrics (Prometheus), live counters for the terminal, HTTP endpoints and logs.

pub mod http;
pub mod lag;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod signals;
pub mod summary;

pub use live::LiveStats;
