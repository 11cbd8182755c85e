//! The fan-out of batches to the inference workers and the fan-in of their
//! results, in one order: the source sends round-robin, the sink reads
//! round-robin, so records reach the sink in consumption order however many
//! workers score them side by side.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::Duration;

use crate::item::Batch;

/// The source's end: sends batches round-robin to the workers.
pub(crate) struct FanOut {
    senders: Vec<SyncSender<Batch>>,
    next: usize,
}

/// The downstream stages are gone (they stopped on an error of their own).
#[derive(Debug)]
pub(crate) struct Closed;

impl FanOut {
    pub(crate) fn new(senders: Vec<SyncSender<Batch>>) -> Self {
        Self { senders, next: 0 }
    }

    /// Blocks while the worker's queue is full: this is the back-pressure that
    /// stops consumption when inference or the sink cannot keep up.
    pub(crate) fn send(&mut self, batch: Batch) -> Result<(), Closed> {
        let n = self.senders.len();
        let sender = self.senders.get(self.next % n.max(1)).ok_or(Closed)?;
        self.next = (self.next + 1) % n;
        sender.send(batch).map_err(|_| Closed)
    }

    /// Hangs up on the workers, so they drain, stop, and let the sink finish.
    pub(crate) fn close(&mut self) {
        self.senders.clear();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.senders.is_empty()
    }
}

/// The sink's end: reads the workers' results in the order [`FanOut`] sent them.
pub(crate) struct FanIn {
    receivers: Vec<Receiver<Batch>>,
    next: usize,
}

impl FanIn {
    pub(crate) fn new(receivers: Vec<Receiver<Batch>>) -> Self {
        Self { receivers, next: 0 }
    }

    /// The next batch in order, waiting at most `wait` for it. Disconnected
    /// once the worker whose turn it is has stopped, after what it sent is
    /// read: at shutdown the workers stop after the source hangs up; a worker
    /// that failed stops early, with the failure flagged for the sink, which
    /// then aborts rather than commits.
    pub(crate) fn recv_timeout(&mut self, wait: Duration) -> Result<Batch, RecvTimeoutError> {
        let receiver = (self.receivers.get(self.next)).ok_or(RecvTimeoutError::Disconnected)?;
        let batch = receiver.recv_timeout(wait)?;
        self.next = (self.next + 1) % self.receivers.len();
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::sync_channel;

    use super::*;

    fn batch(generation: u64) -> Batch {
        let mut b = Batch::barrier_only(
            generation,
            crate::item::Barrier {
                done: sync_channel(1).0,
            },
        );
        b.barrier = None;
        b
    }

    #[test]
    fn batches_come_out_in_the_order_they_went_in() {
        let (mut senders, mut receivers) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            let (tx, rx) = sync_channel(8);
            senders.push(tx);
            receivers.push(rx);
        }
        let mut out = FanOut::new(senders);
        let mut fan_in = FanIn::new(receivers);
        for g in 0..7 {
            out.send(batch(g)).unwrap();
        }
        let order: Vec<u64> = (0..7)
            .map(|_| fan_in.recv_timeout(Duration::ZERO).unwrap().generation)
            .collect();
        assert_eq!(order, (0..7).collect::<Vec<_>>());
        assert_eq!(
            fan_in.recv_timeout(Duration::ZERO).err(),
            Some(RecvTimeoutError::Timeout)
        );
        out.close();
        assert!(out.is_closed());
        assert!(out.send(batch(9)).is_err());
        assert_eq!(
            fan_in.recv_timeout(Duration::ZERO).err(),
            Some(RecvTimeoutError::Disconnected)
        );
    }
}
