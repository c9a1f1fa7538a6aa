//! The raw-client side of `scripts/bench_amqp.sh`:
//!
//! - `setup URL`: a durable topic exchange `bench` with a durable queue bound to `#`, purged.
//! - `raw URL EVENTS IN_FLIGHT`: publishes every structured CloudEvent of the file the way the
//!   bridge does in binary mode — the same `ce-` headers, body, routing key (`<short type>`) and
//!   properties (persistent, `message_id`, `timestamp`, `content_type`), mandatory, on a channel
//!   in confirm mode — keeping at most IN_FLIGHT confirms outstanding; prints events/s and the
//!   p50/p99 publish-to-confirm latency as JSON. Headers and bodies are built before timing.

mod support;

use futures_util::stream::{FuturesUnordered, StreamExt};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use std::time::Instant;

async fn setup(url: &str) {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            "bench".into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .expect("exchange");
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare("bench".into(), durable, FieldTable::default())
        .await
        .expect("queue");
    channel
        .queue_bind(
            "bench".into(),
            "bench".into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    channel
        .queue_purge("bench".into(), QueuePurgeOptions::default())
        .await
        .expect("purge");
}

struct Message {
    routing_key: String,
    properties: BasicProperties,
    body: Vec<u8>,
}

fn load(path: &str) -> Vec<Message> {
    std::fs::read_to_string(path)
        .expect("events")
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            let object = v.as_object().expect("object");
            let mut headers = FieldTable::default();
            for (name, value) in object {
                if matches!(name.as_str(), "data" | "data_base64" | "datacontenttype") {
                    continue;
                }
                let text = value
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| value.to_string());
                headers.insert(
                    ShortString::from(format!("ce-{name}")),
                    AMQPValue::LongString(LongString::from(text)),
                );
            }
            let ty = v["type"].as_str().expect("type");
            let mut parts = ty.rsplitn(3, '.');
            let (last, kind) = (parts.next().expect("last"), parts.next().expect("kind"));
            let timestamp = v["time"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map_or(0, |t| t.timestamp().max(0) as u64);
            Message {
                routing_key: format!("{kind}.{last}"),
                properties: BasicProperties::default()
                    .with_message_id(v["id"].as_str().expect("id").into())
                    .with_delivery_mode(2)
                    .with_timestamp(timestamp)
                    .with_headers(headers)
                    .with_content_type("application/json".into()),
                body: serde_json::to_vec(&v["data"]).expect("data"),
            }
        })
        .collect()
}

async fn raw(url: &str, events: &str, in_flight: usize) {
    let messages = load(events);
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let count = messages.len();
    let mut latencies = Vec::with_capacity(count);
    let mut pending = FuturesUnordered::new();
    let start = Instant::now();
    for m in messages {
        while pending.len() >= in_flight {
            latencies.push(pending.next().await.expect("confirm"));
        }
        let sent = Instant::now();
        let confirm = channel
            .basic_publish(
                "bench".into(),
                m.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                &m.body,
                m.properties,
            )
            .await
            .expect("publish");
        pending.push(async move {
            let confirmation = confirm.await.expect("confirm");
            assert!(confirmation.is_ack(), "not acknowledged");
            sent.elapsed()
        });
    }
    while let Some(latency) = pending.next().await {
        latencies.push(latency);
    }
    let elapsed = start.elapsed();
    support::report(count, elapsed, latencies);
}

fn main() {
    let args = support::args();
    let runtime = support::runtime();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["setup", url] => runtime.block_on(setup(url)),
        ["raw", url, events, in_flight] => {
            runtime.block_on(raw(url, events, in_flight.parse().expect("IN_FLIGHT")))
        }
        _ => {
            eprintln!("usage: amqp_publish setup URL | raw URL EVENTS IN_FLIGHT");
            std::process::exit(2);
        }
    }
}
