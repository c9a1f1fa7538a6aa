//! The commands, wired from their parts: what `main` runs once the command line is parsed.

use crate::cli::ReplayArgs;
use crate::derive::{Deriver, Stats};
use crate::pipeline::{self, Delivery};
use crate::sinks;
use crate::source::replay::{self, ReplayCounts};
use std::io::BufRead;
use std::sync::Arc;

/// How a command ended, as the process exit code says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything read was delivered.
    Clean,
    /// Delivered what could be; some input lines were bad and skipped (exit code 3).
    BadInput,
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
    Encode(#[from] crate::encode::EncodeError),
    #[error(transparent)]
    Sink(#[from] sink_core::SinkError),
    #[error("replay reader stopped unexpectedly")]
    Reader,
}

/// Summary of a replay, for the caller to report.
#[derive(Debug, Clone, Default)]
pub struct ReplayReport {
    pub counts: ReplayCounts,
    pub stats: Stats,
    pub delivered: u64,
}

/// `replay FILE`: reads, derives and encodes on a reader thread, publishes here, in order.
pub async fn replay(args: &ReplayArgs) -> Result<(Outcome, ReplayReport), AppError> {
    let encode = args.encode.config()?;
    let sinks = args
        .sinks
        .iter()
        .map(|uri| sinks::open(uri))
        .collect::<Result<Vec<_>, _>>()?;
    let path = args.file.display().to_string();
    let input: Box<dyn BufRead + Send> = if path == "-" {
        Box::new(std::io::BufReader::with_capacity(1 << 20, std::io::stdin()))
    } else {
        let file = std::fs::File::open(&args.file).map_err(|source| AppError::Input {
            path: path.clone(),
            source,
        })?;
        Box::new(std::io::BufReader::with_capacity(1 << 20, file))
    };
    let derive = args.derive.config();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<cloudevents::Event>>(256);
    let reader = std::thread::Builder::new()
        .name("replay-reader".into())
        .spawn(move || {
            let mut deriver = Deriver::new(derive);
            let counts = replay::replay(input, &mut deriver, &encode, |events| {
                tx.blocking_send(events).is_ok()
            });
            (counts, deriver.stats().clone())
        })
        .map_err(|source| AppError::Input {
            path: path.clone(),
            source,
        })?;
    let mut delivery = Delivery::new(
        sinks.iter().map(Arc::clone).collect(),
        pipeline::DEFAULT_WINDOW,
    );
    let mut failure = None;
    while let Some(events) = rx.recv().await {
        for event in &events {
            if let Err(err) = delivery.send(event).await {
                failure = Some(err);
                break;
            }
        }
        if failure.is_some() {
            // Dropping the receiver stops the reader at its next batch.
            break;
        }
    }
    drop(rx);
    if let Some(err) = failure {
        return Err(err.into());
    }
    delivery.finish().await?;
    let (counts, stats) = reader.join().map_err(|_| AppError::Reader)?;
    let counts = counts.map_err(|source| AppError::Input { path, source })?;
    let outcome = if counts.bad_lines > 0 {
        Outcome::BadInput
    } else {
        Outcome::Clean
    };
    Ok((
        outcome,
        ReplayReport {
            counts,
            stats,
            delivered: delivery.delivered(),
        },
    ))
}
