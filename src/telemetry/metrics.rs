//! Metric names of DESIGN.md ("Telemetry") and the Prometheus recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const END_TO_END_LATENCY: &str = "streamscore_end_to_end_latency_seconds";
pub const STAGE_DURATION: &str = "streamscore_stage_duration_seconds";
pub const BATCH_SIZE: &str = "streamscore_batch_size";
pub const CONSUMED: &str = "streamscore_records_consumed_total";
pub const SCORED: &str = "streamscore_records_scored_total";
pub const DEAD_LETTERED: &str = "streamscore_records_dead_lettered_total";
pub const TRANSACTIONS: &str = "streamscore_transactions_total";
pub const CONSUMER_LAG: &str = "streamscore_consumer_lag";
pub const MODEL_INFO: &str = "streamscore_model_info";
pub const BATCH_TARGET_SIZE: &str = "streamscore_batch_target_size";
pub const LAST_COMMIT_TIMESTAMP: &str = "streamscore_last_commit_timestamp_seconds";
pub const CONSECUTIVE_ABORTS: &str = "streamscore_transactions_consecutive_aborts";
pub const PRODUCERS_REPLACED: &str = "streamscore_producers_replaced_total";
pub const DEAD_LETTER_VALUES_OMITTED: &str = "streamscore_dead_letter_values_omitted_total";

/// Stage label values of `stage_duration_seconds`.
pub mod stage {
    pub const DECRYPT: &str = "decrypt";
    pub const DECODE: &str = "decode";
    pub const BATCH_WAIT: &str = "batch_wait";
    pub const INFERENCE: &str = "inference";
    pub const PRODUCE: &str = "produce";
    pub const COMMIT: &str = "commit";
}

const LATENCY_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once) and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), BATCH_BUCKETS)
                })
                .expect("bucket lists are non-empty constants")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed, in which case ours just stays unused.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        END_TO_END_LATENCY,
        Unit::Seconds,
        "Record timestamp to its transaction committed."
    );
    describe_histogram!(
        STAGE_DURATION,
        Unit::Seconds,
        "Time spent per stage (per record for decrypt/decode, per batch or transaction otherwise)."
    );
    describe_histogram!(BATCH_SIZE, "Rows per inference batch.");
    describe_counter!(CONSUMED, "Records read from the input topics.");
    describe_counter!(SCORED, "Records scored and committed to the score topic.");
    describe_counter!(
        DEAD_LETTERED,
        "Records committed to the dead-letter topic, by reason."
    );
    describe_counter!(
        TRANSACTIONS,
        "Kafka transactions by outcome (committed, aborted)."
    );
    describe_gauge!(
        CONSUMER_LAG,
        "Records behind the partition's high watermark."
    );
    describe_gauge!(
        LAST_COMMIT_TIMESTAMP,
        Unit::Seconds,
        "Unix time of the last committed transaction."
    );
    describe_gauge!(
        CONSECUTIVE_ABORTS,
        "Transactions aborted since the last commit (0 while commits succeed)."
    );
    describe_counter!(
        PRODUCERS_REPLACED,
        "Transactional producers replaced after a commit or abort that could not finish (the new one fences the old)."
    );
    describe_counter!(
        DEAD_LETTER_VALUES_OMITTED,
        "Dead letters written without the original value because it did not fit kafka.max_message_bytes."
    );
    describe_gauge!(MODEL_INFO, "The model being served (value 1).");
    describe_gauge!(
        BATCH_TARGET_SIZE,
        "Rows at which a batch closes now (fixed: max_batch_size; adaptive: the current size)."
    );
}
