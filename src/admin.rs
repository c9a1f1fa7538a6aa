//! The admin HTTP server — `/healthz`, `/readyz`, `/metrics` — and the periodic sink health
//! checks readiness is judged from.

pub mod collector;
pub mod readiness;
pub mod sinks;

use crate::cli::{AdminAddr, AdminArgs};
use crate::metrics::Metrics;
use crate::pipeline::Delivery;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use sink_core::Sink;
use sinks::SinkBoard;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tracing::Instrument as _;

/// `/healthz` fails once the runtime's heartbeat is older than this.
const STALL: Duration = Duration::from_secs(10);

/// What a command reports through the admin server; `None` of it exists with `--admin-addr off`.
pub struct Admin {
    pub metrics: Arc<Metrics>,
    sinks: Arc<SinkBoard>,
    health_interval: Duration,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Admin {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[derive(Clone)]
struct Served {
    exposition: Exposition,
    started: Instant,
    /// Milliseconds after `started` of the heartbeat task's last tick.
    beat: Arc<AtomicU64>,
}

/// Why the admin server could not start: a flag that cannot work, or an address not to be had.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Flag(String),
    #[error("--admin-addr {addr}: cannot listen: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What the admin server exposes: the metrics the command pushes, and the sinks' lanes and
/// health, read by the collector at scrape time and judged by readiness.
#[derive(Clone)]
pub struct Exposition {
    pub metrics: Arc<Metrics>,
    pub sinks: Arc<SinkBoard>,
}

impl Exposition {
    /// `max_pipelines`: distinct `pipeline` label values before the rest share one.
    pub fn new(max_pipelines: usize) -> Self {
        let mut metrics = Metrics::new(max_pipelines);
        let sinks = Arc::new(SinkBoard::default());
        let state = Arc::clone(metrics.bridge());
        metrics.register_collector(Box::new(collector::Collect(state, Arc::clone(&sinks))));
        Self {
            metrics: Arc::new(metrics),
            sinks,
        }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        self.metrics.render()
    }

    /// `(ready, report)`: see [`readiness::readiness`].
    pub fn readiness(&self) -> (bool, String) {
        readiness::readiness(self.metrics.bridge(), &self.sinks)
    }
}

impl Admin {
    /// Binds the admin server unless it is off (`default` applies when no address was given).
    pub async fn start(args: &AdminArgs, default: AdminAddr) -> Result<Option<Self>, AdminError> {
        let addr = match args.admin_addr.unwrap_or(default) {
            AdminAddr::Off => return Ok(None),
            AdminAddr::At(addr) => addr,
        };
        let health_interval = args.health_interval;
        if health_interval.is_zero() {
            return Err(AdminError::Flag(
                "--health-interval must be above zero".into(),
            ));
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| AdminError::Listen { addr, source })?;
        let bound = listener.local_addr().unwrap_or(addr);
        let exposition = Exposition::new(args.metrics_max_pipelines.max(1));
        let metrics = Arc::clone(&exposition.metrics);
        let sinks = Arc::clone(&exposition.sinks);
        let served = Served {
            exposition,
            started: Instant::now(),
            beat: Arc::new(AtomicU64::new(0)),
        };
        let beat = Arc::clone(&served.beat);
        let started = served.started;
        let heartbeat = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                beat.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
            }
        });
        let app = Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics_text))
            .with_state(served);
        let server = tokio::spawn(
            async move {
                if let Err(err) = axum::serve(listener, app).await {
                    tracing::error!(error = %err, "admin server stopped");
                }
            }
            .instrument(tracing::info_span!("admin", addr = %bound)),
        );
        tracing::info!(addr = %bound, "admin server listening (/healthz, /readyz, /metrics)");
        Ok(Some(Self {
            metrics,
            sinks,
            health_interval,
            tasks: vec![heartbeat, server],
        }))
    }

    /// Registers the delivery's lanes and checks each lane's sink every health interval (logging
    /// when a sink goes down or comes back).
    pub fn watch_delivery(&mut self, delivery: &Delivery) {
        self.sinks.sinks(&delivery.stats());
        for (index, (name, sink)) in delivery.sinks().into_iter().enumerate() {
            let board = Arc::clone(&self.sinks);
            let record = move |result| board.sink_health(index, result);
            self.tasks.push(check_every(
                self.health_interval,
                "sink",
                name,
                sink,
                record,
            ));
        }
        if let Some(sink) = delivery.dead_letter() {
            let name = sink.name().to_owned();
            self.sinks.dead_letter(&name);
            let board = Arc::clone(&self.sinks);
            let record = move |result| board.dead_letter_health(result);
            let what = "dead-letter sink";
            self.tasks
                .push(check_every(self.health_interval, what, name, sink, record));
        }
    }
}

/// Checks `sink` every `every`, hands each result to `record` and logs when it says the state
/// changed (`what up` / `what down`).
fn check_every(
    every: Duration,
    what: &'static str,
    name: String,
    sink: Arc<dyn Sink>,
    record: impl Fn(Result<(), String>) -> Option<bool> + Send + 'static,
) -> JoinHandle<()> {
    let span = tracing::info_span!("health", check = what, sink = %name);
    tokio::spawn(
        async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let result = match tokio::time::timeout(every, sink.health()).await {
                    Ok(result) => result.map_err(|e| e.to_string()),
                    Err(_) => Err(format!("health check timed out after {every:?}")),
                };
                let error = result.as_ref().err().cloned();
                match record(result) {
                    Some(true) => tracing::info!(sink = %name, "{what} up"),
                    Some(false) => tracing::warn!(
                        sink = %name,
                        error = error.as_deref().unwrap_or(""),
                        "{what} down"
                    ),
                    None => {}
                }
            }
        }
        .instrument(span),
    )
}

async fn healthz(State(s): State<Served>) -> impl IntoResponse {
    let now = s.started.elapsed().as_millis() as u64;
    let stalled = Duration::from_millis(now.saturating_sub(s.beat.load(Ordering::Relaxed)));
    if stalled > STALL {
        let body = format!("event loop stalled for {:.1}s\n", stalled.as_secs_f64());
        (StatusCode::SERVICE_UNAVAILABLE, body)
    } else {
        (StatusCode::OK, "ok\n".to_owned())
    }
}

async fn readyz(State(s): State<Served>) -> impl IntoResponse {
    let (ready, report) = s.exposition.readiness();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, report)
}

async fn metrics_text(State(s): State<Served>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.exposition.render(),
    )
}
