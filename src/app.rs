//! The commands, wired from their parts: what `main` runs once the command line is parsed.

use crate::admin::Admin;
use crate::cli::{DeliveryPlan, ReplayArgs, ResendArgs};
use crate::derive::{Deriver, Stats};
use crate::pipeline::Delivery;
use crate::pipeline::Route;
use crate::pipeline::{self, Finish, Pipeline, Stage};
use crate::sinks;
use crate::source::lines::ReplayCounts;
use crate::source::resend;
use sink_core::Sink;
use std::io::BufRead;
use std::sync::Arc;
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
    /// The cluster or the checkpoint store could not be reached or read.
    #[error("{0}")]
    Live(String),
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
            AppError::Sink(err) => err.class() == "config",
            AppError::Input { .. }
            | AppError::Reader
            | AppError::Live(_)
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

fn open_input(file: &std::path::Path) -> Result<Box<dyn BufRead + Send>, AppError> {
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
struct Delivered {
    sinks: Vec<SinkReport>,
    unrouted: u64,
    interrupted: bool,
}

/// Publishes what arrives on `rx` until it closes or a signal asks to stop, then waits for the
/// lanes (after a signal, at most the shutdown timeout) and reports per sink.
async fn deliver(
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

fn outcome(sinks: &[SinkReport], bad_lines: u64) -> Outcome {
    if sinks.iter().any(|s| s.undeliverable > 0 || s.pending > 0) {
        Outcome::Undelivered
    } else if bad_lines > 0 {
        Outcome::BadInput
    } else {
        Outcome::Clean
    }
}

/// `replay FILE`: reads, derives and encodes on a reader thread, publishes here through the lanes.
pub async fn replay(args: &ReplayArgs) -> Result<(Outcome, ReplayReport), AppError> {
    replay_with(sinks::registry(), args).await
}

/// [`replay`] with the sinks `registry` has.
pub async fn replay_with(
    registry: &sink_core::Registry,
    args: &ReplayArgs,
) -> Result<(Outcome, ReplayReport), AppError> {
    let encode = args.encode.config()?;
    let plan = args.delivery.plan()?;
    let mut admin = Admin::start(&args.admin, "off").await?;
    let metrics = admin.as_ref().map(|a| Arc::clone(&a.metrics));
    let sinks = open_sinks_with(registry, &plan).await?;
    let input = open_input(&args.file)?;
    let path = args.file.display().to_string();
    let derive = args.derive.config();
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<cloudevents::Event>>(256);
    let reader = std::thread::Builder::new()
        .name("replay-reader".into())
        .spawn(move || {
            let mut stage = Stage::new(Deriver::new(derive), encode, Finish::AtDerive);
            let counts = pipeline::replay(input, &mut stage, metrics.as_deref(), |events| {
                tx.blocking_send(events).is_ok()
            });
            (counts, stage.deriver().stats().clone())
        })
        .map_err(|source| AppError::Input {
            path: path.clone(),
            source,
        })?;
    let delivered = deliver(&plan, sinks, rx, admin.as_mut()).await;
    let (counts, stats) = reader.join().map_err(|_| AppError::Reader)?;
    let counts = counts.map_err(|source| AppError::Input { path, source })?;
    Ok((
        outcome(&delivered.sinks, counts.bad_lines),
        ReplayReport {
            counts,
            stats,
            sinks: delivered.sinks,
            unrouted: delivered.unrouted,
            interrupted: delivered.interrupted,
        },
    ))
}

/// `resend FILE`: publishes structured CloudEvents from a file (a dead-letter file after the cause
/// is fixed, a `replay` output) through the same lanes, without the dead-letter extensions.
pub async fn resend(args: &ResendArgs) -> Result<(Outcome, ReplayReport), AppError> {
    resend_with(sinks::registry(), args).await
}

/// [`resend`] with the sinks `registry` has.
pub async fn resend_with(
    registry: &sink_core::Registry,
    args: &ResendArgs,
) -> Result<(Outcome, ReplayReport), AppError> {
    let plan = args.delivery.plan()?;
    let mut admin = Admin::start(&args.admin, "off").await?;
    let sinks = open_sinks_with(registry, &plan).await?;
    let input = open_input(&args.file)?;
    let path = args.file.display().to_string();
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<cloudevents::Event>>(4);
    let reader = std::thread::Builder::new()
        .name("resend-reader".into())
        .spawn(move || resend::resend(input, |events| tx.blocking_send(events).is_ok()))
        .map_err(|source| AppError::Input {
            path: path.clone(),
            source,
        })?;
    let delivered = deliver(&plan, sinks, rx, admin.as_mut()).await;
    let counts = reader
        .join()
        .map_err(|_| AppError::Reader)?
        .map_err(|source| AppError::Input { path, source })?;
    Ok((
        outcome(&delivered.sinks, counts.bad_lines),
        ReplayReport {
            counts,
            stats: Stats::default(),
            sinks: delivered.sinks,
            unrouted: delivered.unrouted,
            interrupted: delivered.interrupted,
        },
    ))
}
