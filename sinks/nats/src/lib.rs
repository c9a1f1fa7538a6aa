//! The NATS sink: CloudEvents on NATS subjects, through JetStream (default) or core NATS.
//!
//! - **structured** (default): the released NATS binding (1.0.2) defines only this mode; the
//!   payload is the JSON event and a `Content-Type: application/cloudevents+json` header says so.
//! - **binary**: `ce-` headers percent-encoded as in the 1.0.3 draft (like HTTP), `Content-Type`
//!   from `datacontenttype`, payload = data.
//!
//! JetStream publishes wait for the stream's `PubAck` and carry `Nats-Msg-Id` = the CloudEvent id,
//! so the server drops re-sends within the stream's duplicate window. Core NATS is at-most-once on
//! the wire: the acknowledgement is a successful flush to the socket.

mod options;

pub use options::{Mode, NatsOptions};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishErrorKind};
use bytes::Bytes;
use sink_core::template::{self, Template, Var};
use sink_core::{
    Accepting, Event, KeyOrder, Receipt, Sink, SinkError, binary, redact_with, structured,
};
use tokio::sync::{mpsc, oneshot};

/// Core NATS acknowledgements: one flush of the connection covers every message published before
/// it, so waiters that arrive together share one flush instead of one each.
type FlushWaiter = oneshot::Sender<Result<(), String>>;

fn spawn_flusher(client: async_nats::Client) -> mpsc::UnboundedSender<FlushWaiter> {
    let (tx, mut rx) = mpsc::unbounded_channel::<FlushWaiter>();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut waiters = vec![first];
            while let Ok(more) = rx.try_recv() {
                waiters.push(more);
            }
            let result = client.flush().await.map_err(|e| e.to_string());
            for waiter in waiters {
                let _ = waiter.send(result.clone());
            }
        }
    });
    tx
}

/// One NATS destination.
pub struct NatsSink {
    name: String,
    client: async_nats::Client,
    flusher: mpsc::UnboundedSender<FlushWaiter>,
    jetstream: Option<jetstream::Context>,
    subject: Template,
    mode: Mode,
    expected_stream: Option<String>,
}

impl NatsSink {
    /// Connects to the servers `uri` names and checks what can be checked before the first event:
    /// the subject template, and for JetStream the expected stream or, for a fixed subject, that
    /// some stream captures it. `options` given separately must all be known; without them, known
    /// options are read from the URI query.
    pub async fn open(
        uri: &str,
        name: Option<&str>,
        options: Option<&[(String, String)]>,
    ) -> Result<Self, SinkError> {
        let display = name
            .map(str::to_owned)
            .unwrap_or_else(|| redact_with(uri, SHOWN_OPTIONS));
        let config = |m: String| SinkError::config(&display, m);
        let target = options::parse(uri, options).map_err(config)?;
        let subject = Template::parse(&target.subject).map_err(|e| config(e.to_string()))?;
        check_subject(&subject.render_sample(escape_token)).map_err(config)?;
        let connect = target.options.connect_options().await.map_err(config)?;
        let client = connect
            .name("kfp-event-bridge")
            .event_callback({
                let name = display.clone();
                move |event| {
                    let name = name.clone();
                    async move { log_event(&name, event) }
                }
            })
            .connect(target.servers.as_slice())
            .await
            .map_err(|e| {
                SinkError::transient(&display, format!("cannot connect to NATS: {e}"))
                    .with_source(e)
            })?;
        let opts = &target.options;
        let jetstream =
            if opts.jetstream {
                let context = jetstream::ContextBuilder::new()
                    .timeout(opts.ack_timeout)
                    .max_ack_inflight(opts.max_ack_inflight)
                    .backpressure_on_inflight(true)
                    .build(client.clone());
                if let Some(stream) = &opts.stream {
                    context
                        .get_stream_no_info(stream)
                        .await
                        .map_err(|e| config(format!("stream {stream:?} is not available: {e}")))?;
                } else if subject.is_constant() {
                    let fixed = subject.render_sample(escape_token);
                    context.stream_by_subject(fixed.clone()).await.map_err(|e| {
                    config(format!(
                        "no JetStream stream captures subject {fixed:?} ({e}); create one, or \
                         publish with jetstream=false"
                    ))
                })?;
                }
                Some(context)
            } else {
                None
            };
        Ok(Self {
            name: display,
            flusher: spawn_flusher(client.clone()),
            client,
            jetstream,
            subject,
            mode: opts.mode,
            expected_stream: opts.stream.clone(),
        })
    }

    fn message(&self, event: &Event) -> (HeaderMap, Bytes) {
        let mut headers = HeaderMap::new();
        let payload = match self.mode {
            Mode::Structured => {
                headers.insert("Content-Type", structured::CONTENT_TYPE);
                structured::to_vec(event)
            }
            Mode::Binary => {
                for (name, value) in binary::attributes(event) {
                    headers.insert(
                        format!("ce-{name}").as_str(),
                        binary::percent_encode(&value).as_ref(),
                    );
                }
                if let Some(ct) = cloudevents::AttributesReader::datacontenttype(event) {
                    headers.insert("Content-Type", ct);
                }
                binary::body(event)
            }
        };
        (headers, Bytes::from(payload))
    }
}

impl Sink for NatsSink {
    fn name(&self) -> &str {
        &self.name
    }

    /// The client's connection state: healthy while connected (async-nats reconnects on its own).
    fn health(&self) -> sink_core::Checking<'_> {
        Box::pin(async move {
            match self.client.connection_state() {
                async_nats::connection::State::Connected => Ok(()),
                state => Err(SinkError::transient(
                    &self.name,
                    format!("not connected to NATS ({state:?})"),
                )),
            }
        })
    }

    fn key_order(&self) -> KeyOrder {
        // async-nats keeps publishing into its buffer while disconnected and sends that buffer on
        // reconnect, so a publish whose ack already timed out can still reach the stream after a
        // later one: one event per run in flight keeps runs in order (found by the outage test).
        KeyOrder::OneInFlight
    }

    fn publish<'a>(&'a self, event: &'a Event) -> Accepting<'a> {
        Box::pin(async move {
            let subject = self.subject.render(event, escape_token);
            let (headers, payload) = self.message(event);
            let Some(js) = &self.jetstream else {
                self.client
                    .publish_with_headers(subject.clone(), headers, payload)
                    .await
                    .map_err(|e| core_error(&self.name, &subject, e))?;
                let (waiter, flushed) = oneshot::channel();
                let name = self.name.clone();
                if self.flusher.send(waiter).is_err() {
                    return Err(SinkError::transient(&name, "flush task stopped"));
                }
                return Ok(Box::pin(async move {
                    match flushed.await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => {
                            Err(SinkError::transient(&name, format!("flush failed: {e}")))
                        }
                        Err(_) => Err(SinkError::transient(&name, "flush abandoned")),
                    }
                }) as Receipt);
            };
            let mut message = jetstream::message::PublishMessage::build()
                .payload(payload)
                .headers(headers)
                .message_id(cloudevents::AttributesReader::id(event));
            if let Some(stream) = &self.expected_stream {
                message = message.expected_stream(stream);
            }
            let ack = js
                .send_publish(subject.clone(), message)
                .await
                .map_err(|e| jetstream_error(&self.name, &subject, e))?;
            let name = self.name.clone();
            Ok(Box::pin(async move {
                ack.await
                    .map(|_| ())
                    .map_err(|e| jetstream_error(&name, &subject, e))
            }) as Receipt)
        })
    }

    fn flush(&self) -> Accepting<'_> {
        Box::pin(async move {
            let result = self.client.flush().await.map_err(|e| {
                SinkError::transient(&self.name, format!("flush failed: {e}")).with_source(e)
            });
            Ok(sink_core::settled(result))
        })
    }
}

fn core_error(name: &str, subject: &str, err: async_nats::PublishError) -> SinkError {
    use async_nats::client::PublishErrorKind as Kind;
    let message = format!("publish to {subject:?}: {err}");
    match err.kind() {
        Kind::MaxPayloadExceeded | Kind::InvalidSubject => SinkError::permanent(name, message),
        Kind::Send => SinkError::transient(name, message),
    }
    .with_source(err)
}

fn jetstream_error(
    name: &str,
    subject: &str,
    err: async_nats::jetstream::context::PublishError,
) -> SinkError {
    let kind = err.kind();
    let message = match kind {
        PublishErrorKind::StreamNotFound => {
            format!("no JetStream stream captures subject {subject:?} (no responders)")
        }
        _ => format!("JetStream publish to {subject:?}: {err}"),
    };
    match kind {
        PublishErrorKind::StreamNotFound
        | PublishErrorKind::MaxPayloadExceeded
        | PublishErrorKind::WrongLastMessageId
        | PublishErrorKind::WrongLastSequence => SinkError::permanent(name, message),
        PublishErrorKind::Other if is_permanent_api_error(&err) => {
            SinkError::permanent(name, message)
        }
        _ => SinkError::transient(name, message),
    }
    .with_source(err)
}

/// JetStream API errors that re-sending cannot fix, by the API's error code (the PubAck's
/// `err_code`): the message is larger than the stream allows (10054), or the expected stream does
/// not hold the subject (10060).
fn is_permanent_api_error(err: &async_nats::jetstream::context::PublishError) -> bool {
    use async_nats::jetstream::ErrorCode;
    use std::error::Error as _;
    err.source()
        .and_then(|source| source.downcast_ref::<async_nats::jetstream::Error>())
        .is_some_and(|api| {
            let code = api.error_code();
            code == ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM || code == ErrorCode::STREAM_NOT_MATCH
        })
}

fn log_event(name: &str, event: async_nats::Event) {
    use async_nats::Event as E;
    match event {
        E::Connected => tracing::info!(sink = name, "NATS connected"),
        E::Disconnected => tracing::warn!(sink = name, "NATS disconnected; reconnecting"),
        E::ServerError(err) => tracing::warn!(sink = name, error = %err, "NATS server error"),
        E::ClientError(err) => tracing::warn!(sink = name, error = %err, "NATS client error"),
        other => tracing::info!(sink = name, event = %other, "NATS connection event"),
    }
}

/// Template values become single subject tokens (`.`, `*`, `>` and whitespace turn into `_`;
/// `{type}` keeps its one dot, so `kfp.*.task.failed` subscriptions work).
pub fn escape_token(var: Var, value: &str, out: &mut String) {
    template::escape_token(var, value, &['.', '*', '>'], out);
}

fn check_subject(subject: &str) -> Result<(), String> {
    let bad = subject.is_empty()
        || subject
            .split('.')
            .any(|t| t.is_empty() || t == "*" || t == ">")
        || subject.chars().any(|c| c.is_whitespace());
    if bad {
        return Err(format!(
            "{subject:?} is not a publishable subject (empty tokens, wildcards or spaces)"
        ));
    }
    Ok(())
}

/// Options whose values are safe to show in logs; all others are masked.
pub const SHOWN_OPTIONS: &[&str] = &[
    "mode",
    "connect_timeout",
    "jetstream",
    "stream",
    "ack_timeout",
];

/// The NATS (core or JetStream) sink for the bridge's sink registry.
pub struct Factory;

impl sink_core::SinkFactory for Factory {
    fn schemes(&self) -> &'static [&'static str] {
        &["nats", "tls"]
    }

    fn shown_options(&self) -> &'static [&'static str] {
        SHOWN_OPTIONS
    }

    fn open<'a>(&'a self, config: sink_core::SinkConfig<'a>) -> sink_core::Opening<'a> {
        Box::pin(async move {
            let sink = NatsSink::open(config.uri, config.name, config.options).await?;
            Ok(std::sync::Arc::new(sink) as std::sync::Arc<dyn Sink>)
        })
    }

    fn describe(
        &self,
        config: sink_core::SinkConfig<'_>,
    ) -> Result<Option<sink_core::Description>, SinkError> {
        let display = config.display(SHOWN_OPTIONS);
        let target = options::parse(config.uri, config.options)
            .map_err(|m| SinkError::config(&display, m))?;
        let host = target.servers[0]
            .split_once("://")
            .map_or(target.servers[0].as_str(), |(_, h)| h)
            .to_owned();
        let o = &target.options;
        Ok(Some(sink_core::Description {
            protocol: "nats".into(),
            host,
            address: target.subject,
            mode: match o.mode {
                Mode::Binary => sink_core::ContentMode::Binary,
                Mode::Structured => sink_core::ContentMode::Structured,
            },
            summary: if o.jetstream {
                format!(
                    "JetStream publish: each event acknowledged by the stream{} (at least once; \
                     Nats-Msg-Id = the event id, so the stream drops repeats within its \
                     duplicate window){}",
                    o.stream
                        .as_deref()
                        .map(|s| format!(" {s}"))
                        .unwrap_or_default(),
                    if o.tls { "; TLS" } else { "" }
                )
            } else {
                format!(
                    "core NATS publish (at most once: no acknowledgement){}",
                    if o.tls { "; TLS" } else { "" }
                )
            },
            header_prefix: "ce-".into(),
            channel_binding: None,
            operation_binding: None,
            message_binding: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_checked() {
        assert!(check_subject("kfp.a.task.failed").is_ok());
        for bad in ["", "kfp..x", "kfp.*", "kfp.>", "kfp. x", ".kfp"] {
            assert!(check_subject(bad).is_err(), "{bad}");
        }
    }
}
