//! What the consumer examples share: a broker message turned into a CloudEvent by the
//! `cloudevents-sdk` crate, one line of run/task status per event, and the HTTP receiver the
//! Knative-style examples run.
#![allow(dead_code)] // each example uses a part

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use cloudevents::event::SpecVersion;
use cloudevents::message::{BinaryDeserializer, BinarySerializer, MessageAttributeValue};
use cloudevents::{AttributesReader, Event};
use std::future::Future;
use std::sync::Arc;

/// Prefix of the full type; status lines and routing keys use what follows (`task.failed`).
pub const TYPE_PREFIX: &str = "org.kubeflow.pipelines.";

/// A message as Kafka, NATS and AMQP deliver it: headers, a content type and a body. In binary
/// mode every attribute is a header under `prefix` (`ce_` on Kafka, `ce-` on NATS and AMQP as the
/// bridge publishes them; none of these bindings percent-encodes) and the body is the data; in
/// structured mode the body is the whole event as JSON.
pub struct Message {
    pub prefix: &'static str,
    pub headers: Vec<(String, String)>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl Message {
    /// A message whose content type is one of its headers (Kafka, NATS).
    pub fn with_headers(
        prefix: &'static str,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Self {
        let content_type = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
            .map(|(_, value)| value.clone());
        Self {
            prefix,
            headers,
            content_type,
            body,
        }
    }

    pub fn into_event(self) -> anyhow::Result<Event> {
        let structured = self
            .content_type
            .as_deref()
            .is_some_and(|ct| ct.starts_with("application/cloudevents+json"));
        if structured {
            return serde_json::from_slice(&self.body).context("structured-mode JSON event");
        }
        BinaryDeserializer::into_event(self).context("binary-mode event")
    }
}

/// Hands the SDK's event builder the attributes found in the headers; the SDK checks them.
impl BinaryDeserializer for Message {
    fn deserialize_binary<R: Sized, V: BinarySerializer<R>>(
        self,
        mut builder: V,
    ) -> cloudevents::message::Result<R> {
        let version = self
            .headers
            .iter()
            .find(|(name, _)| name.strip_prefix(self.prefix) == Some("specversion"))
            .ok_or(cloudevents::message::Error::WrongEncoding {})?;
        let version = SpecVersion::try_from(version.1.as_str())?;
        let known = version.attribute_names();
        builder = builder.set_spec_version(version)?;
        for (header, value) in self.headers {
            let Some(name) = header.strip_prefix(self.prefix) else {
                continue;
            };
            let value = MessageAttributeValue::String(value);
            builder = match name {
                "specversion" => builder,
                _ if known.contains(&name) => builder.set_attribute(name, value)?,
                _ => builder.set_extension(name, value)?,
            };
        }
        if let Some(ct) = self.content_type {
            builder =
                builder.set_attribute("datacontenttype", MessageAttributeValue::String(ct))?;
        }
        if self.body.is_empty() {
            builder.end()
        } else {
            builder.end_with_data(self.body)
        }
    }
}

/// The event's data as JSON (`Null` when it has none or it is not JSON).
pub fn data(event: &Event) -> serde_json::Value {
    event
        .data()
        .and_then(|d| serde_json::Value::try_from(d.clone()).ok())
        .unwrap_or_default()
}

/// `task.failed` for `org.kubeflow.pipelines.task.failed`.
pub fn short_type(event: &Event) -> &str {
    event.ty().strip_prefix(TYPE_PREFIX).unwrap_or(event.ty())
}

/// One line per event: what happened to which run or task, then the event id.
pub fn status_line(event: &Event) -> String {
    let data = data(event);
    let text = |key: &str| data[key].as_str().unwrap_or_default().to_owned();
    let mut line = format!(
        "{:<14} {}",
        short_type(event),
        event.subject().unwrap_or("-")
    );
    if let Some(pipeline) = data["PipelineName"].as_str().filter(|p| !p.is_empty()) {
        line += &format!(" pipeline={pipeline}");
    }
    if !text("Phase").is_empty() {
        line += &format!(" phase={}", text("Phase"));
    }
    if let Some(retry) = data["Attempt"].as_u64().filter(|a| *a > 0) {
        line += &format!(" attempt={}", retry + 1);
    }
    if let Some(seconds) = data["DurationSeconds"].as_i64() {
        line += &format!(" took={seconds}s");
    }
    if let Some(category) = data["Lifecycle"]["Category"].as_str() {
        line += &format!(" lifecycle={category}");
    }
    line + &format!(" id={}", event.id())
}

/// Runs an HTTP receiver as a Knative Service would: CloudEvents POSTed to `/` in binary or
/// structured mode (decoded by the SDK's HTTP binding), `handle` called for each; 200 when it
/// succeeds, 400 for a body that is no CloudEvent (the sender should not retry it), 500 when the
/// handler fails (the sender retries). Prints `listening on ADDR` to stderr once bound.
pub async fn serve<F, Fut>(listen: &str, handle: F) -> anyhow::Result<()>
where
    F: Fn(Event) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let handle = Arc::new(handle);
    let app = Router::new().route(
        "/",
        post(move |headers: HeaderMap, body: Bytes| {
            let handle = handle.clone();
            async move {
                let event = match cloudevents::binding::http::to_event(&headers, body.to_vec()) {
                    Ok(event) => event,
                    Err(err) => {
                        eprintln!("not a CloudEvent: {err}");
                        return (StatusCode::BAD_REQUEST, err.to_string());
                    }
                };
                match handle(event).await {
                    Ok(()) => (StatusCode::OK, String::new()),
                    Err(err) => {
                        eprintln!("handling failed, the sender will retry: {err:#}");
                        (StatusCode::INTERNAL_SERVER_ERROR, format!("{err:#}"))
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    eprintln!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await?;
    Ok(())
}

/// Resolves on SIGTERM (what Kubernetes sends) or Ctrl-C.
pub async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Knative tells a Service its port in `PORT`; 8080 otherwise.
pub fn default_listen() -> String {
    format!(
        "0.0.0.0:{}",
        std::env::var("PORT").unwrap_or_else(|_| "8080".to_owned())
    )
}

/// `NAME=VALUE` as given on the command line.
pub fn key_value(arg: &str) -> anyhow::Result<(String, String)> {
    match arg.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => bail!("{arg:?}: expected NAME=VALUE"),
    }
}
