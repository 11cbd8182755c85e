//! Micro-batching: rows wait until the batch is full or its oldest row has
//! waited `max_delay`, whichever comes first. Dead letters ride along in
//! order, so the sink sees records exactly in consumption order. Rows from
//! every assigned partition share a batch; order within a partition is
//! consumption order, which every later stage keeps.

pub(crate) mod adaptive;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::features::FeatureRows;
use crate::item::{Batch, Item};
use crate::pipeline::model_swap::ModelSwitch;
pub(crate) use adaptive::AdaptiveSize;

/// Where the size at which a batch closes comes from.
#[derive(Debug, Clone)]
pub(crate) enum BatchSize {
    Fixed(usize),
    /// Set by the inference workers' measurements, read at every push.
    Adaptive(Arc<AdaptiveSize>),
}

impl BatchSize {
    pub(crate) fn rows(&self) -> usize {
        match self {
            BatchSize::Fixed(n) => (*n).max(1),
            BatchSize::Adaptive(a) => a.rows(),
        }
    }

    /// Largest size it can take: what the feature buffer is sized for.
    fn max_rows(&self, max: usize) -> usize {
        match self {
            BatchSize::Fixed(n) => (*n).max(1),
            BatchSize::Adaptive(_) => max.max(1),
        }
    }
}

pub(crate) struct Batcher {
    size: BatchSize,
    max_rows: usize,
    max_delay: Duration,
    width: usize,
    open: Option<Batch>,
    /// Stamps each batch with the release that scores it.
    models: Option<Arc<ModelSwitch>>,
}

impl Batcher {
    /// `max_rows` bounds every batch (and, times four, the items of a batch of dead letters).
    pub(crate) fn new(size: BatchSize, max_rows: usize, max_delay: Duration, width: usize) -> Self {
        Self {
            max_rows: size.max_rows(max_rows),
            size,
            max_delay,
            width,
            open: None,
            models: None,
        }
    }

    /// Batches opened from now on carry the switch's current release.
    pub(crate) fn with_models(mut self, models: Arc<ModelSwitch>) -> Self {
        self.models = Some(models);
        self
    }

    /// Adds an item (with its features if it is a row); returns a batch when one is full.
    pub(crate) fn push(
        &mut self,
        item: Item,
        features: Option<&FeatureRows>,
        generation: u64,
        now: Instant,
    ) -> Option<Batch> {
        let rows = self.size.rows().min(self.max_rows);
        let batch = self.open.get_or_insert_with(|| Batch {
            generation,
            items: Vec::new(),
            features: FeatureRows {
                numbers: Vec::with_capacity(rows * self.width),
                texts: Vec::new(),
            },
            rows: 0,
            scores: Vec::new(),
            shadow_scores: Vec::new(),
            opened_at: now,
            model: self.models.as_ref().map(|m| m.current()),
            closed_at: now,
            inference: Duration::ZERO,
            barrier: None,
        });
        if let Some(row) = features {
            batch.features.extend_from(row);
            batch.rows += 1;
        }
        batch.items.push(item);
        // Dead letters take no row, but must not pile up without bound either.
        if batch.rows >= rows || batch.items.len() >= self.max_rows * 4 {
            return self.close(now);
        }
        None
    }

    /// The most rows a batch can take.
    pub(crate) fn max_rows(&self) -> usize {
        self.max_rows
    }

    /// When the open batch is due, if one is open.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.open.as_ref().map(|b| b.opened_at + self.max_delay)
    }

    /// Returns the open batch if its delay has passed.
    pub(crate) fn poll(&mut self, now: Instant) -> Option<Batch> {
        match self.deadline() {
            Some(due) if due <= now => self.close(now),
            _ => None,
        }
    }

    /// Returns the open batch now, whatever its size.
    pub(crate) fn flush(&mut self) -> Option<Batch> {
        self.close(Instant::now())
    }

    fn close(&mut self, now: Instant) -> Option<Batch> {
        let mut batch = self.open.take()?;
        batch.closed_at = now;
        Some(batch)
    }

    /// Drops the open batch (its records will be read again after a rewind).
    pub(crate) fn discard(&mut self) {
        self.open = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nums(values: &[f32]) -> FeatureRows {
        FeatureRows {
            numbers: values.to_vec(),
            texts: Vec::new(),
        }
    }
    use crate::dead_letter::{Reason, Rejection};
    use crate::item::{EventMeta, Outcome, SourceRef};

    fn item(offset: i64, dead: bool) -> Item {
        Item {
            source: SourceRef {
                topic: "t".into(),
                partition: 0,
                offset,
            },
            key: None,
            timestamp_ms: 0,
            outcome: if dead {
                Outcome::Dead {
                    rejection: Rejection {
                        reason: Reason::DecodeFailed,
                        message: String::new(),
                    },
                    value: None,
                }
            } else {
                Outcome::Row(EventMeta {
                    event_id: offset.to_string(),
                    event_time: 0,
                })
            },
        }
    }

    #[test]
    fn full_batch_is_returned_with_rows_in_order() {
        let t0 = Instant::now();
        let mut b = Batcher::new(BatchSize::Fixed(3), 3, Duration::from_millis(10), 2);
        assert!(
            b.push(item(0, false), Some(&nums(&[0.0, 0.5])), 1, t0)
                .is_none()
        );
        assert!(b.push(item(1, true), None, 1, t0).is_none());
        assert!(
            b.push(item(2, false), Some(&nums(&[2.0, 2.5])), 1, t0)
                .is_none()
        );
        let batch = b
            .push(item(3, false), Some(&nums(&[3.0, 3.5])), 1, t0)
            .unwrap();
        assert_eq!(batch.rows, 3);
        assert_eq!(batch.features.numbers, vec![0.0, 0.5, 2.0, 2.5, 3.0, 3.5]);
        let offsets: Vec<i64> = batch.items.iter().map(|i| i.source.offset).collect();
        assert_eq!(offsets, vec![0, 1, 2, 3]);
        assert!(b.flush().is_none());
    }

    #[test]
    fn batch_is_due_after_max_delay_from_its_first_row() {
        let t0 = Instant::now();
        let mut b = Batcher::new(BatchSize::Fixed(100), 100, Duration::from_millis(10), 1);
        assert!(b.deadline().is_none());
        b.push(item(0, false), Some(&nums(&[1.0])), 1, t0);
        b.push(
            item(1, false),
            Some(&nums(&[1.0])),
            1,
            t0 + Duration::from_millis(8),
        );
        assert_eq!(b.deadline(), Some(t0 + Duration::from_millis(10)));
        assert!(b.poll(t0 + Duration::from_millis(9)).is_none());
        assert_eq!(b.poll(t0 + Duration::from_millis(10)).unwrap().rows, 2);
    }

    #[test]
    fn adaptive_size_is_read_at_every_push() {
        let t0 = Instant::now();
        let size = Arc::new(AdaptiveSize::new(2, 8, Duration::from_millis(20)));
        let mut b = Batcher::new(
            BatchSize::Adaptive(size.clone()),
            8,
            Duration::from_secs(1),
            1,
        );
        assert!(b.push(item(0, false), Some(&nums(&[0.0])), 1, t0).is_none());
        assert_eq!(
            b.push(item(1, false), Some(&nums(&[1.0])), 1, t0)
                .unwrap()
                .rows,
            2
        );
        // Fast, full batches: the size grows, and the next batch is bigger.
        for _ in 0..adaptive::WINDOW {
            size.observe(2, Duration::from_millis(1));
        }
        assert_eq!(size.rows(), 3);
        for i in 2..4 {
            assert!(b.push(item(i, false), Some(&nums(&[0.0])), 1, t0).is_none());
        }
        assert_eq!(
            b.push(item(4, false), Some(&nums(&[0.0])), 1, t0)
                .unwrap()
                .rows,
            3
        );
    }

    #[test]
    fn dead_letters_alone_are_bounded() {
        let t0 = Instant::now();
        let mut b = Batcher::new(BatchSize::Fixed(2), 2, Duration::from_secs(1), 1);
        let mut flushed = None;
        for i in 0..8 {
            flushed = flushed.or(b.push(item(i, true), None, 1, t0));
        }
        let batch = flushed.expect("8 dead letters must close a batch of max 2 rows");
        assert_eq!((batch.items.len(), batch.rows), (8, 0));
    }
}
