//! Metric names (docs/design.md, "Telemetry") and the Prometheus recorder.

use std::sync::OnceLock;

use metrics_process::Collector;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const END_TO_END_LATENCY: &str = "streamscore_end_to_end_latency_seconds";
pub const STAGE_DURATION: &str = "streamscore_stage_duration_seconds";
pub const BATCH_SIZE: &str = "streamscore_batch_size";
pub const CONSUMED: &str = "streamscore_records_consumed_total";
pub const SCORED: &str = "streamscore_records_scored_total";
pub const DEAD_LETTERED: &str = "streamscore_records_dead_lettered_total";
pub const TRANSACTIONS: &str = "streamscore_transactions_total";
pub const REREAD: &str = "streamscore_records_reread_total";
/// Rendered from the lag table at scrape time (telemetry::lag), not recorded.
pub const CONSUMER_LAG: &str = "streamscore_consumer_lag";
pub const CONSUMER_LAG_SECONDS: &str = "streamscore_consumer_lag_seconds";
pub const ASSIGNED_PARTITIONS: &str = "streamscore_assigned_partitions";
pub const REBALANCES: &str = "streamscore_rebalances_total";
pub const INFERENCE_ERRORS: &str = "streamscore_inference_errors_total";
pub const BUILD_INFO: &str = "streamscore_build_info";
pub const MODEL_INFO: &str = "streamscore_model_info";
pub const BATCH_TARGET_SIZE: &str = "streamscore_batch_target_size";
pub const LAST_COMMIT_TIMESTAMP: &str = "streamscore_last_commit_timestamp_seconds";
pub const CONSECUTIVE_ABORTS: &str = "streamscore_transactions_consecutive_aborts";
pub const PRODUCERS_REPLACED: &str = "streamscore_producers_replaced_total";
pub const DEAD_LETTER_VALUES_OMITTED: &str = "streamscore_dead_letter_values_omitted_total";
pub const SHADOW_DECISIONS: &str = "streamscore_shadow_decisions_total";
pub const SHADOW_SCORE_DIFFERENCE: &str = "streamscore_shadow_score_difference";
pub const MODEL_SWAPS: &str = "streamscore_model_swaps_total";
pub const MODEL_SWAP_FAILURES: &str = "streamscore_model_swap_failures_total";
pub const SCHEMA_REGISTRY_UP: &str = "streamscore_schema_registry_up";
pub const SCHEMA_REGISTRY_FETCHES: &str = "streamscore_schema_registry_fetches_total";

/// Stage label values of `stage_duration_seconds`.
pub mod stage {
    pub const DECRYPT: &str = "decrypt";
    pub const DECODE: &str = "decode";
    pub const BATCH_WAIT: &str = "batch_wait";
    pub const INFERENCE: &str = "inference";
    pub const PRODUCE: &str = "produce";
    pub const COMMIT: &str = "commit";
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static PROCESS: OnceLock<Collector> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once) and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            // Gauges only: the counts and histograms are `Stats`'.
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed, in which case ours just stays unused.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            register_at_zero();
            PROCESS.get_or_init(Collector::default).describe();
            handle
        })
        .clone()
}

/// The recorder's text with the process figures (CPU, memory, open files)
/// read now: collected at scrape time, so they are never stale.
pub fn render(handle: &PrometheusHandle) -> String {
    if let Some(process) = PROCESS.get() {
        process.collect();
    }
    handle.render()
}

/// The gauges the alerts read exist from the start, at "nothing yet": no
/// commit (0 = never), no aborts, no partitions; the pipeline's signals take
/// them over. (The stats are rendered from [`super::Stats`], at 0 from
/// the start, since `rate()` needs a first sample and an alert on an
/// increase must not mistake "not yet happened" for "not there".)
fn register_at_zero() {
    for gauge in [
        ASSIGNED_PARTITIONS,
        LAST_COMMIT_TIMESTAMP,
        CONSECUTIVE_ABORTS,
    ] {
        metrics::gauge!(gauge).set(0.0);
    }
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

fn describe() {
    use metrics::{Unit, describe_gauge};
    describe_gauge!(
        ASSIGNED_PARTITIONS,
        "Input partitions assigned to this instance, as of the last rebalance callback."
    );
    describe_gauge!(BUILD_INFO, "The running build (value 1), by version.");
    describe_gauge!(
        LAST_COMMIT_TIMESTAMP,
        Unit::Seconds,
        "Unix time of the last committed transaction."
    );
    describe_gauge!(
        CONSECUTIVE_ABORTS,
        "Transactions aborted since the last commit (0 while commits succeed)."
    );
    describe_gauge!(MODEL_INFO, "The model being served (value 1).");
    describe_gauge!(
        SCHEMA_REGISTRY_UP,
        "1 while the schema registry answers (or none is used); 0 from a request it did not answer until one it did."
    );
    metrics::describe_counter!(
        SCHEMA_REGISTRY_FETCHES,
        "Writer schemas asked of the schema registry by id, by outcome (found, not_found, invalid, unanswered)."
    );
    describe_gauge!(
        BATCH_TARGET_SIZE,
        "Rows at which a batch closes now (fixed: max_batch_size; adaptive: the current size)."
    );
}
