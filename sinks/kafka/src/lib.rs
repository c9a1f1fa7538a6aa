//! The Kafka sink: an rdkafka idempotent producer (`acks=all`) writing the CloudEvents Kafka
//! protocol binding.
//!
//! - **binary** (default, as Knative's KafkaSink): one `ce_<attribute>` header per attribute and
//!   extension, values as raw UTF-8 (the binding defines no percent-encoding), `content-type` =
//!   `datacontenttype`, value = data.
//! - **structured**: `content-type: application/cloudevents+json; charset=UTF-8`, value = the
//!   JSON event, no `ce_` headers (SDKs pick binary mode when any is present).
//!
//! The record key is the `partitionkey` extension by default (one run → one partition → in
//! order), `key=none` leaves it empty. The acknowledgement is the delivery report: librdkafka
//! retries transient broker errors itself until `message.timeout.ms` (30 s here, so the lane's
//! backoff takes over in an outage), keeping order per partition.
//!
//! A fatal error of the idempotent producer (librdkafka's `ERR__FATAL`: the broker reported a
//! gap in the producer's sequence numbers, as after it lost records it had acknowledged, or
//! fenced the producer) leaves that producer failing every record for good. The sink then logs
//! the error, builds a new producer from the same configuration (a new producer id, its
//! sequences from zero) and drops the old one, whose queued and in-flight records are then
//! reported as failed (transient: the lane sends them again). The new producer takes no record
//! until all of the old one's are reported, so a run's later events cannot overtake its earlier
//! ones across the two. An authorization refusal behind the fatal error is permanent instead.

use cloudevents::AttributesReader;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use sink_core::template::{Template, Var};
use sink_core::{
    Accepting, Event, KeyOrder, Receipt, Sink, SinkError, binary, redact_with, structured,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the first metadata request may take before the sink refuses to start.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a health check waits for metadata.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// Producer settings the sink starts from; `--kafka-option` and the config file override them.
pub const DEFAULTS: [(&str, &str); 7] = [
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("linger.ms", "5"),
    ("message.timeout.ms", "30000"),
    ("max.in.flight.requests.per.connection", "5"),
    ("client.id", "kfp-event-bridge"),
    ("socket.keepalive.enable", "true"),
];

/// Option names whose values are never logged.
fn is_secret(name: &str) -> bool {
    ["password", "secret", "token", "jaas", "key.pem", "private"]
        .iter()
        .any(|s| name.contains(s))
        || name.ends_with(".key")
}

/// Content mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Binary,
    Structured,
}

/// What becomes the record key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    PartitionKey,
    None,
}

/// One topic template on one cluster.
pub struct KafkaSink {
    name: String,
    producer: Arc<Renewable>,
    topic: Template,
    mode: Mode,
    key: Key,
    /// The topic a constant template names: what the health check asks metadata for.
    fixed_topic: Option<String>,
}

/// Kafka topic names: `[a-zA-Z0-9._-]`, up to 249 characters.
fn escape_topic(_var: Var, value: &str, out: &mut String) {
    if value.is_empty() {
        out.push('_');
        return;
    }
    for c in value.chars() {
        out.push(
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            },
        );
    }
}

fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() || topic.len() > 249 || topic == "." || topic == ".." {
        return Err(format!("{topic:?} is not a valid Kafka topic name"));
    }
    match topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some(c) => Err(format!(
            "{topic:?} is not a valid Kafka topic name ({c:?}; allowed: letters, digits, . _ -)"
        )),
        None => Ok(()),
    }
}

/// The parts of `kafka://HOST:PORT[,HOST:PORT…]/TOPIC_TEMPLATE[?…]`.
struct Parsed {
    servers: String,
    topic: String,
    mode: Mode,
    key: Key,
    properties: Vec<(String, String)>,
}

/// Reads the URI; `mode`, `key` and librdkafka properties (names with a dot, or ending in
/// `_file` to read the value from a file) may come in its query or as `options`.
fn parse(uri: &str, options: &[(String, String)]) -> Result<Parsed, String> {
    parse_reading(uri, options, true)
}

/// [`parse`]; `read_files: false` leaves `NAME_file` properties unread (a description of the
/// sink needs their names, not the secrets).
fn parse_reading(
    uri: &str,
    options: &[(String, String)],
    read_files: bool,
) -> Result<Parsed, String> {
    let rest = uri
        .strip_prefix("kafka://")
        .ok_or("want kafka://HOST:PORT[,HOST:PORT…]/TOPIC_TEMPLATE")?;
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (servers, topic) = rest
        .split_once('/')
        .ok_or("no topic: want kafka://HOST:PORT/TOPIC_TEMPLATE")?;
    if servers.is_empty() || servers.contains('@') {
        return Err("want HOST:PORT[,HOST:PORT…] (credentials go in sasl.* options)".into());
    }
    let topic = sink_core::uri::decode(topic)?;
    let mut parsed = Parsed {
        servers: servers.to_owned(),
        topic,
        mode: Mode::Binary,
        key: Key::PartitionKey,
        properties: Vec::new(),
    };
    let mut all: Vec<(String, String)> = sink_core::uri::params(query)?
        .into_iter()
        .map(|p| (p.key.to_owned(), p.value))
        .collect();
    all.extend(options.iter().cloned());
    for (name, value) in all {
        match name.as_str() {
            "mode" => {
                parsed.mode = match value.as_str() {
                    "binary" => Mode::Binary,
                    "structured" => Mode::Structured,
                    other => return Err(format!("mode: {other:?} (want binary or structured)")),
                }
            }
            "key" => {
                parsed.key = match value.as_str() {
                    "partitionkey" => Key::PartitionKey,
                    "none" => Key::None,
                    other => return Err(format!("key: {other:?} (want partitionkey or none)")),
                }
            }
            "bootstrap.servers" => {
                return Err("bootstrap.servers: the servers come from the URI".into());
            }
            file if file.ends_with("_file") && file.contains('.') && !read_files => {
                let property = file.trim_end_matches("_file").to_owned();
                parsed.properties.push((property, String::new()));
            }
            file if file.ends_with("_file") && file.contains('.') => {
                let property = file.trim_end_matches("_file").to_owned();
                let text = std::fs::read_to_string(&value)
                    .map_err(|e| format!("{file}: cannot read {value}: {e}"))?;
                parsed
                    .properties
                    .push((property, text.trim_end().to_owned()));
            }
            property if property.contains('.') => parsed.properties.push((name, value)),
            other => {
                return Err(format!(
                    "unknown option {other:?} (mode, key, or a librdkafka property such as security.protocol)"
                ));
            }
        }
    }
    Ok(parsed)
}

impl KafkaSink {
    /// Builds the producer and asks the cluster for metadata: an invalid property, a bad topic
    /// template or an unreachable cluster is an error naming the sink.
    pub async fn open(
        uri: &str,
        name: Option<&str>,
        options: Option<&[(String, String)]>,
    ) -> Result<Self, SinkError> {
        let sink_name = name
            .map(str::to_owned)
            .unwrap_or_else(|| redact_with(uri, SHOWN_OPTIONS));
        let config = |m: String| SinkError::config(&sink_name, m);
        let parsed = parse(uri, options.unwrap_or(&[])).map_err(config)?;
        let topic = Template::parse(&parsed.topic).map_err(|e| config(format!("topic: {e}")))?;
        check_topic(&topic.render_sample(escape_topic)).map_err(config)?;
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", &parsed.servers);
        for (key, value) in DEFAULTS {
            client.set(key, value);
        }
        for (key, value) in &parsed.properties {
            client.set(key, value);
        }
        let shown: Vec<String> = parsed
            .properties
            .iter()
            .map(|(k, v)| {
                if is_secret(k) {
                    format!("{k}=***")
                } else {
                    format!("{k}={v}")
                }
            })
            .collect();
        let producer: FutureProducer = client
            .create()
            .map_err(|e| config(format!("producer configuration refused: {e}")))?;
        let probe = producer.clone();
        let fixed = topic
            .is_constant()
            .then(|| topic.render_sample(escape_topic));
        let metadata = metadata(probe, fixed.clone(), STARTUP_TIMEOUT)
            .await
            .map_err(|e| config(format!("metadata request: {e}")))?;
        let brokers = metadata.map_err(|e| {
            config(format!(
                "no metadata from {} within {}s: {e}",
                parsed.servers,
                STARTUP_TIMEOUT.as_secs()
            ))
        })?;
        tracing::info!(sink = %sink_name, brokers, options = ?shown, "kafka producer ready");
        Ok(Self {
            name: sink_name.clone(),
            producer: Arc::new(Renewable {
                sink: sink_name,
                config: client,
                current: Mutex::new(Generation {
                    number: 0,
                    producer,
                    outstanding: Arc::new(AtomicUsize::new(0)),
                    draining: None,
                }),
            }),
            topic,
            mode: parsed.mode,
            key: parsed.key,
            fixed_topic: fixed,
        })
    }
}

/// A metadata request (for `topic`, or the cluster's brokers when the topic is templated) on a
/// blocking thread: the number of brokers in the answer.
async fn metadata(
    producer: FutureProducer,
    topic: Option<String>,
    timeout: Duration,
) -> Result<KafkaResult<usize>, tokio::task::JoinError> {
    tokio::task::spawn_blocking(move || {
        producer
            .client()
            .fetch_metadata(topic.as_deref(), timeout)
            .map(|m| m.brokers().len())
    })
    .await
}

/// Kafka headers and value for `event` in `mode`.
pub fn encode(mode: Mode, event: &Event) -> (OwnedHeaders, Vec<u8>) {
    match mode {
        Mode::Binary => {
            let attributes = binary::attributes(event);
            let mut headers = OwnedHeaders::new_with_capacity(attributes.len() + 1);
            if let Some(ct) = event.datacontenttype() {
                headers = headers.insert(Header {
                    key: "content-type",
                    value: Some(ct.as_bytes()),
                });
            }
            for (name, value) in &attributes {
                headers = headers.insert(Header {
                    key: &format!("ce_{name}"),
                    value: Some(value.as_bytes()),
                });
            }
            (headers, binary::body(event))
        }
        Mode::Structured => (
            OwnedHeaders::new_with_capacity(1).insert(Header {
                key: "content-type",
                value: Some("application/cloudevents+json; charset=UTF-8".as_bytes()),
            }),
            structured::to_vec(event),
        ),
    }
}

/// How long a new producer waits for the records of the one it replaced to be reported before
/// it publishes anyway (their delivery reports come within the old producer's 500 ms purge at
/// drop; this only bounds a report that never comes).
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// The producer in use, replaced after a fatal error.
struct Renewable {
    sink: String,
    /// What a replacement is built from.
    config: ClientConfig,
    current: Mutex<Generation>,
}

/// One producer and its records not yet reported.
struct Generation {
    number: u64,
    producer: FutureProducer,
    outstanding: Arc<AtomicUsize>,
    /// The replaced producer's records not yet reported, and since when it is replaced: a run's
    /// later events must not reach the broker on the new producer while its earlier ones may
    /// still fail on the old one.
    draining: Option<(Arc<AtomicUsize>, Instant)>,
}

/// One record sent on a generation's producer and not yet reported.
struct Outstanding(Arc<AtomicUsize>);

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Renewable {
    fn lock(&self) -> std::sync::MutexGuard<'_, Generation> {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The producer in use.
    fn producer(&self) -> FutureProducer {
        self.lock().producer.clone()
    }

    /// The producer to send one record on, its generation and the record's count; refused
    /// (transient) while a replaced producer's records are still being reported.
    fn send_on(&self) -> Result<(u64, FutureProducer, Outstanding), SinkError> {
        let mut current = self.lock();
        if let Some((old, since)) = &current.draining {
            let left = old.load(Ordering::Acquire);
            if left > 0 && since.elapsed() < DRAIN_LIMIT {
                return Err(SinkError::transient(
                    &self.sink,
                    format!("a new producer waits for {left} records of the one it replaced"),
                ));
            }
            if left > 0 {
                tracing::warn!(sink = %self.sink, records = left, "the replaced kafka producer's last records were never reported; publishing on the new one");
            }
            current.draining = None;
        }
        current.outstanding.fetch_add(1, Ordering::AcqRel);
        Ok((
            current.number,
            current.producer.clone(),
            Outstanding(Arc::clone(&current.outstanding)),
        ))
    }

    /// After `err` on generation `number`: if that producer is in a fatal state and still in
    /// use, it is replaced by a new one from the same configuration and the record is to be
    /// sent again (transient); an authorization refusal is permanent, as it is for a record.
    fn failed(&self, number: u64, err: &KafkaError) -> SinkError {
        let mut current = self.lock();
        if current.number != number {
            return classify(&self.sink, err); // Already replaced.
        }
        let Some((code, reason)) = current.producer.client().fatal_error() else {
            return classify(&self.sink, err);
        };
        let error = format!("{code:?}: {reason}");
        if matches!(
            code,
            RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
        ) {
            return SinkError::permanent(&self.sink, format!("producer refused: {error}"));
        }
        match self.config.create::<FutureProducer>() {
            Ok(fresh) => {
                tracing::error!(
                    sink = %self.sink,
                    error = %error,
                    "kafka producer failed fatally (the broker may have lost records it had \
                     acknowledged); its records are sent again on a new producer"
                );
                let old = std::mem::replace(
                    &mut *current,
                    Generation {
                        number: number + 1,
                        producer: fresh,
                        outstanding: Arc::new(AtomicUsize::new(0)),
                        draining: None,
                    },
                );
                current.draining = Some((old.outstanding, Instant::now()));
                // Dropping a producer purges its queue and in-flight records (each then
                // reported as failed) and joins its thread: not on the runtime's threads.
                let producer = old.producer;
                drop(tokio::task::spawn_blocking(move || drop(producer)));
            }
            Err(e) => tracing::error!(
                sink = %self.sink,
                error = %error,
                replacement = %e,
                "kafka producer failed fatally and no new one could be made; retrying"
            ),
        }
        classify(&self.sink, err)
    }
}

/// librdkafka's error codes, sorted into what retrying can fix and what it cannot.
pub fn classify(sink: &str, err: &KafkaError) -> SinkError {
    let code = err.rdkafka_error_code();
    let permanent = matches!(
        code,
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::InvalidTopic
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::InvalidArgument
                | RDKafkaErrorCode::InvalidConfig
                | RDKafkaErrorCode::InvalidRequiredAcks
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::Authentication
        )
    );
    if permanent {
        SinkError::permanent(sink, err.to_string())
    } else {
        SinkError::transient(sink, err.to_string())
    }
}

impl Sink for KafkaSink {
    fn name(&self) -> &str {
        &self.name
    }

    /// A metadata request for the topic a constant template names (the brokers otherwise),
    /// answered within 5 s.
    fn health(&self) -> sink_core::Checking<'_> {
        Box::pin(async move {
            let answer = metadata(
                self.producer.producer(),
                self.fixed_topic.clone(),
                HEALTH_TIMEOUT,
            )
            .await
            .map_err(|e| SinkError::transient(&self.name, format!("metadata request: {e}")))?;
            answer.map(|_| ()).map_err(|e| {
                SinkError::transient(&self.name, format!("no metadata within 5s: {e}"))
            })
        })
    }

    /// The idempotent producer keeps a partition's records in order through its own retries,
    /// and a record that finally fails takes the later ones of its partition with it.
    fn key_order(&self) -> KeyOrder {
        KeyOrder::Pipelined
    }

    fn publish<'a>(&'a self, event: &'a Event) -> Accepting<'a> {
        Box::pin(async move {
            let topic = self.topic.render(event, escape_topic);
            let (headers, value) = encode(self.mode, event);
            let key = match (self.key, event.extension("partitionkey")) {
                (Key::PartitionKey, Some(k)) => Some(k.to_string()),
                _ => None,
            };
            let mut record = FutureRecord::to(&topic).payload(&value).headers(headers);
            if let Some(key) = &key {
                record = record.key(key.as_str());
            }
            let (number, producer, outstanding) = self.producer.send_on()?;
            let sent = producer.send_result(record);
            // Only the handle keeps a producer alive: once replaced, it is dropped (and its
            // records reported) at once.
            drop(producer);
            let delivery = match sent {
                Ok(delivery) => delivery,
                Err((err, _)) => {
                    drop(outstanding);
                    return Err(self.producer.failed(number, &err));
                }
            };
            let renewable = Arc::clone(&self.producer);
            let receipt: Receipt = Box::pin(async move {
                let report = delivery.await;
                drop(outstanding);
                match report {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((err, _))) => Err(renewable.failed(number, &err)),
                    Err(_) => Err(SinkError::transient(
                        &renewable.sink,
                        "the producer was dropped",
                    )),
                }
            });
            Ok(receipt)
        })
    }

    fn flush(&self) -> Accepting<'_> {
        Box::pin(async move {
            let producer = self.producer.producer();
            let name = self.name.clone();
            let flushed =
                tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(30)))
                    .await
                    .map_err(|e| SinkError::transient(&name, e.to_string()))?;
            let result = flushed.map_err(|e| classify(&self.name, &e));
            Ok(Box::pin(std::future::ready(result)) as Receipt)
        })
    }
}

/// Options whose values are safe to show in logs; all others are masked.
pub const SHOWN_OPTIONS: &[&str] = &["mode", "key"];

/// The Kafka sink for the bridge's sink registry.
pub struct Factory;

impl sink_core::SinkFactory for Factory {
    fn schemes(&self) -> &'static [&'static str] {
        &["kafka"]
    }

    fn shown_options(&self) -> &'static [&'static str] {
        SHOWN_OPTIONS
    }

    fn open<'a>(&'a self, config: sink_core::SinkConfig<'a>) -> sink_core::Opening<'a> {
        Box::pin(async move {
            let sink = KafkaSink::open(config.uri, config.name, config.options).await?;
            Ok(std::sync::Arc::new(sink) as std::sync::Arc<dyn Sink>)
        })
    }

    fn describe(
        &self,
        config: sink_core::SinkConfig<'_>,
    ) -> Result<Option<sink_core::Description>, SinkError> {
        let display = config.display(SHOWN_OPTIONS);
        let parsed = parse_reading(config.uri, config.options.unwrap_or_default(), false)
            .map_err(|m| SinkError::config(&display, m))?;
        Template::parse(&parsed.topic)
            .map_err(|e| SinkError::config(&display, format!("topic: {e}")))?;
        let property = |name: &str| {
            parsed
                .properties
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let security = property("security.protocol").unwrap_or("PLAINTEXT");
        let mut channel = serde_json::json!({"bindingVersion": "0.5.0"});
        if !parsed.topic.contains('{') {
            channel["topic"] = parsed.topic.clone().into();
        }
        let message = match parsed.key {
            Key::PartitionKey => serde_json::json!({
                "key": {"type": "string", "description":
                    "the partitionkey extension: the KFP run id, or the workflow uid of a plain \
                     Argo workflow; one run's events share a partition, in order"},
                "bindingVersion": "0.5.0",
            }),
            Key::None => serde_json::json!({"bindingVersion": "0.5.0"}),
        };
        Ok(Some(sink_core::Description {
            protocol: "kafka".into(),
            host: parsed
                .servers
                .split(',')
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned(),
            address: parsed.topic,
            mode: match parsed.mode {
                Mode::Binary => sink_core::ContentMode::Binary,
                Mode::Structured => sink_core::ContentMode::Structured,
            },
            summary: format!(
                "idempotent producer, acks=all (at least once; a re-send has the same id); \
                 security.protocol {security}"
            ),
            header_prefix: "ce_".into(),
            channel_binding: Some(channel),
            operation_binding: None,
            message_binding: Some(message),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_parse_and_mistakes_are_named() {
        let p = parse(
            "kafka://a:9092,b:9092/kfp.{namespace}?mode=structured&key=none&compression.type=zstd",
            &[("security.protocol".into(), "SASL_SSL".into())],
        )
        .expect("parses");
        assert_eq!(p.servers, "a:9092,b:9092");
        assert_eq!(p.topic, "kfp.{namespace}");
        assert_eq!((p.mode, p.key), (Mode::Structured, Key::None));
        assert_eq!(
            p.properties,
            [
                ("compression.type".to_owned(), "zstd".to_owned()),
                ("security.protocol".to_owned(), "SASL_SSL".to_owned())
            ]
        );
        for (bad, says) in [
            ("kafka://a:9092", "no topic"),
            ("kafka:///t", "HOST:PORT"),
            ("kafka://u:p@a:9092/t", "credentials"),
            ("kafka://a:9092/t?mode=batch", "mode"),
            ("kafka://a:9092/t?key=id", "key"),
            ("kafka://a:9092/t?timeout=1", "unknown option"),
            ("kafka://a:9092/t?bootstrap.servers=x", "from the URI"),
            (
                "kafka://a:9092/t?sasl.password_file=/nonexistent",
                "cannot read",
            ),
        ] {
            let err = parse(bad, &[]).err().unwrap_or_default();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn topics_are_checked_and_template_values_escaped() {
        assert!(check_topic("kfp.team-a.task_failed").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(250)] {
            assert!(check_topic(bad).is_err(), "{bad}");
        }
        let mut out = String::new();
        escape_topic(Var::Namespace, "team a/ü", &mut out);
        assert_eq!(out, "team_a__");
    }

    #[test]
    fn secrets_are_recognised() {
        for secret in [
            "sasl.password",
            "ssl.key.password",
            "sasl.oauthbearer.client.secret",
            "ssl.key.pem",
            "sasl.jaas.config",
        ] {
            assert!(is_secret(secret), "{secret}");
        }
        assert!(!is_secret("security.protocol"));
    }
}
