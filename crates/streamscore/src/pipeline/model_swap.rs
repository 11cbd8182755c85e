//! Hot swap: a new model card loaded, its hash verified and its sessions
//! warmed beside the model serving, then taking over at a batch boundary
//! that the sink makes a transaction boundary, with no restart and no
//! record lost or scored twice.
//!
//! The batcher stamps every batch it opens with the release current then;
//! batches reach the workers and the sink in read order, so one batch is the
//! first of the new release for every stage at once. A worker swaps in a
//! warm session of that release before scoring it (old sessions are dropped
//! then); the sink commits the open transaction before it writes the first
//! batch of another release, so a transaction holds one model's scores, and
//! every score names the model that made it.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::codec::score::ModelIdentity;
use crate::inference::{Device, ModelSession};
use crate::model::{ModelCard, VerifiedModel};
use crate::telemetry::metrics::MODEL_INFO;

/// A model ready to score: who it is, and (for a release loaded while
/// running) one warm session per worker, taken at its first batch.
pub(crate) struct ModelRelease {
    pub(crate) epoch: u64,
    pub(crate) identity: ModelIdentity,
    pub(crate) card: ModelCard,
    pub(crate) device: Device,
    sessions: Mutex<Vec<ModelSession>>,
}

impl std::fmt::Debug for ModelRelease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelRelease")
            .field("epoch", &self.epoch)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl ModelRelease {
    pub(crate) fn new(
        epoch: u64,
        model: &VerifiedModel,
        threshold: Option<f64>,
        device: Device,
        sessions: Vec<ModelSession>,
    ) -> Self {
        let card = model.card.clone();
        Self {
            epoch,
            identity: ModelIdentity {
                name: card.name.clone(),
                version: card.version.clone(),
                sha256: card.sha256.clone(),
                threshold: threshold.unwrap_or(card.threshold),
            },
            card,
            device,
            sessions: Mutex::new(sessions),
        }
    }

    /// One of its warm sessions, for a worker switching to it.
    pub(crate) fn take_session(&self) -> Option<ModelSession> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop()
    }

    /// `model_info`: 1 while it serves, 0 once replaced.
    pub(crate) fn publish_info(&self, serving: bool) {
        let card = &self.card;
        metrics::gauge!(MODEL_INFO, "name" => card.name.clone(), "version" => card.version.clone(),
            "sha256" => card.sha256.clone(), "device" => self.device.as_str())
        .set(if serving { 1.0 } else { 0.0 });
    }
}

/// The release the batcher stamps new batches with.
pub(crate) struct ModelSwitch {
    current: ArcSwap<ModelRelease>,
    /// One load at a time: two reloads at once would warm two releases.
    loading: Mutex<()>,
}

impl ModelSwitch {
    pub(crate) fn new(first: ModelRelease) -> Self {
        Self {
            current: ArcSwap::from_pointee(first),
            loading: Mutex::new(()),
        }
    }

    pub(crate) fn current(&self) -> Arc<ModelRelease> {
        self.current.load_full()
    }

    /// Held while a release is loaded.
    pub(crate) fn loading(&self) -> std::sync::MutexGuard<'_, ()> {
        self.loading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes `next` the release of every batch opened from now on.
    pub(crate) fn publish(&self, next: ModelRelease) {
        let next = Arc::new(next);
        let previous = self.current.swap(next.clone());
        previous.publish_info(false);
        next.publish_info(true);
    }
}

/// What a swap did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSwap {
    /// The card names the model serving, with the same threshold: nothing to do.
    Unchanged,
    /// The card's model serves every batch opened from now on.
    Swapped {
        name: String,
        version: String,
        sha256: String,
    },
}

/// Loads `model.card` again and swaps its model in; a handle apart from the
/// pipeline, so a signal handler or a file watch can run it on a thread of
/// its own (loading and warming take a while).
#[derive(Clone)]
pub struct ModelSwapper {
    pub(crate) models: Arc<ModelSwitch>,
    pub(crate) settings: Arc<crate::config::Settings>,
    pub(crate) stats: Arc<crate::telemetry::Stats>,
}

impl ModelSwapper {
    /// A card that fails to load, verify or warm (or that changes the
    /// features) leaves the model serving, with an error line and
    /// `model_swap_failures_total`; the error is returned too.
    pub fn swap(&self) -> Result<ModelSwap, super::PipelineError> {
        let _one_at_a_time = self.models.loading();
        let current = self.models.current();
        let outcome = self.load(&current);
        match &outcome {
            Ok(ModelSwap::Swapped {
                name,
                version,
                sha256,
            }) => {
                self.stats.model_swapped();
                tracing::info!(
                    from = %format!("{} {}", current.identity.name, current.identity.version),
                    to = %format!("{name} {version}"), sha256 = %sha256,
                    "model swapped: the new model scores every batch from the next transaction on"
                );
            }
            Ok(ModelSwap::Unchanged) => {
                tracing::info!(model = %current.identity.name, version = %current.identity.version,
                    "model card unchanged; the model serving stays");
            }
            Err(e) => {
                self.stats.model_swap_failed();
                tracing::error!(error = %e, model = %current.identity.name, version = %current.identity.version,
                    "model swap failed; the model serving stays");
            }
        }
        outcome
    }

    fn load(&self, current: &ModelRelease) -> Result<ModelSwap, super::PipelineError> {
        let model = VerifiedModel::load(&self.settings.model.card)?;
        let threshold = self
            .settings
            .model
            .threshold
            .unwrap_or(model.card.threshold);
        if model.card.sha256 == current.card.sha256
            && model.card.name == current.card.name
            && model.card.version == current.card.version
            && threshold == current.identity.threshold
        {
            return Ok(ModelSwap::Unchanged);
        }
        same_features(&current.card, &model.card).map_err(super::PipelineError::SwapFeatures)?;
        let sessions = super::prepare::open_sessions(&self.settings, &model)?;
        let device = sessions.first().map_or(Device::Cpu, ModelSession::device);
        let next = ModelRelease::new(
            current.epoch + 1,
            &model,
            self.settings.model.threshold,
            device,
            sessions,
        );
        let swapped = ModelSwap::Swapped {
            name: next.identity.name.clone(),
            version: next.identity.version.clone(),
            sha256: next.identity.sha256.clone(),
        };
        self.models.publish(next);
        Ok(swapped)
    }
}

/// A swap keeps the feature row the source builds: the same features, read
/// from the same fields, with the same types, in the same order. The graph
/// behind them (its inputs, its output) may change.
pub(crate) fn same_features(current: &ModelCard, next: &ModelCard) -> Result<(), String> {
    let row = |card: &ModelCard| {
        card.features
            .iter()
            .map(|f| (f.name.clone(), f.field.clone(), f.is_text()))
            .collect::<Vec<_>>()
    };
    let (now, then) = (row(current), row(next));
    if now == then {
        return Ok(());
    }
    let differs = now
        .iter()
        .zip(&then)
        .position(|(a, b)| a != b)
        .unwrap_or(now.len().min(then.len()));
    Err(format!(
        "{} features against {}, first different at position {}: {} against {}",
        then.len(),
        now.len(),
        differs + 1,
        then.get(differs)
            .map_or("none".into(), |f| format!("{:?} from {:?}", f.0, f.1)),
        now.get(differs)
            .map_or("none".into(), |f| format!("{:?} from {:?}", f.0, f.1)),
    ))
}
