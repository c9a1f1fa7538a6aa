//! Logging setup: `tracing` to standard error (standard output carries events), text or JSON.

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

const QUIET_RETURNS: &str = "lapin::returned_messages=error";

/// Installs the global subscriber. `filter` uses `RUST_LOG` syntax, e.g.
/// `info,kfp_event_bridge=debug`; without one, `RUST_LOG` is read, else `info` applies.
pub fn init(format: LogFormat, filter: Option<&str>) {
    let text = filter
        .map(str::to_owned)
        .or_else(|| {
            std::env::var("RUST_LOG")
                .ok()
                .filter(|f| !f.trim().is_empty())
        })
        .unwrap_or_else(|| "info".to_owned());
    let (mut filter, bad) = match EnvFilter::try_new(&text) {
        Ok(filter) => (filter, None),
        Err(err) => (EnvFilter::new("info"), Some(err)),
    };
    // lapin warns about every message the broker returns (unroutable) with the whole message,
    // body bytes and all; the AMQP sink reports it itself (undeliverable, with the reply code).
    if !text.contains("lapin") {
        filter = filter.add_directive(QUIET_RETURNS.parse().expect("valid directive"));
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if let Some(err) = bad {
        tracing::warn!(filter = %text, error = %err, "invalid log filter; using info");
    }
}

/// An error's text as one log line a person can read: whitespace (an HTML page's line breaks)
/// collapsed, cut after `max` characters with the full length said.
pub fn one_line(text: &str, max: usize) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(max) {
        Some((at, _)) => format!("{}… ({} bytes in all)", &line[..at], line.len()),
        None => line,
    }
}
