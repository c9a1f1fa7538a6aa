//! The contract between kfp-event-bridge's delivery pipeline and its transports.
//!
//! A [`Sink`] publishes in two phases: [`Sink::publish`] returns once the transport has *accepted*
//! the CloudEvent, and hands back a [`Receipt`], a future that resolves when the far side has
//! *acknowledged* it (a Kafka delivery report, a JetStream PubAck, an AMQP publisher confirm, an
//! HTTP 2xx, or bytes handed to the operating system for the file sink). Sinks classify failures
//! ([`SinkError`]) and never retry, reorder or drop on their own: the pipeline owns all of that.
//!
//! This crate also holds the sinks every build has: [`JsonLinesSink`] (structured JSON lines to
//! standard output or a file) and the scriptable [`MemorySink`] for tests, plus the deterministic structured-mode JSON
//! writer ([`structured`]) they share with the broker sinks.

pub mod binary;
pub mod conformance;
mod error;
mod factory;
mod memory;
mod stream;
pub mod structured;
pub mod template;
pub mod uri;

use std::future::Future;
use std::pin::Pin;

pub use cloudevents::Event;
pub use error::{ErrorKind, SinkError};
pub use factory::{
    ContentMode, Description, JsonLinesFactory, Opening, Registry, SinkConfig, SinkFactory, scheme,
};
pub use memory::{MemorySink, Script};
pub use stream::JsonLinesSink;
pub use template::Template;
pub use uri::{redact, redact_with};

/// Resolves when the broker acknowledged one accepted message, or with the reason it did not.
pub type Receipt = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'static>>;

/// A future that resolves once the transport accepted a message.
pub type Accepting<'a> = Pin<Box<dyn Future<Output = Result<Receipt, SinkError>> + Send + 'a>>;

/// A future that resolves with the outcome of one health check.
pub type Checking<'a> = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'a>>;

/// One destination for CloudEvents.
pub trait Sink: Send + Sync {
    /// A short name for logs and metrics, with any credentials already removed.
    fn name(&self) -> &str;

    /// Hands `event` to the transport. The outer future resolves once the transport accepted it
    /// (it may wait for buffer space: that is back-pressure); the [`Receipt`] resolves on the
    /// broker's acknowledgement. Receipts of one sink resolve in publish order for ordered sinks.
    fn publish<'a>(&'a self, event: &'a Event) -> Accepting<'a>;

    /// How the pipeline may overlap one run's events on this sink without reordering them.
    fn key_order(&self) -> KeyOrder {
        KeyOrder::OneInFlight
    }

    /// Checks, without publishing, that the far side can take events now: a metadata request, the
    /// connection's state, a TCP connection. Called periodically for readiness; it should answer
    /// within a few seconds. Sinks with nothing to check (standard output, a file) are healthy.
    fn health(&self) -> Checking<'_> {
        Box::pin(async { Ok(()) })
    }

    /// Waits until everything accepted so far is acknowledged or failed. Called on shutdown.
    fn flush(&self) -> Accepting<'_> {
        Box::pin(async { Ok(Box::pin(async { Ok(()) }) as Receipt) })
    }
}

/// A receipt that is already resolved: for sinks whose acceptance is the acknowledgement.
pub fn settled(result: Result<(), SinkError>) -> Receipt {
    Box::pin(std::future::ready(result))
}

/// What a sink guarantees about the order of messages it has in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrder {
    /// Messages reach the far side in publish order, and when one fails every later one of the
    /// same key fails too (one ordered connection, a Kafka idempotent producer, a file): the
    /// pipeline may keep many events of one run in flight.
    Pipelined,
    /// Concurrent messages may overtake each other (HTTP requests on a connection pool): the
    /// pipeline keeps at most one event per run in flight.
    OneInFlight,
}

/// `100ms`, `30s`, `5m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 30s, 5m, 1h or 7d"))?;
    let seconds = match unit.trim() {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        "d" => number * 86400.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {text:?} (ms, s, m, h, d)"
            ));
        }
    };
    if !seconds.is_finite() || !(0.0..=1e9).contains(&seconds) {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}
