//! The raw-client side of `scripts/bench_kafka.sh`:
//!
//! - `topic BOOTSTRAP NAME PARTITIONS`: (re)creates a topic with small retention limits (the
//!   local broker snapshots its data to disk every second).
//! - `raw BOOTSTRAP EVENTS TOPIC`: publishes every structured CloudEvent of the file (one per
//!   line) with an rdkafka `FutureProducer` configured exactly as the bridge's sink (idempotent,
//!   `acks=all`, `linger.ms=5`, …), the same headers, key and value as its binary mode (encoded
//!   before the clock starts), everything in flight at once; prints events/s and the p50/p99
//!   publish-to-delivery-report latency as JSON.

mod support;

use futures_util::stream::{FuturesUnordered, StreamExt};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::time::{Duration, Instant};

async fn recreate_topic(bootstrap: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let _ = admin.delete_topics(&[name], &options).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1))
        .set("retention.bytes", "8388608")
        .set("segment.bytes", "1048576");
    for result in admin
        .create_topics(&[topic], &options)
        .await
        .expect("create")
    {
        result.expect("topic created");
    }
}

async fn raw(bootstrap: &str, events: &str, topic: &str) {
    let prepared: Vec<_> = std::fs::read_to_string(events)
        .expect("events")
        .lines()
        .map(|line| {
            let event: cloudevents::Event = serde_json::from_str(line).expect("event");
            let key = event
                .extension("partitionkey")
                .map(|k| k.to_string())
                .unwrap_or_default();
            let (headers, value) = sink_kafka::encode(sink_kafka::Mode::Binary, &event);
            (key, headers, value)
        })
        .collect();
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (key, value) in sink_kafka::DEFAULTS {
        config.set(key, value);
    }
    let producer: FutureProducer = config.create().expect("producer");
    let started = Instant::now();
    let mut pending = FuturesUnordered::new();
    for (key, headers, value) in &prepared {
        let record = FutureRecord::to(topic)
            .key(key.as_str())
            .payload(value)
            .headers(headers.clone());
        let sent = Instant::now();
        let delivery = producer
            .send_result(record)
            .map_err(|(e, _)| e)
            .expect("queued");
        pending.push(async move {
            delivery
                .await
                .expect("report")
                .map_err(|(e, _)| e)
                .expect("delivered");
            sent.elapsed()
        });
    }
    let mut latencies = Vec::with_capacity(prepared.len());
    while let Some(latency) = pending.next().await {
        latencies.push(latency);
    }
    let elapsed = started.elapsed();
    producer.flush(Duration::from_secs(30)).expect("flush");
    support::report(prepared.len(), elapsed, latencies);
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
        ["topic", bootstrap, name, partitions] => runtime.block_on(recreate_topic(
            bootstrap,
            name,
            partitions.parse().expect("partitions"),
        )),
        ["raw", bootstrap, events, topic] => runtime.block_on(raw(bootstrap, events, topic)),
        _ => {
            eprintln!(
                "usage: kafka_publish topic BOOTSTRAP NAME PARTITIONS | raw BOOTSTRAP EVENTS TOPIC"
            );
            std::process::exit(2);
        }
    }
}
