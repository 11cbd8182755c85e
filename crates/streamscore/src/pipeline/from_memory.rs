//! The inference half of the pipeline without a broker: feature rows from
//! memory, offered at a set rate, through the same batcher, batch size
//! (fixed or adaptive), fan-out and inference workers as `run`, into a sink
//! that only checks and counts. The GPU machine has no Kafka and no Java:
//! this is how the adaptive size is watched settling on a device there, and
//! how a batching setting is tried on a model without a broker.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use crate::faults::Faults;
use crate::features::FeatureRows;
use crate::inference::worker::WorkerLinks;
use crate::inference::{InferenceError, ModelSession};
use crate::item::{Batch, EventMeta, Item, Outcome, SourceRef};
use crate::telemetry::Stats;

use super::fan::{FanIn, FanOut};
use super::{PipelineError, WorkerLanes, adaptive_size, batcher, spawn, spawn_workers};

/// How often the batch size is sampled for [`MemoryRun::sizes`].
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// The longest run: a measurement, not a service (and `Instant` arithmetic
/// stays far from overflow).
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// What is offered to the batcher.
#[derive(Debug, Clone, Copy)]
pub struct MemoryFeed<'a> {
    /// One feature row each (as `FeatureRows` holds one record's), offered in
    /// turn, from the first again after the last.
    pub rows: &'a [FeatureRows],
    /// Rows offered per second, evenly spaced; 0 offers them as fast as the
    /// batcher and the workers take them (the back-pressure of `run`).
    pub rows_per_second: f64,
    pub duration: Duration,
}

/// What a run did. The figures of [`Settled`] are over its second half,
/// when an adaptive size has had time to find its level.
#[derive(Debug, Clone)]
pub struct MemoryRun {
    /// Rows given to the batcher; every one of them came back scored, in
    /// order (the run fails otherwise).
    pub rows: u64,
    pub batches: u64,
    pub elapsed: Duration,
    /// The size at which the batcher closed batches, from the start, every 50 ms.
    pub sizes: Vec<(Duration, usize)>,
    pub settled: Settled,
}

#[derive(Debug, Clone, Default)]
pub struct Settled {
    /// Median of the sampled batch sizes.
    pub batch_size: usize,
    pub rows_per_batch: f64,
    pub rows_per_second: f64,
    /// p99 of a batch's fill + inference: what the adaptive size is tuned on.
    pub fill_and_inference_p99: Duration,
    /// p99 of a batch's first row's wait, from the batch opening until its
    /// scores are back: fill, queue and inference, the longest any row waited.
    pub first_row_p99: Duration,
    pub inference_p50: Duration,
    pub inference_p99: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum MemoryRunError {
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Inference(#[from] InferenceError),
    #[error("no rows to offer, or a row of {got} features where the model takes {width}")]
    Rows { width: usize, got: usize },
    #[error("no inference session to run")]
    NoSessions,
    #[error(
        "an offered rate of {rows_per_second} rows/s for {duration:?} cannot be run: 0 (as taken) or at least 1 row/s, for at most a day"
    )]
    Feed {
        rows_per_second: f64,
        duration: Duration,
    },
    #[error(
        "row {got} came back where row {want} was due: the batches lost, repeated or reordered rows"
    )]
    Order { want: i64, got: i64 },
    #[error("a batch of {rows} rows came back with {scores} scores")]
    Unscored { rows: usize, scores: usize },
    #[error("{given} rows given to the batcher, {back} came back scored")]
    Missing { given: u64, back: u64 },
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
}

/// One batch as the sink saw it.
#[derive(Debug, Clone, Copy)]
struct Seen {
    at: Instant,
    rows: usize,
    fill: Duration,
    inference: Duration,
    first_row: Duration,
}

/// Runs the batcher and one inference worker per session on `feed` for its
/// duration, then drains what is batched and checks that every row came
/// back scored exactly once, in the order offered.
pub fn score_from_memory(
    settings: &crate::Settings,
    sessions: Vec<ModelSession>,
    feed: MemoryFeed<'_>,
) -> Result<MemoryRun, MemoryRunError> {
    settings.validate().map_err(PipelineError::from)?;
    let rate = feed.rows_per_second;
    if !(rate == 0.0 || (rate.is_finite() && rate >= 1.0)) || feed.duration > MAX_DURATION {
        return Err(MemoryRunError::Feed {
            rows_per_second: rate,
            duration: feed.duration,
        });
    }
    let width = (sessions.first().map(ModelSession::width)).ok_or(MemoryRunError::NoSessions)?;
    if let Some(row) = (feed.rows.iter()).find(|r| r.numbers.len() != width) {
        return Err(MemoryRunError::Rows {
            width,
            got: row.numbers.len(),
        });
    }
    if feed.rows.is_empty() {
        return Err(MemoryRunError::Rows { width, got: 0 });
    }
    let adaptive = adaptive_size(settings);
    let max_batch = settings.batching.max_batch_size as usize;
    let lanes = WorkerLanes::new(sessions, None);
    let links = WorkerLinks {
        adaptive: adaptive.clone(),
        failed: Arc::new(AtomicBool::new(false)),
        faults: Arc::new(Faults::default()),
        stats: Arc::new(Stats::default()),
    };
    let workers = spawn_workers(lanes.workers, &links)?;
    let mut fan_in = FanIn::new(lanes.outputs);
    let sink = spawn("memory-sink".into(), move || check_and_count(&mut fan_in))?;
    let mut source = Source {
        batcher: batcher(settings, adaptive.clone(), width),
        out: FanOut::new(lanes.inputs),
        topic: Arc::from("memory"),
        next: 0,
    };
    let started = Instant::now();
    let sizes = source.offer(&feed, started, || {
        adaptive.as_ref().map_or(max_batch, |a| a.rows())
    });
    let given = source.next;
    if let Some(batch) = source.batcher.flush() {
        source.out.send(batch).ok();
    }
    source.out.close();
    for worker in workers {
        worker
            .join()
            .map_err(|_| MemoryRunError::Panicked("inference"))??;
    }
    let seen = sink
        .join()
        .map_err(|_| MemoryRunError::Panicked("sink"))??;
    let back: u64 = seen.iter().map(|s| s.rows as u64).sum();
    if back != given {
        return Err(MemoryRunError::Missing { given, back });
    }
    Ok(MemoryRun {
        rows: given,
        batches: seen.len() as u64,
        elapsed: started.elapsed(),
        settled: settled(&seen, &sizes, started + feed.duration / 2),
        sizes,
    })
}

/// The source stage of `run` without Kafka: rows in, batches out.
struct Source {
    batcher: crate::batcher::Batcher,
    out: FanOut,
    topic: Arc<str>,
    /// The next row's number, its "offset".
    next: u64,
}

impl Source {
    /// Offers the feed's rows on time for its duration, sampling the batch
    /// size; returns the samples. Ends early if the workers stop (their
    /// error is reported when they are joined).
    fn offer(
        &mut self,
        feed: &MemoryFeed<'_>,
        started: Instant,
        size_now: impl Fn() -> usize,
    ) -> Vec<(Duration, usize)> {
        let paced = feed.rows_per_second > 0.0;
        let mut sizes = vec![(Duration::ZERO, size_now())];
        let mut next_sample = started + SAMPLE_EVERY;
        loop {
            let now = Instant::now();
            let elapsed = now - started;
            if elapsed >= feed.duration {
                return sizes;
            }
            if now >= next_sample {
                sizes.push((elapsed, size_now()));
                // After a blocked send, the next sample is a period on, not
                // a burst of catching up.
                next_sample = now + SAMPLE_EVERY;
            }
            // At most a batch's worth before the clock is read again: as
            // fast as taken, the send blocks; paced and behind, the time to
            // stop and to sample still comes round.
            let burst = self.next + self.batcher.max_rows() as u64;
            let due = if paced {
                burst.min((elapsed.as_secs_f64() * feed.rows_per_second) as u64)
            } else {
                burst
            };
            if self.offer_until(due, feed.rows).is_err() || self.tick().is_err() {
                return sizes;
            }
            if paced && self.next >= due {
                let next_row = started
                    + Duration::from_secs_f64((self.next + 1) as f64 / feed.rows_per_second);
                let wake = (self.batcher.deadline().into_iter())
                    .chain([next_row, next_sample, started + feed.duration])
                    .min()
                    .unwrap_or(next_row);
                std::thread::sleep(wake.saturating_duration_since(Instant::now()));
            }
        }
    }

    fn offer_until(&mut self, due: u64, rows: &[FeatureRows]) -> Result<(), super::fan::Closed> {
        while self.next < due {
            let row = &rows[(self.next % rows.len() as u64) as usize];
            let item = Item {
                source: SourceRef {
                    topic: self.topic.clone(),
                    partition: 0,
                    offset: self.next as i64,
                },
                key: None,
                timestamp_ms: 0,
                outcome: Outcome::Row(EventMeta {
                    event_id: String::new(),
                    event_time: 0,
                }),
            };
            self.next += 1;
            if let Some(batch) = self.batcher.push(item, Some(row), 0, Instant::now()) {
                self.out.send(batch)?;
            }
        }
        Ok(())
    }

    fn tick(&mut self) -> Result<(), super::fan::Closed> {
        match self.batcher.poll(Instant::now()) {
            Some(batch) => self.out.send(batch),
            None => Ok(()),
        }
    }
}

/// The sink's end: every row once, in order, with its score.
fn check_and_count(fan_in: &mut FanIn) -> Result<Vec<Seen>, MemoryRunError> {
    let mut seen = Vec::new();
    let mut want = 0i64;
    loop {
        let batch: Batch = match fan_in.recv_timeout(Duration::from_secs(1)) {
            Ok(batch) => batch,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return Ok(seen),
        };
        let at = Instant::now();
        for item in &batch.items {
            if item.source.offset != want {
                return Err(MemoryRunError::Order {
                    want,
                    got: item.source.offset,
                });
            }
            want += 1;
        }
        if batch.scores.len() != batch.rows || batch.items.len() != batch.rows {
            return Err(MemoryRunError::Unscored {
                rows: batch.items.len(),
                scores: batch.scores.len(),
            });
        }
        seen.push(Seen {
            at,
            rows: batch.rows,
            fill: batch.closed_at - batch.opened_at,
            inference: batch.inference,
            first_row: at - batch.opened_at,
        });
    }
}

fn settled(seen: &[Seen], sizes: &[(Duration, usize)], from: Instant) -> Settled {
    let late: Vec<&Seen> = seen.iter().filter(|s| s.at >= from).collect();
    let Some(first) = late.first() else {
        return Settled::default();
    };
    let rows: usize = late.iter().map(|s| s.rows).sum();
    let span = late.last().map_or(Duration::ZERO, |l| l.at - first.at);
    let half = sizes.last().map_or(Duration::ZERO, |l| l.0 / 2);
    let mut late_sizes: Vec<usize> = (sizes.iter())
        .filter(|(t, _)| *t >= half)
        .map(|s| s.1)
        .collect();
    late_sizes.sort_unstable();
    let quantile = |values: Vec<Duration>, q: f64| nearest_rank(values, q);
    Settled {
        batch_size: late_sizes.get(late_sizes.len() / 2).copied().unwrap_or(0),
        rows_per_batch: rows as f64 / late.len() as f64,
        rows_per_second: if span.is_zero() {
            0.0
        } else {
            (rows - first.rows) as f64 / span.as_secs_f64()
        },
        fill_and_inference_p99: quantile(late.iter().map(|s| s.fill + s.inference).collect(), 0.99),
        first_row_p99: quantile(late.iter().map(|s| s.first_row).collect(), 0.99),
        inference_p50: quantile(late.iter().map(|s| s.inference).collect(), 0.5),
        inference_p99: quantile(late.iter().map(|s| s.inference).collect(), 0.99),
    }
}

fn nearest_rank(mut values: Vec<Duration>, q: f64) -> Duration {
    values.sort_unstable();
    let rank = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len().max(1));
    values.get(rank - 1).copied().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::sync_channel;

    use super::*;

    fn batch_of(offsets: &[i64]) -> Batch {
        let mut batch = Batch::barrier_only(
            0,
            crate::item::Barrier {
                done: sync_channel(1).0,
            },
        );
        batch.barrier = None;
        for &offset in offsets {
            batch.items.push(Item {
                source: SourceRef {
                    topic: Arc::from("memory"),
                    partition: 0,
                    offset,
                },
                key: None,
                timestamp_ms: 0,
                outcome: Outcome::Row(EventMeta {
                    event_id: String::new(),
                    event_time: 0,
                }),
            });
            batch.scores.push(0.5);
        }
        batch.rows = offsets.len();
        batch
    }

    fn checked(batches: Vec<Batch>) -> Result<Vec<Seen>, MemoryRunError> {
        let (tx, rx) = sync_channel(batches.len().max(1));
        for b in batches {
            tx.send(b).unwrap();
        }
        drop(tx);
        check_and_count(&mut FanIn::new(vec![rx]))
    }

    #[test]
    fn the_sink_takes_every_row_once_in_order_and_nothing_else() {
        let seen = checked(vec![batch_of(&[0, 1]), batch_of(&[2])]).unwrap();
        assert_eq!(seen.iter().map(|s| s.rows).sum::<usize>(), 3);
        let gap = checked(vec![batch_of(&[0, 1]), batch_of(&[3])]);
        assert!(
            matches!(gap, Err(MemoryRunError::Order { want: 2, got: 3 })),
            "{gap:?}"
        );
        let again = checked(vec![batch_of(&[0, 1]), batch_of(&[1])]);
        assert!(
            matches!(again, Err(MemoryRunError::Order { want: 2, got: 1 })),
            "{again:?}"
        );
        let mut unscored = batch_of(&[0, 1]);
        unscored.scores.pop();
        let unscored = checked(vec![unscored]);
        assert!(
            matches!(
                unscored,
                Err(MemoryRunError::Unscored { rows: 2, scores: 1 })
            ),
            "{unscored:?}"
        );
    }

    #[test]
    fn nearest_rank_takes_the_value_at_or_above_the_quantile() {
        let ms = |n: u64| Duration::from_millis(n);
        let values: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(nearest_rank(values.clone(), 0.99), ms(99));
        assert_eq!(nearest_rank(values, 0.5), ms(50));
        assert_eq!(nearest_rank(vec![ms(7)], 0.99), ms(7));
        assert_eq!(nearest_rank(Vec::new(), 0.99), Duration::ZERO);
    }
}
