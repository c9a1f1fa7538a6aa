//! `run`: the live bridge. Watches feed the stage; its facts go through the tracked pipeline;
//! each fact every routed sink finished with is recorded in the checkpoint, so a restart
//! publishes only what is not done. With `--leader-election` only the Lease holder gets this far.

use super::{AppError, Outcome, ReplayReport, SinkReport, open_sinks_with, shutdown_signal};
use crate::admin::Admin;
use crate::checkpoint::{Checkpoint, CheckpointSpec};
use crate::cli::RunArgs;
use crate::derive::Deriver;
use crate::leader::{Elector, LeaseConfig};
use crate::metrics::Role;
use crate::pipeline::Delivery;
use crate::pipeline::presence::Presence;
use crate::pipeline::progress;
use crate::pipeline::{Finish, Pipeline, Stage, Staged};
use crate::source::live::{self, Input};
use chrono::Utc;
use futures_util::StreamExt;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// Where a pod finds its own namespace.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// How often retention is applied.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

fn setup(message: impl Into<String>) -> AppError {
    AppError::Setup(message.into())
}

fn own_namespace() -> Option<String> {
    std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn default_identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "kfp-event-bridge".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{host}_{:x}{nanos:08x}", std::process::id())
}

/// `run`: until a signal (exit 0 once in-flight events are done or the shutdown timeout passed)
/// or the loss of leadership (an error: the process stops publishing at once).
pub async fn run(args: &RunArgs) -> Result<(Outcome, ReplayReport), AppError> {
    run_with(crate::sinks::registry(), args).await
}

/// [`run`] with the sinks `registry` has.
pub async fn run_with(
    registry: &sink_core::Registry,
    args: &RunArgs,
) -> Result<(Outcome, ReplayReport), AppError> {
    let encode_config = crate::config::encode(&args.encode)?;
    let plan = crate::config::delivery_plan(&args.delivery)?;
    let live = crate::config::live_plan(args)?;
    let (retention, flush_every, lease) = (live.retention, live.checkpoint_interval, live.lease);
    let spec = match &args.checkpoint {
        Some(text) => CheckpointSpec::parse(text).map_err(setup)?,
        None => match own_namespace() {
            Some(namespace) => CheckpointSpec::ConfigMap {
                namespace,
                name: "kfp-event-bridge-checkpoint".into(),
                shards: crate::checkpoint::DEFAULT_SHARDS,
            },
            None => {
                return Err(setup(
                    "--checkpoint is required outside a cluster: file:DIR, configmap:NAMESPACE/NAME, or none to publish without one",
                ));
            }
        },
    };
    let mut admin = Admin::start(
        &args.admin,
        crate::cli::AdminAddr::At(std::net::SocketAddr::from(([127, 0, 0, 1], 8080))),
    )
    .await?;
    let metrics = admin.as_ref().map(|a| Arc::clone(&a.metrics));
    if let Some(m) = &metrics {
        m.expect_watches();
        m.set_role(if lease.is_some() {
            Role::Standby
        } else {
            Role::Single
        });
    }
    let client = live::client(args.watch.kubeconfig.as_deref()).await?;

    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let leadership = match lease {
        None => None,
        Some((lease_duration, renew_deadline, retry_period)) => {
            let namespace = args
                .leader_election_namespace
                .clone()
                .or_else(own_namespace)
                .unwrap_or_else(|| client.default_namespace().to_owned());
            let config = LeaseConfig {
                namespace,
                name: args.leader_election_name.clone(),
                identity: args
                    .leader_election_identity
                    .clone()
                    .unwrap_or_else(default_identity),
                lease_duration,
                renew_deadline,
                retry_period,
            };
            tokio::select! {
                held = Elector::new(&client, config).acquire() => Some(held),
                () = &mut shutdown => return Ok((Outcome::Clean, ReplayReport::default())),
            }
        }
    };
    if let (Some(m), Some(_)) = (&metrics, &leadership) {
        m.set_role(Role::Leader);
    }

    let sinks = open_sinks_with(registry, &plan).await?;
    // The load waits for an unavailable API server; a SIGTERM meanwhile is a clean stop.
    let checkpoint = tokio::select! {
        opened = Checkpoint::open(&spec, Some(&client)) => opened?,
        () = &mut shutdown => return Ok((Outcome::Clean, ReplayReport::default())),
    };
    let mut derive_config = crate::config::derive(&args.derive);
    derive_config.history_before = Some(Utc::now() - retention);
    derive_config.defer_event_facts = true;
    let mut deriver = Deriver::new(derive_config);
    progress::restore(&checkpoint, &mut deriver);
    tracing::info!(
        checkpoint = ?spec,
        entries = checkpoint.len(),
        "checkpoint loaded"
    );

    let delivery = Delivery::start(sinks.0, sinks.1, &plan.lanes, &plan.retry);
    if let Some(admin) = admin.as_mut() {
        admin.watch_delivery(&delivery);
    }
    let mut stage = Stage::new(deriver, encode_config, Finish::OnAck);
    let mut pipeline = Pipeline::tracked(
        delivery,
        checkpoint,
        plan.lanes.window,
        args.catch_up_bound,
        metrics.clone(),
    );
    let (watch_ids, mut inputs) = live::watch(&client, &crate::config::watch(&args.watch));
    if let Some(m) = &metrics {
        m.watches(&watch_ids);
    }
    let mut report = ReplayReport::default();
    let mut presence = Presence::new(
        watch_ids
            .iter()
            .map(|id| id.resource == "workflows")
            .collect(),
    );
    // Objects reported as unreadable (by uid), so each is logged once.
    let mut undecodable: HashSet<String> = HashSet::new();
    // Watches listed once so far; the catch-up ends when all have been.
    let (mut synced, mut caught_up) = (0, false);
    let sweep_unseen = crate::config::watch(&args.watch).label_selector.is_none();
    let mut flush = tokio::time::interval(flush_every);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let lost = leadership.as_ref().map(|l| l.lost());
    let lost = async move {
        match lost {
            Some(lost) => lost.await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(lost);

    loop {
        let input = tokio::select! {
            biased;
            () = &mut lost => {
                // Another replica publishes now: stop at once, write nothing more.
                return Err(AppError::LeadershipLost);
            }
            () = &mut shutdown => {
                report.interrupted = true;
                break;
            }
            completion = pipeline.next_completion() => {
                pipeline.complete(completion, &mut stage);
                continue;
            }
            _ = flush.tick() => {
                pipeline.flush_due();
                continue;
            }
            // With a label selector an unseen workflow may just be filtered out, not deleted:
            // its Events then speak only through its DELETED watch event.
            _ = sweep.tick(), if sweep_unseen && presence.workflows_known() => {
                let facts = presence.unseen_gone(stage.deriver_mut());
                Next::Staged(stage.staged(facts))
            }
            _ = prune.tick() => {
                if let Some(checkpoint) = pipeline.checkpoint_mut() {
                    presence.apply_retention(checkpoint, stage.deriver_mut(), retention);
                }
                continue;
            }
            input = inputs.next() => match input {
                Some(input) => Next::Input(input),
                None => break,
            },
        };
        let staged = match input {
            Next::Staged(staged) => staged,
            Next::Input(Input::Listing(i)) => {
                if let Some(m) = &metrics {
                    m.watch_listing(i);
                }
                presence.listing(i);
                continue;
            }
            Next::Input(Input::Listed(i)) => {
                let (facts, first) = presence.listed(i, stage.deriver_mut());
                if first {
                    tracing::info!(watch = %watch_ids[i], "watch synced");
                    synced += 1;
                    if synced == watch_ids.len() {
                        // Published after this list's facts, which are the catch-up's last.
                        caught_up = true;
                    }
                }
                if let Some(m) = &metrics {
                    m.watch_listed(i);
                }
                stage.staged(facts)
            }
            Next::Input(Input::Undecodable {
                watch,
                name,
                uid,
                error,
            }) => {
                // Skipped like a bad recording line; logged once per object, counted each time.
                report.counts.bad_lines += 1;
                let key = if uid.is_empty() { name.clone() } else { uid };
                if undecodable.insert(key) {
                    tracing::warn!(watch = %watch_ids[watch], object = %name, error = %error, "object cannot be read; skipped (further changes to it are counted in kfp_event_bridge_decode_errors_total)");
                }
                if let Some(m) = &metrics {
                    m.watch_event(watch);
                    m.derive_stats(stage.deriver().stats(), report.counts.bad_lines);
                }
                continue;
            }
            Next::Input(Input::Failed(i, err)) => {
                tracing::warn!(watch = %watch_ids[i], error = %err, "watch failed; retrying with backoff");
                if let Some(m) = &metrics {
                    m.watch_failed(i, &err);
                }
                presence.failed(i);
                continue;
            }
            Next::Input(Input::Observed(index, observed)) => {
                report.counts.lines += 1;
                let facts = presence.observe(index, &observed, stage.deriver_mut());
                let staged = stage.staged(facts);
                if let Some(m) = &metrics {
                    m.watch_event(index);
                    // A pod seen past Pending while its watch replays a list was not just seen
                    // starting: only changes the synced watch delivers are timed.
                    if presence.current(index) {
                        m.pod_starts(&staged.pod_starts, Utc::now());
                    }
                    m.derive_stats(stage.deriver().stats(), report.counts.bad_lines);
                }
                staged
            }
        };
        for notice in &staged.notices {
            crate::derive::log_notice(notice, None);
        }
        if let Some(m) = &metrics {
            m.facts(&staged.facts);
        }
        // Sending waits while the lanes are full; a signal or a lost Lease must still get through.
        let interrupt = tokio::select! {
            biased;
            () = &mut lost => Some(true),
            () = &mut shutdown => Some(false),
            () = pipeline.publish(&mut stage, staged.facts) => None,
        };
        match interrupt {
            Some(true) => return Err(AppError::LeadershipLost),
            Some(false) => {
                report.interrupted = true;
                break;
            }
            None => {}
        }
        if std::mem::take(&mut caught_up) {
            tracing::info!(
                in_flight = pipeline.in_flight(),
                "caught up: every watch listed; the checkpoint bound is --max-in-flight from now"
            );
            pipeline.caught_up();
        }
    }

    // Shutdown: the lanes finish what they hold (up to the timeout), the done facts are
    // recorded, the checkpoint written, the Lease given up.
    tracing::info!(
        in_flight = pipeline.in_flight(),
        "stopping: waiting for in-flight events"
    );
    report.counts.events = pipeline.sent();
    let finished = pipeline
        .finish(&mut stage, tokio::time::sleep(plan.shutdown_timeout))
        .await;
    report.unrouted = finished.unrouted;
    if let Some(leadership) = leadership {
        leadership.release().await;
    }
    report.stats = stage.deriver().stats().clone();
    report.sinks = finished
        .lanes
        .iter()
        .map(|(name, lane)| SinkReport::from_lane(name, lane, &finished.unfinished))
        .collect();
    let outcome = if report
        .sinks
        .iter()
        .any(|s| s.undeliverable > 0 || s.pending > 0)
    {
        Outcome::Undelivered
    } else {
        Outcome::Clean
    };
    Ok((outcome, report))
}

/// What the main loop acts on next.
enum Next {
    Input(Input),
    Staged(Staged),
}
