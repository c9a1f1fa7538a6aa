//! The raw-client side of `scripts/bench_kafka.sh`:
//!
//! - `topic BOOTSTRAP NAME PARTITIONS`: (re)creates a topic with small retention limits (the
//!   local broker snapshots its data to disk every second).
//! - `raw BOOTSTRAP EVENTS TOPIC [prepared|streaming]`: publishes every structured CloudEvent of
//!   the file (one per line) with an rdkafka `FutureProducer` configured exactly as the bridge's
//!   sink (idempotent, `acks=all`, `linger.ms=5`, …), the same headers, key and value as its
//!   binary mode, everything in flight at once; prints events/s and the p50/p99
//!   publish-to-delivery-report latency as JSON. `prepared` (the default) reads and encodes the
//!   whole file before its clock starts: the send loop alone. `streaming` reads, parses, encodes
//!   and sends line by line with the clock running: the same work as the bridge's `resend`.

mod support;

use futures_util::FutureExt;
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

type Record = (String, rdkafka::message::OwnedHeaders, Vec<u8>);

fn records(path: &str) -> impl Iterator<Item = Record> {
    let file = std::io::BufReader::new(std::fs::File::open(path).expect("events"));
    std::io::BufRead::lines(file).map(|line| {
        let event: cloudevents::Event = serde_json::from_str(&line.expect("read")).expect("event");
        let key = event
            .extension("partitionkey")
            .map(|k| k.to_string())
            .unwrap_or_default();
        let (headers, value) = sink_kafka::encode(sink_kafka::Mode::Binary, &event);
        (key, headers, value)
    })
}

async fn raw(bootstrap: &str, events: &str, topic: &str, streaming: bool) {
    if streaming {
        produce(bootstrap, records(events), topic).await;
    } else {
        let prepared: Vec<_> = records(events).collect();
        produce(bootstrap, prepared.into_iter(), topic).await;
    }
}

async fn produce(bootstrap: &str, records: impl Iterator<Item = Record>, topic: &str) {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (key, value) in sink_kafka::DEFAULTS {
        config.set(key, value);
    }
    let producer: FutureProducer = config.create().expect("producer");
    let started = Instant::now();
    let mut pending = FuturesUnordered::new();
    let mut latencies = Vec::new();
    let mut count = 0;
    for (key, headers, value) in records {
        count += 1;
        let record = FutureRecord::to(topic)
            .key(key.as_str())
            .payload(&value)
            .headers(headers);
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
        // Reports that are in already, so their latency is not inflated by the rest of the loop.
        while let Some(Some(latency)) = pending.next().now_or_never() {
            latencies.push(latency);
        }
    }
    while let Some(latency) = pending.next().await {
        latencies.push(latency);
    }
    let elapsed = started.elapsed();
    producer.flush(Duration::from_secs(30)).expect("flush");
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
        ["topic", bootstrap, name, partitions] => runtime.block_on(recreate_topic(
            bootstrap,
            name,
            partitions.parse().expect("partitions"),
        )),
        ["raw", bootstrap, events, topic, rest @ ..] => runtime.block_on(raw(
            bootstrap,
            events,
            topic,
            rest.first() == Some(&"streaming"),
        )),
        _ => {
            eprintln!(
                "usage: kafka_publish topic BOOTSTRAP NAME PARTITIONS | raw BOOTSTRAP EVENTS TOPIC [prepared|streaming]"
            );
            std::process::exit(2);
        }
    }
}
