//! /metrics, /healthz and /readyz.
//!
//! - `/healthz` (liveness): 200 while the process serves HTTP, every
//!   pipeline stage's loop has turned within `telemetry.stall_timeout_ms`,
//!   the consumer's group membership has not been rebalancing for longer
//!   than that while a broker answers (waiting for a broker is not stuck:
//!   a restart would not bring it back), and records that wait for a commit
//!   have seen one within that time (loops that turn while every
//!   transaction aborts are not progress); 503 when one is wedged, so the orchestrator restarts it (the
//!   restart resumes from the last commit). Before the pipeline starts (model
//!   loading, warm-up) it is 200: starting is not being stuck.
//! - `/readyz` (readiness): 200 once the model is loaded and warmed up at
//!   every batch size, the pipeline runs, and a broker answers; partitions
//!   assigned or still waiting for assignment are both ready (an idle member
//!   of a group with fewer partitions than replicas is healthy). The body's
//!   `assigned_partitions` and `group_state` follow the rebalance callbacks
//!   as they happen, and an assignment proves a broker answers. 503 while
//!   starting, while a broker is unreachable, while the schema registry
//!   (`input.schema_registry`) does not answer, while records have waited
//!   longer than `kafka.request_timeout_ms` for a commit (the output is
//!   blocked; the body says why), and from the moment shutdown begins. Records waiting on the registry for a writer schema are not a
//!   wedge for /healthz: they wait at most `input.schema_registry.max_wait_ms`,
//!   then the processor stops.
//!
//! Both answer a JSON body with the signals behind the answer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

use super::Stats;
use super::signals::PipelineSignals;
use crate::keywatch::KeyringStatus;

/// What the endpoints answer from; the pipeline attaches its signals once started.
#[derive(Debug)]
pub struct Health {
    /// Model warmed and pipeline running; cleared when shutdown begins.
    pub ready: AtomicBool,
    signals: OnceLock<Arc<PipelineSignals>>,
    stall_limit: Duration,
    /// Records that waited longer than this for a commit make the processor
    /// unready (output blocked: too few in-sync replicas, a coordinator
    /// gone); a wait is not a wedge, so liveness keeps its own limit.
    commit_wait_limit: Duration,
    /// Why the processor is stopping on an error: neither alive nor ready
    /// while it lingers to be scraped.
    failed: OnceLock<String>,
    /// What the last liveness probe answered: a change is logged, so the
    /// log says why the orchestrator restarted the processor.
    was_alive: AtomicBool,
}

impl Health {
    pub fn new(stall_limit: Duration) -> Self {
        Self {
            ready: AtomicBool::new(false),
            signals: OnceLock::new(),
            stall_limit,
            commit_wait_limit: Duration::from_secs(30),
            failed: OnceLock::new(),
            was_alive: AtomicBool::new(true),
        }
    }

    /// Unready once records have waited `limit` for a commit (the processor
    /// sets its `kafka.request_timeout_ms`).
    pub fn with_commit_wait_limit(mut self, limit: Duration) -> Self {
        self.commit_wait_limit = limit;
        self
    }

    /// The processor stops on this error: /healthz and /readyz answer 503
    /// with it from now on.
    pub fn fail(&self, reason: String) {
        self.ready.store(false, Ordering::Relaxed);
        let _ = self.failed.set(reason);
    }

    pub fn attach(&self, signals: Arc<PipelineSignals>) {
        let _ = self.signals.set(signals);
    }

    /// Liveness: (alive, body).
    pub fn liveness(&self) -> (bool, serde_json::Value) {
        if let Some(reason) = self.failed.get() {
            return (
                false,
                serde_json::json!({ "alive": false, "failed": reason }),
            );
        }
        let Some(signals) = self.signals.get() else {
            return (
                true,
                serde_json::json!({ "alive": true, "pipeline": "starting" }),
            );
        };
        let view = signals.view();
        let alive = view.longest_stall() <= self.stall_limit;
        let body = serde_json::json!({
            "alive": alive,
            "stall_limit_seconds": self.stall_limit.as_secs_f64(),
            "source_idle_seconds": view.source_idle_seconds,
            "sink_idle_seconds": view.sink_idle_seconds,
            "group_state": view.group_state,
            "group_unsteady_seconds": view.group_unsteady_seconds,
            "progress_stall_seconds": view.progress_stall_seconds,
            "last_commit_age_seconds": view.last_commit_age_seconds,
            "last_commit_unix_seconds": view.last_commit_unix_seconds,
            "consecutive_aborts": view.consecutive_aborts,
            "schema_registry_waiting": view.schema_registry_waiting,
        });
        if self.was_alive.swap(alive, Ordering::Relaxed) != alive {
            if alive {
                tracing::info!(signals = %body, "liveness passes again");
            } else {
                tracing::warn!(signals = %body, "liveness fails: a stage, the group membership or the commits have not moved within telemetry.stall_timeout_ms; an orchestrator probing /healthz restarts the processor");
            }
        }
        (alive, body)
    }

    /// Readiness: (ready, body).
    pub fn readiness(&self) -> (bool, serde_json::Value) {
        if let Some(reason) = self.failed.get() {
            return (
                false,
                serde_json::json!({ "ready": false, "failed": reason }),
            );
        }
        let warmed = self.ready.load(Ordering::Relaxed);
        let Some(signals) = self.signals.get() else {
            return (
                false,
                serde_json::json!({ "ready": false, "model_warmed": warmed, "pipeline": "starting" }),
            );
        };
        let view = signals.view();
        let mut not_ready = Vec::new();
        if !warmed {
            not_ready.push("not serving (warming up, or shutting down)".to_owned());
        }
        if !view.broker_reachable {
            not_ready.push("no broker answers".to_owned());
        }
        if view.schema_registry_reachable == Some(false) {
            not_ready.push("the schema registry does not answer".to_owned());
        }
        // Records held for a writer schema wait on the registry, said above
        // (and bounded by its max_wait_ms), not on the output.
        if view.commit_wait_seconds >= self.commit_wait_limit.as_secs_f64()
            && !view.schema_registry_waiting
        {
            not_ready.push(format!(
                "records have waited {:.0} s for a commit (the output is blocked){}",
                view.commit_wait_seconds,
                view.last_transaction_error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
        }
        let ready = not_ready.is_empty();
        (
            ready,
            serde_json::json!({
                "ready": ready,
                "not_ready_because": not_ready,
                "model_warmed": warmed,
                "broker_reachable": view.broker_reachable,
                "schema_registry_reachable": view.schema_registry_reachable,
                "group_state": view.group_state,
                "assigned_partitions": view.assigned_partitions,
                "commit_wait_seconds": view.commit_wait_seconds,
                "consecutive_aborts": view.consecutive_aborts,
                "last_transaction_error": view.last_transaction_error,
            }),
        )
    }
}

#[derive(Clone)]
struct AppState {
    metrics: PrometheusHandle,
    stats: Arc<Stats>,
    health: Arc<Health>,
    /// The keys loaded now (a table, so that a removed key loses its series).
    keyring: Option<Arc<KeyringStatus>>,
}

/// Binds the listener now (so a taken port fails the start) and serves it on the runtime.
pub async fn serve(
    listen: SocketAddr,
    metrics: PrometheusHandle,
    stats: Arc<Stats>,
    health: Arc<Health>,
    keyring: Option<Arc<KeyringStatus>>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(live))
        .route("/readyz", get(ready))
        .with_state(AppState {
            metrics,
            stats,
            health,
            keyring,
        });
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "telemetry HTTP server stopped");
        }
    });
    Ok((addr, task))
}

/// The recorder's gauges, the stats (counters and histograms), then the
/// consumer lag of the partitions owned now and the keys loaded now (tables,
/// so that a partition given away or a key removed loses its series).
async fn render(State(state): State<AppState>) -> String {
    let mut text = super::metrics::render(&state.metrics);
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    state.stats.render(&mut text);
    match state.health.signals.get() {
        Some(signals) => signals.lag.render(&mut text, crate::clock::unix_ms()),
        // Before the pipeline starts: the families, with no partition yet.
        None => super::lag::LagTable::default().render(&mut text, crate::clock::unix_ms()),
    }
    if let Some(keyring) = &state.keyring {
        text.push_str(&keyring.render_prometheus());
    }
    text
}

fn answer(ok: bool, body: serde_json::Value) -> (StatusCode, axum::Json<serde_json::Value>) {
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body))
}

async fn live(State(state): State<AppState>) -> (StatusCode, axum::Json<serde_json::Value>) {
    let (ok, body) = state.health.liveness();
    answer(ok, body)
}

async fn ready(State(state): State<AppState>) -> (StatusCode, axum::Json<serde_json::Value>) {
    let (ok, body) = state.health.readiness();
    answer(ok, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::signals::Stage;

    #[test]
    fn starting_is_alive_but_not_ready() {
        let h = Health::new(Duration::from_secs(1));
        assert!(h.liveness().0);
        assert!(!h.readiness().0);
    }

    #[test]
    fn ready_needs_warm_model_and_a_reachable_broker() {
        let h = Health::new(Duration::from_secs(60));
        let signals = Arc::new(PipelineSignals::default());
        h.attach(signals.clone());
        assert!(!h.readiness().0, "not warmed yet");
        h.ready.store(true, Ordering::Relaxed);
        assert!(h.readiness().0);
        signals.set_broker_reachable(false);
        let (ready, body) = h.readiness();
        assert!(!ready);
        assert_eq!(body["broker_reachable"], false);
    }

    #[test]
    fn records_waiting_past_the_limit_for_a_commit_make_it_unready_saying_why() {
        let h =
            Health::new(Duration::from_secs(60)).with_commit_wait_limit(Duration::from_millis(50));
        let signals = Arc::new(PipelineSignals::default());
        h.attach(signals.clone());
        h.ready.store(true, Ordering::Relaxed);
        signals.record_read(std::time::Instant::now());
        assert!(h.readiness().0, "a wait under the limit is normal");
        signals.transaction_trouble("Broker: Not enough in-sync replicas".into());
        std::thread::sleep(Duration::from_millis(80));
        let (ready, body) = h.readiness();
        assert!(!ready, "{body}");
        let why = body["not_ready_because"][0].as_str().unwrap();
        assert!(
            why.starts_with("records have waited")
                && why.ends_with(": Broker: Not enough in-sync replicas"),
            "{why}"
        );
        assert!(h.liveness().0, "waiting for replicas is not a wedge");
        signals.committed();
        let (ready, body) = h.readiness();
        assert!(ready, "{body}");
        assert_eq!(body["last_transaction_error"], serde_json::Value::Null);
    }

    /// Health over signals whose source stops beating past a 20 ms limit,
    /// alive before that.
    fn with_a_stage_about_to_wedge() -> (Health, Arc<PipelineSignals>) {
        let h = Health::new(Duration::from_millis(20));
        let signals = Arc::new(PipelineSignals::default());
        signals.beat(Stage::Source);
        signals.beat(Stage::Sink);
        h.attach(signals.clone());
        assert!(h.liveness().0);
        std::thread::sleep(Duration::from_millis(40));
        signals.beat(Stage::Sink);
        (h, signals)
    }

    #[test]
    fn a_wedged_stage_fails_liveness() {
        let (h, _signals) = with_a_stage_about_to_wedge();
        let (alive, body) = h.liveness();
        assert!(!alive, "{body}");
    }

    /// The log is what an operator has after the restart: it says why.
    #[test]
    fn a_change_of_liveness_is_logged_once_each_way() {
        let log = crate::telemetry::logging::json_log_of(|| {
            let (h, signals) = with_a_stage_about_to_wedge();
            assert!(!h.liveness().0);
            assert!(!h.liveness().0);
            signals.beat(Stage::Source);
            assert!(h.liveness().0);
            assert!(h.liveness().0);
        });
        assert_eq!(log.matches("liveness fails").count(), 1, "{log}");
        assert!(log.contains("source_idle_seconds"), "{log}");
        assert_eq!(log.matches("liveness passes again").count(), 1, "{log}");
    }
}
