//! The processor's counts and latency histograms, kept once. The stages add
//! to them; `/metrics` renders them at scrape time (as it does the lag
//! table), and the live line, the minute summary, the demo, the bench and the
//! tests read the same atomics, so no two views of a figure can drift apart.
//! The Prometheus recorder keeps only the gauges.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;

use super::histogram::{HistogramSnapshot, LatencyHistogram};
use super::metrics::{
    BATCH_SIZE, CONSUMED, DEAD_LETTER_VALUES_OMITTED, DEAD_LETTERED, END_TO_END_LATENCY,
    INFERENCE_ERRORS, MODEL_SWAP_FAILURES, MODEL_SWAPS, PRODUCERS_REPLACED, REBALANCES, REREAD,
    SCORED, STAGE_DURATION, TRANSACTIONS,
};
use super::shadow::{ShadowStats, ShadowTally};
use crate::dead_letter::Reason;

/// Upper bounds of `streamscore_batch_size`'s buckets (rows).
const BATCH_BUCKETS: [u64; 13] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];

/// A timed step of the flow: `stage_duration_seconds{stage}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Opening the envelope, per record.
    Decrypt,
    /// Decoding and building the feature row, per record.
    Decode,
    /// A batch's wait from opening to its inference (filling, then queueing).
    BatchWait,
    /// One inference call.
    Inference,
    /// Enqueueing a batch's records into the transaction.
    Produce,
    /// Sending the offsets and committing.
    Commit,
}

impl Step {
    pub const ALL: [Step; 6] = [
        Step::Decrypt,
        Step::Decode,
        Step::BatchWait,
        Step::Inference,
        Step::Produce,
        Step::Commit,
    ];

    pub fn as_str(self) -> &'static str {
        use super::metrics::stage;
        match self {
            Step::Decrypt => stage::DECRYPT,
            Step::Decode => stage::DECODE,
            Step::BatchWait => stage::BATCH_WAIT,
            Step::Inference => stage::INFERENCE,
            Step::Produce => stage::PRODUCE,
            Step::Commit => stage::COMMIT,
        }
    }

    /// Its slot in [`Stats`]' histograms: the declaration order, which
    /// [`Step::ALL`] follows (a test holds them together). Called twice per
    /// record, so no search.
    fn index(self) -> usize {
        self as usize
    }
}

/// What a rebalance callback reported: `rebalances_total{event}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rebalance {
    Assigned,
    Revoked,
    Lost,
}

impl Rebalance {
    const ALL: [Rebalance; 3] = [Rebalance::Assigned, Rebalance::Revoked, Rebalance::Lost];

    fn as_str(self) -> &'static str {
        match self {
            Rebalance::Assigned => "assigned",
            Rebalance::Revoked => "revoked",
            Rebalance::Lost => "lost",
        }
    }
}

#[derive(Debug)]
pub struct Stats {
    consumed: AtomicU64,
    reread: AtomicU64,
    scored: AtomicU64,
    /// Indexed like [`Reason::ALL`].
    dead_lettered: [AtomicU64; Reason::ALL.len()],
    transactions_committed: AtomicU64,
    transactions_aborted: AtomicU64,
    producers_replaced: AtomicU64,
    values_omitted: AtomicU64,
    inference_errors: AtomicU64,
    model_swaps: AtomicU64,
    model_swap_failures: AtomicU64,
    shadow: ShadowStats,
    /// Indexed like [`Rebalance::ALL`].
    rebalances: [AtomicU64; 3],
    /// Batches scored, by `BATCH_BUCKETS` (not cumulative), their count and rows.
    batch_buckets: [AtomicU64; BATCH_BUCKETS.len() + 1],
    batches: AtomicU64,
    batch_rows: AtomicU64,
    /// Indexed like [`Step::ALL`].
    steps: [LatencyHistogram; 6],
    end_to_end: LatencyHistogram,
    /// The same end-to-end latencies, finer, since the last `take_latency`:
    /// the live line's and the summary's percentiles of the last interval.
    latency_us: Mutex<Histogram<u64>>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            consumed: AtomicU64::new(0),
            reread: AtomicU64::new(0),
            scored: AtomicU64::new(0),
            dead_lettered: Default::default(),
            transactions_committed: AtomicU64::new(0),
            transactions_aborted: AtomicU64::new(0),
            producers_replaced: AtomicU64::new(0),
            values_omitted: AtomicU64::new(0),
            inference_errors: AtomicU64::new(0),
            model_swaps: AtomicU64::new(0),
            model_swap_failures: AtomicU64::new(0),
            shadow: ShadowStats::default(),
            rebalances: Default::default(),
            batch_buckets: Default::default(),
            batches: AtomicU64::new(0),
            batch_rows: AtomicU64::new(0),
            steps: Default::default(),
            end_to_end: LatencyHistogram::default(),
            latency_us: Mutex::new(new_histogram()),
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 1 h at 3 significant digits: fixed bounds, so creation cannot fail.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant histogram bounds are valid")
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

fn reason_index(reason: Reason) -> usize {
    Reason::ALL.iter().position(|r| *r == reason).unwrap_or(0)
}

/// What the stages count.
impl Stats {
    /// A record read: for the first time, or (`first` false) again after a rewind.
    pub(crate) fn read(&self, first: bool) {
        add(if first { &self.consumed } else { &self.reread }, 1);
    }

    /// A transaction committed with these scores and dead letters.
    pub(crate) fn committed_transaction(
        &self,
        scored: u64,
        dead: impl IntoIterator<Item = (Reason, u64)>,
    ) {
        add(&self.transactions_committed, 1);
        add(&self.scored, scored);
        for (reason, n) in dead {
            add(&self.dead_lettered[reason_index(reason)], n);
        }
    }

    pub(crate) fn aborted_transaction(&self) {
        add(&self.transactions_aborted, 1);
    }

    pub(crate) fn producer_replaced(&self) {
        add(&self.producers_replaced, 1);
    }

    pub(crate) fn value_omitted(&self) {
        add(&self.values_omitted, 1);
    }

    pub(crate) fn inference_failed(&self) {
        add(&self.inference_errors, 1);
    }

    /// Models swapped in while running, and swaps that failed.
    pub fn model_swaps(&self) -> (u64, u64) {
        (get(&self.model_swaps), get(&self.model_swap_failures))
    }

    /// A committed transaction's shadow comparisons.
    pub(crate) fn shadow_compared(&self, tally: &ShadowTally) {
        self.shadow.add(tally);
    }

    /// With shadow scoring: committed records whose challenger decided
    /// like the model serving, and those whose did not.
    pub fn shadow_decisions(&self) -> (u64, u64) {
        self.shadow.decisions()
    }

    pub(crate) fn model_swapped(&self) {
        add(&self.model_swaps, 1);
    }

    pub(crate) fn model_swap_failed(&self) {
        add(&self.model_swap_failures, 1);
    }

    pub(crate) fn rebalanced(&self, event: Rebalance) {
        let i = Rebalance::ALL.iter().position(|e| *e == event).unwrap_or(0);
        add(&self.rebalances[i], 1);
    }

    /// A batch of `rows` rows went through inference.
    pub(crate) fn batch_scored(&self, rows: usize) {
        let rows = rows as u64;
        let bucket = BATCH_BUCKETS.partition_point(|&upper| upper < rows);
        add(&self.batch_buckets[bucket], 1);
        add(&self.batches, 1);
        add(&self.batch_rows, rows);
    }

    pub(crate) fn timed(&self, step: Step, took: std::time::Duration) {
        self.steps[step.index()].record(took);
    }

    /// Records committed: each one's time from its timestamp to the commit.
    pub(crate) fn end_to_end(&self, latencies: impl IntoIterator<Item = std::time::Duration>) {
        let mut h = self.latency_us.lock().unwrap_or_else(|p| p.into_inner());
        for latency in latencies {
            self.end_to_end.record(latency);
            let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            h.saturating_record(us.max(1));
        }
    }
}

/// What a terminal line, a summary or a test reads.
impl Stats {
    /// Records read from the input topics, each counted once.
    pub fn consumed(&self) -> u64 {
        get(&self.consumed)
    }

    /// Reads after a rewind (or of a partition that came back).
    pub fn reread(&self) -> u64 {
        get(&self.reread)
    }

    /// Committed to the score topic.
    pub fn scored(&self) -> u64 {
        get(&self.scored)
    }

    /// Committed to the dead-letter topic, every reason.
    pub fn dead_lettered(&self) -> u64 {
        self.dead_lettered.iter().map(get).sum()
    }

    /// Every record whose result (score or dead letter) is committed.
    pub fn committed(&self) -> u64 {
        self.scored() + self.dead_lettered()
    }

    pub fn transactions_committed(&self) -> u64 {
        get(&self.transactions_committed)
    }

    pub fn transactions_aborted(&self) -> u64 {
        get(&self.transactions_aborted)
    }

    pub fn producers_replaced(&self) -> u64 {
        get(&self.producers_replaced)
    }

    pub fn inference_errors(&self) -> u64 {
        get(&self.inference_errors)
    }

    /// Batches that went through inference, and their rows.
    pub fn batches(&self) -> (u64, u64) {
        (get(&self.batches), get(&self.batch_rows))
    }

    /// The histogram of one step's durations, as /metrics shows it now.
    pub fn step(&self, step: Step) -> HistogramSnapshot {
        self.steps[step.index()].snapshot()
    }

    /// Returns the latencies recorded since the previous call and starts afresh.
    pub fn take_latency(&self) -> Histogram<u64> {
        let mut h = self.latency_us.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *h, new_histogram())
    }
}

/// The Prometheus text of every counter and histogram.
impl Stats {
    pub(crate) fn render(&self, out: &mut String) {
        let plain = [
            (CONSUMED, &self.consumed),
            (REREAD, &self.reread),
            (SCORED, &self.scored),
            (INFERENCE_ERRORS, &self.inference_errors),
            (PRODUCERS_REPLACED, &self.producers_replaced),
            (DEAD_LETTER_VALUES_OMITTED, &self.values_omitted),
            (MODEL_SWAPS, &self.model_swaps),
            (MODEL_SWAP_FAILURES, &self.model_swap_failures),
        ];
        for (name, counter) in plain {
            family(out, name, "counter");
            let _ = writeln!(out, "{name} {}", get(counter));
        }
        self.shadow.render(out);
        let reasons = Reason::ALL.iter().map(|r| r.as_str());
        labelled(
            out,
            DEAD_LETTERED,
            "reason",
            reasons.zip(&self.dead_lettered),
        );
        let outcomes = [
            ("committed", &self.transactions_committed),
            ("aborted", &self.transactions_aborted),
        ];
        labelled(out, TRANSACTIONS, "outcome", outcomes);
        let events = Rebalance::ALL.iter().map(|e| e.as_str());
        labelled(out, REBALANCES, "event", events.zip(&self.rebalances));
        self.render_batch_sizes(out);
        family(out, END_TO_END_LATENCY, "histogram");
        self.end_to_end.render(out, END_TO_END_LATENCY, "");
        family(out, STAGE_DURATION, "histogram");
        for (step, histogram) in Step::ALL.iter().zip(&self.steps) {
            let labels = format!("stage=\"{}\"", step.as_str());
            histogram.render(out, STAGE_DURATION, &labels);
        }
    }

    fn render_batch_sizes(&self, out: &mut String) {
        family(out, BATCH_SIZE, "histogram");
        let mut cumulative = 0;
        for (upper, bucket) in BATCH_BUCKETS.iter().zip(&self.batch_buckets) {
            cumulative += get(bucket);
            let _ = writeln!(out, "{BATCH_SIZE}_bucket{{le=\"{upper}\"}} {cumulative}");
        }
        let (count, rows) = self.batches();
        let _ = writeln!(out, "{BATCH_SIZE}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{BATCH_SIZE}_sum {rows}");
        let _ = writeln!(out, "{BATCH_SIZE}_count {count}");
    }
}

fn family(out: &mut String, name: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {kind}", help(name));
}

fn labelled<'a>(
    out: &mut String,
    name: &str,
    label: &str,
    series: impl IntoIterator<Item = (&'a str, &'a AtomicU64)>,
) {
    family(out, name, "counter");
    for (value, counter) in series {
        let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {}", get(counter));
    }
}

/// The HELP line of each family rendered here.
fn help(name: &str) -> &'static str {
    match name {
        CONSUMED => {
            "Records read from the input topics, each once (reads after an abort's rewind count in records_reread_total)."
        }
        REREAD => {
            "Records read again after an aborted transaction rewound the source (or a partition came back)."
        }
        SCORED => "Records scored and committed to the score topic.",
        DEAD_LETTERED => "Records committed to the dead-letter topic, by reason.",
        TRANSACTIONS => "Kafka transactions by outcome (committed, aborted).",
        REBALANCES => {
            "Rebalance callbacks by event: partitions assigned, revoked, or lost (taken without a revocation)."
        }
        INFERENCE_ERRORS => {
            "ONNX Runtime calls that failed (each stops the pipeline without committing what is open)."
        }
        PRODUCERS_REPLACED => {
            "Transactional producers replaced after a commit or abort that could not finish (the new one fences the old)."
        }
        MODEL_SWAPS => {
            "Model cards loaded, verified and warmed while running, that took over scoring."
        }
        MODEL_SWAP_FAILURES => {
            "Model cards that failed to load, verify or warm while running; the model serving kept serving."
        }
        DEAD_LETTER_VALUES_OMITTED => {
            "Dead letters written without the original value because it did not fit kafka.max_message_bytes."
        }
        BATCH_SIZE => "Rows per inference batch.",
        END_TO_END_LATENCY => "Record timestamp to its transaction committed (seconds).",
        STAGE_DURATION => {
            "Time spent per stage, seconds (per record for decrypt/decode, per batch or transaction otherwise)."
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn every_step_has_its_own_slot() {
        for (i, step) in Step::ALL.iter().enumerate() {
            assert_eq!(step.index(), i, "{step:?}");
        }
    }

    #[test]
    fn histograms_render_with_their_stage_labels() {
        let c = Stats::default();
        // The histograms: a stage's label on each series, every stage at 0
        // from the start, one end-to-end latency per committed record.
        c.timed(Step::Commit, std::time::Duration::from_millis(3));
        c.end_to_end([40, 50].map(std::time::Duration::from_millis));
        let mut text = String::new();
        c.render(&mut text);
        let commits = format!("{STAGE_DURATION}_count{{stage=\"commit\"}}");
        assert_eq!(sample(&text, &commits), Some(1.0));
        let decrypts = format!("{STAGE_DURATION}_count{{stage=\"decrypt\"}}");
        assert_eq!(sample(&text, &decrypts), Some(0.0));
        assert_eq!(
            sample(&text, &format!("{END_TO_END_LATENCY}_count")),
            Some(2.0)
        );
        assert_eq!(c.step(Step::Commit).count, 1);
    }

    #[test]
    fn what_the_stages_count_is_what_metrics_renders() {
        let c = Stats::default();
        for first in [true, true, true, false] {
            c.read(first);
        }
        c.committed_transaction(2, [(Reason::DecodeFailed, 1)]);
        c.aborted_transaction();
        c.rebalanced(Rebalance::Lost);
        c.batch_scored(3);
        c.batch_scored(4096);
        c.batch_scored(5000);
        c.inference_failed();
        c.producer_replaced();
        c.producer_replaced();
        c.value_omitted();
        let mut text = String::new();
        c.render(&mut text);
        assert_eq!((c.consumed(), c.reread(), c.committed()), (3, 1, 3));
        assert_eq!(sample(&text, CONSUMED), Some(3.0));
        assert_eq!(sample(&text, REREAD), Some(1.0));
        assert_eq!(sample(&text, SCORED), Some(2.0));
        assert_eq!(
            sample(
                &text,
                &format!("{DEAD_LETTERED}{{reason=\"decode_failed\"}}")
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, &format!("{DEAD_LETTERED}{{reason=\"unknown_key\"}}")),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, &format!("{TRANSACTIONS}{{outcome=\"aborted\"}}")),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, &format!("{REBALANCES}{{event=\"lost\"}}")),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, &format!("{BATCH_SIZE}_bucket{{le=\"2\"}}")),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, &format!("{BATCH_SIZE}_bucket{{le=\"4\"}}")),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, &format!("{BATCH_SIZE}_bucket{{le=\"4096\"}}")),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, &format!("{BATCH_SIZE}_bucket{{le=\"+Inf\"}}")),
            Some(3.0)
        );
        assert_eq!(sample(&text, &format!("{BATCH_SIZE}_sum")), Some(9099.0));
        assert_eq!(c.batches(), (3, 9099));
        assert_eq!(sample(&text, INFERENCE_ERRORS), Some(1.0));
        assert_eq!(sample(&text, PRODUCERS_REPLACED), Some(2.0));
        assert_eq!(sample(&text, DEAD_LETTER_VALUES_OMITTED), Some(1.0));
        // Every family once, each with its HELP and TYPE.
        for name in [
            CONSUMED,
            REREAD,
            SCORED,
            DEAD_LETTERED,
            TRANSACTIONS,
            REBALANCES,
            BATCH_SIZE,
            END_TO_END_LATENCY,
            STAGE_DURATION,
        ] {
            assert_eq!(
                text.matches(&format!("# TYPE {name} ")).count(),
                1,
                "{name}"
            );
        }
    }
}
