//! The commands — `run`, `record`, `replay`, `resend` — each a thin file over the pipeline, and
//! what they share: errors and outcomes (the exit codes), the end-of-command report, opening the
//! sinks, delivering what a reader thread produces, signals.

pub mod asyncapi;
pub mod record;
pub mod replay;
pub mod resend;
pub mod run;

use crate::admin::Admin;
use crate::config::DeliveryPlan;
use crate::derive::Stats;
use crate::pipeline::{Delivery, Pipeline, Route};
use crate::sinks;
use crate::source::lines::ReplayCounts;
use sink_core::Sink;
use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How a command ended, as the process exit code says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything read was delivered (or dead-lettered).
    Clean,
    /// Delivered what could be; some input lines were bad and skipped (exit code 3).
    BadInput,
    /// Some events were not delivered: refused with no dead-letter sink, or still pending when the
    /// shutdown timeout ran out (exit code 4).
    Undelivered,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot read {path}: {source}")]
    Input {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Encode(#[from] crate::encode::EncodeError),
    #[error(transparent)]
    Sink(#[from] sink_core::SinkError),
    #[error("replay reader stopped unexpectedly")]
    Reader,
    /// A flag or setting of `run` that cannot work.
    #[error("{0}")]
    Setup(String),
    /// No Kubernetes client could be made.
    #[error(transparent)]
    Kube(#[from] crate::source::live::ClientError),
    /// The checkpoint store could not be opened or read.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    #[error("leadership lost: another replica publishes now")]
    LeadershipLost,
    /// The admin server's flags, or its address.
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
}

impl AppError {
    /// A configuration mistake (exit code 2, like a usage error), not a runtime failure.
    pub fn is_config(&self) -> bool {
        match self {
            AppError::Config(_) | AppError::Encode(_) | AppError::Setup(_) | AppError::Admin(_) => {
                true
            }
            AppError::Sink(err) => err.kind() == sink_core::ErrorKind::Config,
            AppError::Input { .. }
            | AppError::Reader
            | AppError::Kube(_)
            | AppError::Checkpoint(_)
            | AppError::LeadershipLost => false,
        }
    }
}

/// One sink's delivery counts at the end of a command.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SinkReport {
    pub name: String,
    pub routed: u64,
    pub delivered: u64,
    pub retried: u64,
    pub failed: u64,
    pub dead_lettered: u64,
    pub undeliverable: u64,
    pub pending: u64,
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
}

/// Summary of a replay, for the caller to report.
#[derive(Debug, Clone, Default)]
pub struct ReplayReport {
    pub counts: ReplayCounts,
    pub stats: Stats,
    pub sinks: Vec<SinkReport>,
    pub unrouted: u64,
    pub interrupted: bool,
}

/// The sinks of a plan, opened: the routes and the dead-letter sink.
pub type OpenSinks = (Vec<Route>, Option<Arc<dyn Sink>>);

/// Opens every sink of a plan with the built-in sinks, failing on the first that cannot be
/// opened.
pub async fn open_sinks(plan: &DeliveryPlan) -> Result<OpenSinks, AppError> {
    open_sinks_with(sinks::registry(), plan).await
}

/// [`open_sinks`] with the sinks `registry` has (a program that adds its own).
pub async fn open_sinks_with(
    registry: &sink_core::Registry,
    plan: &DeliveryPlan,
) -> Result<OpenSinks, AppError> {
    let mut routes = Vec::with_capacity(plan.sinks.len());
    for spec in &plan.sinks {
        let sink = registry.open(spec.config()).await?;
        routes.push(Route {
            name: spec.name.clone().unwrap_or_else(|| sink.name().to_owned()),
            sink,
            filter: spec.filter.clone(),
            format: spec.format.unwrap_or_default(),
        });
    }
    let dead_letter = match &plan.dead_letter {
        Some(spec) => Some(registry.open(spec.config()).await?),
        None => None,
    };
    Ok((routes, dead_letter))
}

/// Resolves on the first SIGTERM or SIGINT; a second one ends the process at once.
pub(crate) async fn shutdown_signal() {
    wait_for_signal().await;
    tracing::info!("shutdown requested: stopping intake, waiting for in-flight events");
    tokio::spawn(async {
        wait_for_signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub(crate) fn open_input(file: &std::path::Path) -> Result<Box<dyn BufRead + Send>, AppError> {
    if file.as_os_str() == "-" {
        return Ok(Box::new(std::io::BufReader::with_capacity(
            1 << 20,
            std::io::stdin(),
        )));
    }
    let opened = std::fs::File::open(file).map_err(|source| AppError::Input {
        path: file.display().to_string(),
        source,
    })?;
    Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, opened)))
}

/// What delivery did with everything a reader produced.
pub(crate) struct Delivered {
    pub(crate) sinks: Vec<SinkReport>,
    pub(crate) unrouted: u64,
    pub(crate) interrupted: bool,
}

/// Publishes what arrives on `rx` until it closes or a signal asks to stop, then waits for the
/// lanes (after a signal, at most the shutdown timeout) and reports per sink.
pub(crate) async fn deliver(
    plan: &DeliveryPlan,
    (routes, dead_letter): OpenSinks,
    mut rx: tokio::sync::mpsc::Receiver<Vec<cloudevents::Event>>,
    admin: Option<&mut Admin>,
) -> Delivered {
    let delivery = Delivery::start(routes, dead_letter, &plan.lanes, &plan.retry);
    if let Some(admin) = admin {
        admin.watch_delivery(&delivery);
    }
    let mut pipeline = Pipeline::untracked(delivery);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut interrupted = false;
    let intake = async {
        while let Some(events) = rx.recv().await {
            for event in events {
                pipeline.send(event).await;
            }
        }
    };
    tokio::select! {
        () = intake => {}
        () = &mut shutdown => interrupted = true,
    }
    // Dropping the receiver stops the reader at its next batch.
    drop(rx);
    let timeout = plan.shutdown_timeout;
    let give_up = async move {
        if !interrupted {
            shutdown.await;
        }
        tokio::time::sleep(timeout).await;
    };
    let finished = pipeline.finish_untracked(give_up).await;
    let unrouted = finished.unrouted;
    let sinks = finished
        .lanes
        .iter()
        .map(|(name, lane)| SinkReport::from_lane(name, lane, &finished.unfinished))
        .collect();
    Delivered {
        sinks,
        unrouted,
        interrupted,
    }
}

pub(crate) fn outcome(sinks: &[SinkReport], bad_lines: u64) -> Outcome {
    if sinks.iter().any(|s| s.undeliverable > 0 || s.pending > 0) {
        Outcome::Undelivered
    } else if bad_lines > 0 {
        Outcome::BadInput
    } else {
        Outcome::Clean
    }
}

impl SinkReport {
    pub(crate) fn from_lane(
        name: &str,
        lane: &crate::pipeline::LaneStats,
        unfinished: &crate::pipeline::Unfinished,
    ) -> Self {
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        SinkReport {
            name: name.to_owned(),
            routed: load(&lane.routed),
            delivered: load(&lane.delivered),
            retried: load(&lane.retried),
            failed: load(&lane.failed),
            dead_lettered: load(&lane.dead_lettered),
            undeliverable: load(&lane.undeliverable),
            pending: unfinished
                .pending
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, p)| *p),
            p50: lane.latency_quantile(0.5),
            p99: lane.latency_quantile(0.99),
        }
    }
}
