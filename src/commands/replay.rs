//! `replay FILE`: a recording through the same stage as the live watches, on a reader thread;
//! its events through the untracked pipeline here.

use super::{AppError, Outcome, ReplayReport, deliver, open_input, open_sinks_with, outcome};
use crate::admin::Admin;
use crate::cli::ReplayArgs;
use crate::derive::Deriver;
use crate::pipeline::{self, Finish, Stage};
use crate::sinks;
use std::sync::Arc;

/// `replay FILE`: reads, derives and encodes on a reader thread, publishes here through the lanes.
pub async fn replay(args: &ReplayArgs) -> Result<(Outcome, ReplayReport), AppError> {
    replay_with(sinks::registry(), args).await
}

/// [`replay`] with the sinks `registry` has.
pub async fn replay_with(
    registry: &sink_core::Registry,
    args: &ReplayArgs,
) -> Result<(Outcome, ReplayReport), AppError> {
    let encode = crate::config::encode(&args.encode)?;
    let plan = crate::config::delivery_plan(&args.delivery)?;
    let mut admin = Admin::start(&args.admin, crate::cli::AdminAddr::Off).await?;
    let metrics = admin.as_ref().map(|a| Arc::clone(&a.metrics));
    let sinks = open_sinks_with(registry, &plan).await?;
    let input = open_input(&args.file)?;
    let path = args.file.display().to_string();
    let derive = crate::config::derive(&args.derive);
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
