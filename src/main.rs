//! The `kfp-event-bridge` binary: parses the command line and hands over to the library.

use kfp_event_bridge::cli::{Cli, Command};
use kfp_event_bridge::commands::{self, AppError, Outcome, ReplayReport};
use kfp_event_bridge::telemetry;
use std::process::ExitCode;

/// Events are parsed or derived on one thread and freed on another after delivery; glibc's
/// malloc serialises such frees on its arena locks (see docs/performance.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse_with_default();
    telemetry::init(cli.log.log_format, cli.log.log.as_deref());
    let command = match &cli.command {
        Command::Replay(_) => "replay",
        Command::Resend(_) => "resend",
        Command::Record(_) => "record",
        Command::Run(_) => "run",
        Command::Asyncapi(_) => "asyncapi",
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        command,
        "kfp-event-bridge starting"
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            tracing::error!(error = %err, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let (what, result) = match cli.command {
        Command::Replay(args) => ("replay", runtime.block_on(commands::replay::replay(&args))),
        Command::Resend(args) => ("resend", runtime.block_on(commands::resend::resend(&args))),
        Command::Record(args) => ("record", runtime.block_on(commands::record::record(&args))),
        Command::Run(args) => ("run", runtime.block_on(commands::run::run(&args))),
        Command::Asyncapi(args) => (
            "asyncapi",
            runtime.block_on(commands::asyncapi::asyncapi(&args)),
        ),
    };
    finish(what, result)
}

/// Logs the summary (or the error) and turns the outcome into the exit code.
fn finish(what: &str, result: Result<(Outcome, ReplayReport), AppError>) -> ExitCode {
    let (outcome, report) = match result {
        Ok(done) => done,
        Err(err) => {
            let usage = err.is_config();
            tracing::error!(error = %anyhow::Error::from(err), "{what} failed");
            return if usage {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            };
        }
    };
    let s = &report.stats;
    tracing::info!(
        lines = report.counts.lines,
        bad_lines = report.counts.bad_lines,
        events = report.counts.events,
        unrouted = report.unrouted,
        interrupted = report.interrupted,
        events_merged = s.events_merged,
        events_used = s.events_used,
        events_unattributed = s.events_unattributed,
        events_unmapped = s.events_unmapped,
        offloaded = s.offloaded_observations,
        "{what} finished"
    );
    for sink in &report.sinks {
        let ms = |d: Option<std::time::Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1e3);
        tracing::info!(
            sink = %sink.name,
            routed = sink.routed,
            delivered = sink.delivered,
            retried = sink.retried,
            failed = sink.failed,
            dead_lettered = sink.dead_lettered,
            undeliverable = sink.undeliverable,
            pending = sink.pending,
            p50_ms = ms(sink.p50),
            p99_ms = ms(sink.p99),
            "sink summary"
        );
    }
    match outcome {
        Outcome::Clean => ExitCode::SUCCESS,
        Outcome::BadInput => ExitCode::from(3),
        Outcome::Undelivered => ExitCode::from(4),
    }
}
