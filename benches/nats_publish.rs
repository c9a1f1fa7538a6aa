//! The raw-client side of `scripts/bench_nats.sh`:
//!
//! - `stream URL NAME SUBJECTS`: (re)creates a JetStream stream, so each run starts empty and the
//!   de-duplication window holds nothing from the previous run.
//! - `raw URL EVENTS js|core IN_FLIGHT [prepared|streaming]`: publishes every structured
//!   CloudEvent of the file (one per line) with async-nats, the same bytes, subject
//!   (`bench.<short type>`) and headers (`Content-Type`, and `Nats-Msg-Id` for JetStream) as the
//!   bridge, keeping at most IN_FLIGHT PubAcks outstanding; prints events/s and the p50/p99
//!   publish-to-ack latency as JSON. `prepared` (the default) reads and parses the whole file
//!   before its clock starts: the send loop alone. `streaming` reads, parses and publishes line
//!   by line with the clock running: the same work as the bridge's `resend`.

mod support;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::time::{Duration, Instant};

async fn recreate_stream(url: &str, name: &str, subjects: &str) {
    let js = jetstream::new(async_nats::connect(url).await.expect("connect"));
    let _ = js.delete_stream(name).await;
    js.create_stream(stream::Config {
        name: name.to_owned(),
        subjects: subjects.split(',').map(str::to_owned).collect(),
        ..Default::default()
    })
    .await
    .expect("stream");
}

struct Message {
    subject: String,
    id: String,
    payload: Bytes,
}

fn messages(path: &str) -> impl Iterator<Item = Message> {
    let file = std::io::BufReader::new(std::fs::File::open(path).expect("events"));
    std::io::BufRead::lines(file).map(|line| {
        let line = line.expect("read");
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        let ty = v["type"].as_str().expect("type");
        let mut parts = ty.rsplitn(3, '.');
        let (last, kind) = (parts.next().expect("last"), parts.next().expect("kind"));
        Message {
            subject: format!("bench.{kind}.{last}"),
            id: v["id"].as_str().expect("id").to_owned(),
            payload: Bytes::from(line.into_bytes()),
        }
    })
}

async fn raw(url: &str, events: &str, jetstream_on: bool, in_flight: usize, streaming: bool) {
    if streaming {
        publish(url, messages(events), jetstream_on, in_flight).await;
    } else {
        let prepared: Vec<_> = messages(events).collect();
        publish(url, prepared.into_iter(), jetstream_on, in_flight).await;
    }
}

async fn publish(
    url: &str,
    messages: impl Iterator<Item = Message>,
    jetstream_on: bool,
    in_flight: usize,
) {
    let client = async_nats::connect(url).await.expect("connect");
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(5))
        .max_ack_inflight(4096)
        .backpressure_on_inflight(true)
        .build(client.clone());
    let mut count = 0;
    let mut latencies = Vec::new();
    let start = Instant::now();
    if jetstream_on {
        let mut pending = FuturesUnordered::new();
        for m in messages {
            count += 1;
            while pending.len() >= in_flight {
                latencies.push(pending.next().await.expect("ack"));
            }
            let mut headers = HeaderMap::new();
            headers.insert("Content-Type", "application/cloudevents+json");
            let publish = jetstream::message::PublishMessage::build()
                .payload(m.payload)
                .headers(headers)
                .message_id(&m.id);
            let sent = Instant::now();
            let ack = js.send_publish(m.subject, publish).await.expect("publish");
            pending.push(async move {
                ack.await.expect("PubAck");
                sent.elapsed()
            });
        }
        while let Some(latency) = pending.next().await {
            latencies.push(latency);
        }
    } else {
        for m in messages {
            count += 1;
            let mut headers = HeaderMap::new();
            headers.insert("Content-Type", "application/cloudevents+json");
            client
                .publish_with_headers(m.subject, headers, m.payload)
                .await
                .expect("publish");
        }
        client.flush().await.expect("flush");
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
        ["stream", url, name, subjects] => runtime.block_on(recreate_stream(url, name, subjects)),
        ["raw", url, events, mode, in_flight, rest @ ..] => runtime.block_on(raw(
            url,
            events,
            *mode == "js",
            in_flight.parse().expect("IN_FLIGHT"),
            rest.first() == Some(&"streaming"),
        )),
        _ => {
            eprintln!(
                "usage: nats_publish stream URL NAME SUBJECTS | raw URL EVENTS js|core IN_FLIGHT [prepared|streaming]"
            );
            std::process::exit(2);
        }
    }
}
