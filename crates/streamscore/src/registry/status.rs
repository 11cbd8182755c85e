//! Whether the schema registry answers, as /readyz and /metrics say it, and
//! the stop that ends a wait for it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::telemetry::metrics::SCHEMA_REGISTRY_UP;

#[derive(Debug)]
pub struct RegistryStatus {
    reachable: AtomicBool,
    /// Threads waiting on the registry now, for a schema not cached.
    waiting: AtomicUsize,
    /// Set when the pipeline stops: a wait ends at once.
    stopping: AtomicBool,
    /// Set when a wait reached max_wait: the processor stops, and other
    /// records waiting for a schema give up at once rather than wait again.
    gave_up: AtomicBool,
    up: metrics::Gauge,
}

impl Default for RegistryStatus {
    fn default() -> Self {
        let up = metrics::gauge!(SCHEMA_REGISTRY_UP);
        up.set(1.0);
        Self {
            reachable: AtomicBool::new(true),
            waiting: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            gave_up: AtomicBool::new(false),
            up,
        }
    }
}

impl RegistryStatus {
    /// False from a request that got no answer until one that did.
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// Whether records wait on the registry now: the source stage is held
    /// by it, not stuck.
    pub fn waiting(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
    }

    /// Ends every wait for the registry (the pipeline is stopping).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    pub(crate) fn give_up(&self) {
        self.gave_up.store(true, Ordering::Relaxed);
    }

    pub(crate) fn given_up(&self) -> bool {
        self.gave_up.load(Ordering::Relaxed)
    }

    pub(crate) fn answered(&self) {
        if !self.reachable.swap(true, Ordering::Relaxed) {
            self.up.set(1.0);
            tracing::info!("the schema registry answers again");
        }
    }

    pub(crate) fn unanswered(&self) {
        if self.reachable.swap(false, Ordering::Relaxed) {
            self.up.set(0.0);
        }
    }

    /// Counts the caller as waiting until the guard drops.
    pub(crate) fn wait(&self) -> WaitGuard<'_> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        WaitGuard(self)
    }
}

pub(crate) struct WaitGuard<'a>(&'a RegistryStatus);

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}
