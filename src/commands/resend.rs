//! `resend FILE`: structured CloudEvents from a file (a dead-letter file once the cause is fixed,
//! a `replay` output) through the untracked pipeline, without the dead-letter extensions.

use super::{AppError, Outcome, ReplayReport, deliver, open_input, open_sinks_with, outcome};
use crate::admin::Admin;
use crate::cli::ResendArgs;
use crate::derive::Stats;
use crate::sinks;
use crate::source::resend;

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
    let plan = crate::config::delivery_plan(&args.delivery)?;
    let mut admin = Admin::start(&args.admin, crate::cli::AdminAddr::Off).await?;
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
