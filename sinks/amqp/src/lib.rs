//! The AMQP 0-9-1 sink (RabbitMQ): publisher confirms on a dedicated channel, `mandatory` so an
//! unroutable message comes back as a failure, persistent messages, routing-key templates.
//!
//! - **binary** (default): `ce-` headers as long strings, no percent-encoding (the Knative RabbitMQ
//!   binding, read by Knative's RabbitMQ source and broker, the Python SDK's RabbitMQ binding and
//!   Spring); the prefix is configurable (`cloudEvents_`, `cloudEvents:` for AMQP 1.0 style
//!   consumers); `content_type` from `datacontenttype`; body = data.
//! - **structured**: `content_type: application/cloudevents+json`, body = the JSON event.
//!
//! Every message carries `message_id` = id, `timestamp` = the event time (seconds) and
//! `delivery_mode` 2. A lost connection or channel is re-established on the next publish;
//! unconfirmed messages fail and are retried by the lane, never assumed delivered.

mod options;

pub use options::{AmqpOptions, Declare, Mode};

use cloudevents::AttributesReader;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use sink_core::template::{self, Template, Var};
use sink_core::{
    Accepting, Event, KeyOrder, Receipt, Sink, SinkError, binary, redact_with, structured,
};
use tokio::sync::Mutex;

/// One exchange on one broker.
pub struct AmqpSink {
    name: String,
    uri: String,
    options: AmqpOptions,
    routing_key: Template,
    live: Mutex<Option<(Connection, Channel)>>,
    /// When the connection was last re-established after one was lost (`None`: never lost).
    reconnected: std::sync::Mutex<Option<std::time::Instant>>,
}

/// For this long after a reconnect an unroutable message is retried, not refused: a broker
/// that has just restarted accepts connections and publishes before it has recovered every
/// durable queue and binding (RabbitMQ does under load), and a queue a consumer declares again
/// after the restart comes back later still. Past it, unroutable is permanent as before.
pub const UNROUTABLE_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

impl AmqpSink {
    /// Connects, opens a confirm-mode channel and checks or declares the exchange. `options` given
    /// separately must all be known; without them, known options are read from the URI query.
    pub async fn open(
        uri: &str,
        name: Option<&str>,
        options: Option<&[(String, String)]>,
    ) -> Result<Self, SinkError> {
        let display = name
            .map(str::to_owned)
            .unwrap_or_else(|| redact_with(uri, SHOWN_OPTIONS));
        let config = |m: String| SinkError::config(&display, m);
        let (uri, options) = options::parse(uri, options).map_err(config)?;
        let routing_key = Template::parse(&options.routing_key)
            .map_err(|e| config(format!("routing_key: {e}")))?;
        let sink = Self {
            name: display.clone(),
            uri,
            options,
            routing_key,
            live: Mutex::new(None),
            reconnected: std::sync::Mutex::new(None),
        };
        let channel = sink.channel().await?;
        let exchange = sink.options.exchange.as_str();
        let kind = match sink.options.declare {
            Declare::None => None,
            Declare::Passive if exchange.is_empty() => None,
            Declare::Passive => Some((ExchangeKind::Topic, true)),
            Declare::Kind(ref kind) => Some((kind.clone(), false)),
        };
        if let Some((kind, passive)) = kind {
            let options = ExchangeDeclareOptions {
                passive,
                durable: sink.options.durable,
                ..Default::default()
            };
            channel
                .exchange_declare(exchange.into(), kind, options, FieldTable::default())
                .await
                .map_err(|e| {
                    config(if passive {
                        format!(
                            "exchange {exchange:?} is not available ({e}); create it, or let the \
                             bridge declare it with declare=topic"
                        )
                    } else {
                        format!("cannot declare exchange {exchange:?}: {e}")
                    })
                })?;
        }
        Ok(sink)
    }

    /// The confirm-mode channel, re-established if the connection or the channel went away.
    async fn channel(&self) -> Result<Channel, SinkError> {
        let mut live = self.live.lock().await;
        if let Some((connection, channel)) = live.as_mut() {
            if channel.status().connected() {
                return Ok(channel.clone());
            }
            if connection.status().connected() {
                let fresh = confirm_channel(connection)
                    .await
                    .map_err(|e| self.transient("cannot open a channel", e))?;
                *channel = fresh.clone();
                return Ok(fresh);
            }
        }
        // The dead connection stays in `live` until a new one replaces it, so that the attempt
        // that succeeds after refused ones is known for a reconnect all the same.
        let lost = live.is_some();
        let properties =
            ConnectionProperties::default().with_connection_name("kfp-event-bridge".into());
        let connecting = async {
            match self
                .options
                .tls_config()
                .map_err(|m| SinkError::config(&self.name, m))?
            {
                Some(tls) => {
                    let runtime = lapin::runtime::default_runtime()
                        .map_err(|e| self.transient("no async runtime", e))?;
                    Connection::connect_with_config(&self.uri, properties, tls, runtime).await
                }
                None => Connection::connect(&self.uri, properties).await,
            }
            .map_err(|e| self.transient("cannot connect to the broker", e))
        };
        let connection = tokio::time::timeout(self.options.connect_timeout, connecting)
            .await
            .map_err(|_| {
                SinkError::transient(&self.name, "cannot connect to the broker: timed out")
            })??;
        let channel = confirm_channel(&connection)
            .await
            .map_err(|e| self.transient("cannot open a channel", e))?;
        tracing::info!(sink = %self.name, "AMQP connected");
        if lost {
            *self.reconnected.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(std::time::Instant::now());
        }
        *live = Some((connection, channel.clone()));
        Ok(channel)
    }

    fn transient(&self, what: &str, err: lapin::Error) -> SinkError {
        SinkError::transient(&self.name, format!("{what}: {err}")).with_source(err)
    }

    fn properties(&self, event: &Event) -> (BasicProperties, Vec<u8>) {
        let timestamp = event
            .time()
            .map(|t| t.timestamp())
            .unwrap_or_else(now_seconds)
            .max(0) as u64;
        let properties = BasicProperties::default()
            .with_message_id(event.id().into())
            .with_delivery_mode(2)
            .with_timestamp(timestamp);
        match self.options.mode {
            Mode::Structured => (
                properties.with_content_type(structured::CONTENT_TYPE.into()),
                structured::to_vec(event),
            ),
            Mode::Binary => {
                let mut headers = FieldTable::default();
                for (name, value) in binary::attributes(event) {
                    headers.insert(
                        ShortString::from(format!("{}{name}", self.options.header_prefix)),
                        AMQPValue::LongString(LongString::from(value.as_ref())),
                    );
                }
                let mut properties = properties.with_headers(headers);
                if let Some(ct) = event.datacontenttype() {
                    properties = properties.with_content_type(ct.into());
                }
                (properties, binary::body(event))
            }
        }
    }
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

async fn confirm_channel(connection: &Connection) -> Result<Channel, lapin::Error> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

/// Routing-key values become single words: topic patterns split on `.` and match `*`/`#`, so a
/// value's own dots and wildcards turn into `_` (`{type}` keeps its one dot: bind `*.task.failed`).
pub fn escape_word(var: Var, value: &str, out: &mut String) {
    template::escape_token(var, value, &['.', '*', '#'], out);
}

/// Whether a broker error means the message can never be published as is, by the AMQP reply
/// code the broker closed the channel with: the exchange does not exist (404 NOT_FOUND), the
/// broker refuses the content (406 PRECONDITION_FAILED, e.g. an oversize frame) or the user may
/// not publish there (403 ACCESS_REFUSED).
fn is_permanent(err: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    match err.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => matches!(
            amqp.kind(),
            AMQPErrorKind::Soft(
                AMQPSoftError::NOTFOUND
                    | AMQPSoftError::PRECONDITIONFAILED
                    | AMQPSoftError::ACCESSREFUSED
            )
        ),
        _ => false,
    }
}

impl Sink for AmqpSink {
    fn name(&self) -> &str {
        &self.name
    }

    /// An open confirm-mode channel: reconnects when the connection went away, as a publish would.
    fn health(&self) -> sink_core::Checking<'_> {
        Box::pin(async move { self.channel().await.map(|_| ()) })
    }

    fn key_order(&self) -> KeyOrder {
        // One channel, confirms in publish order; a broken channel fails every later confirm.
        KeyOrder::Pipelined
    }

    fn publish<'a>(&'a self, event: &'a Event) -> Accepting<'a> {
        Box::pin(async move {
            let channel = self.channel().await?;
            let routing_key = self.routing_key.render(event, escape_word);
            let (properties, body) = self.properties(event);
            let exchange = self.options.exchange.clone();
            let publish = BasicPublishOptions {
                mandatory: true,
                immediate: false,
            };
            let confirm = channel
                .basic_publish(
                    exchange.as_str().into(),
                    routing_key.as_str().into(),
                    publish,
                    &body,
                    properties,
                )
                .await
                .map_err(|e| self.transient("publish failed", e))?;
            let name = self.name.clone();
            let recovering = self
                .reconnected
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some_and(|at| at.elapsed() < UNROUTABLE_GRACE);
            Ok(Box::pin(async move {
                match confirm.await {
                    Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => Ok(()),
                    Ok(Confirmation::Ack(Some(returned))) => {
                        let why = format!(
                            "unroutable: no queue bound for routing key {routing_key:?} on \
                             exchange {exchange:?} ({} {})",
                            returned.reply_code, returned.reply_text
                        );
                        Err(if recovering {
                            SinkError::transient(
                                &name,
                                format!(
                                    "{why}, just after reconnecting: retried while the broker recovers its queues"
                                ),
                            )
                        } else {
                            SinkError::permanent(&name, why)
                        })
                    }
                    Ok(Confirmation::Nack(_)) => {
                        Err(SinkError::transient(&name, "the broker nacked the message"))
                    }
                    Err(err) if is_permanent(&err) => Err(SinkError::permanent(
                        &name,
                        format!("publish to exchange {exchange:?} refused: {err}"),
                    )
                    .with_source(err)),
                    Err(err) => Err(SinkError::transient(
                        &name,
                        format!("no publisher confirm: {err}"),
                    )
                    .with_source(err)),
                }
            }) as Receipt)
        })
    }
}

/// Options whose values are safe to show in logs; all others are masked.
pub const SHOWN_OPTIONS: &[&str] = &[
    "mode",
    "exchange",
    "routing_key",
    "declare",
    "durable",
    "header_prefix",
    "connect_timeout",
];

/// The AMQP 0-9-1 (RabbitMQ) sink for the bridge's sink registry.
pub struct Factory;

impl sink_core::SinkFactory for Factory {
    fn schemes(&self) -> &'static [&'static str] {
        &["amqp", "amqps"]
    }

    fn shown_options(&self) -> &'static [&'static str] {
        SHOWN_OPTIONS
    }

    fn open<'a>(&'a self, config: sink_core::SinkConfig<'a>) -> sink_core::Opening<'a> {
        Box::pin(async move {
            let sink = AmqpSink::open(config.uri, config.name, config.options).await?;
            Ok(std::sync::Arc::new(sink) as std::sync::Arc<dyn Sink>)
        })
    }

    fn describe(
        &self,
        config: sink_core::SinkConfig<'_>,
    ) -> Result<Option<sink_core::Description>, SinkError> {
        let display = config.display(SHOWN_OPTIONS);
        let (uri, o) = options::parse_reading(config.uri, config.options, false)
            .map_err(|m| SinkError::config(&display, m))?;
        let (scheme, rest) = uri.split_once("://").unwrap_or(("amqp", &uri));
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let vhost = rest
            .split_once('/')
            .map(|(_, v)| v.split('?').next().unwrap_or_default())
            .filter(|v| !v.is_empty())
            .map_or_else(
                || "/".to_owned(),
                |v| sink_core::uri::decode(v).unwrap_or_default(),
            );
        // The exchange's type and durability are the bridge's to say only when it declares the
        // exchange; otherwise they are the broker's (checked to exist, or not at all).
        let mut exchange = serde_json::json!({"name": o.exchange, "vhost": vhost});
        if let options::Declare::Kind(kind) = &o.declare {
            exchange["type"] = format!("{kind:?}").to_lowercase().into();
            exchange["durable"] = o.durable.into();
        }
        Ok(Some(sink_core::Description {
            protocol: scheme.to_owned(),
            host: host.to_owned(),
            address: o.routing_key.clone(),
            mode: match o.mode {
                options::Mode::Binary => sink_core::ContentMode::Binary,
                options::Mode::Structured => sink_core::ContentMode::Structured,
            },
            summary: "publisher confirms, mandatory, persistent (delivery mode 2): at least \
                      once; an unroutable event is refused"
                .into(),
            header_prefix: o.header_prefix.clone(),
            channel_binding: Some(serde_json::json!({
                "is": "routingKey",
                "exchange": exchange,
                "bindingVersion": "0.3.0",
            })),
            operation_binding: Some(serde_json::json!({
                "deliveryMode": 2,
                "mandatory": true,
                "bindingVersion": "0.3.0",
            })),
            message_binding: None,
        }))
    }
}
