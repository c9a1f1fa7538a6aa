//! A Kafka consumer group reading the bridge's events and printing each run's and task's status.
//!
//! `cargo run --example kafka_consumer -- --brokers localhost:9092 --topic kfp-events`
//!
//! Several copies with the same `--group` share the topic's partitions; the bridge keys each
//! record by the run (`partitionkey`), so one consumer sees all of a run's events, in order.
//! Offsets are stored only after an event was handled (at-least-once): a consumer that crashes
//! mid-way sees the unhandled events again; de-duplicate on the CloudEvent `id` if that matters.

mod common;

use anyhow::Context;
use clap::Parser;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};

#[derive(Parser)]
struct Args {
    /// Bootstrap servers, comma-separated.
    #[arg(long, default_value = "localhost:9092")]
    brokers: String,
    /// The topic the bridge publishes to (`kafka://…/TOPIC`).
    #[arg(long, default_value = "kfp-events")]
    topic: String,
    /// Consumer group; a new group starts at the earliest record.
    #[arg(long, default_value = "kfp-status-printer")]
    group: String,
    /// Exit after this many events (default: run until stopped).
    #[arg(long)]
    count: Option<usize>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("group.id", &args.group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.offset.store", "false")
        .create()
        .context("Kafka consumer")?;
    consumer.subscribe(&[&args.topic])?;
    let stop = common::shutdown();
    tokio::pin!(stop);
    let mut seen = 0;
    while args.count.is_none_or(|count| seen < count) {
        let record = tokio::select! {
            record = consumer.recv() => record?,
            _ = &mut stop => break,
        };
        let headers = record
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        let value = String::from_utf8_lossy(h.value.unwrap_or_default());
                        (h.key.to_owned(), value.into_owned())
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let message = common::Message::with_headers(
            "ce_",
            headers,
            record.payload().unwrap_or_default().to_vec(),
        );
        match message.into_event() {
            Ok(event) => println!("{}", common::status_line(&event)),
            Err(err) => eprintln!(
                "skipping partition {} offset {}: {err:#}",
                record.partition(),
                record.offset()
            ),
        }
        consumer.store_offset_from_message(&record)?;
        seen += 1;
    }
    Ok(())
}
