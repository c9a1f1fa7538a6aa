//! A JetStream durable consumer that sees only failed tasks, in every namespace.
//!
//! `cargo run --example nats_task_failed -- --server nats://localhost:4222 --stream KFP`
//!
//! With the bridge publishing to `nats://…/kfp.{namespace}.{type}`, `kfp.*.task.failed` matches
//! the failed tasks of every namespace (`kfp.team-a.>` would be everything of one namespace).
//! The consumer is durable: its position lives in the server, so a restarted copy continues
//! where the last one acknowledged, and copies sharing the name share the work. Each message is
//! acknowledged after it was handled (at-least-once; de-duplicate on the CloudEvent `id`).

mod common;

use anyhow::Context;
use async_nats::jetstream::{self, consumer::pull, stream};
use clap::Parser;
use futures_util::StreamExt;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "nats://localhost:4222")]
    server: String,
    /// The stream that captures the bridge's subjects (e.g. one created for `kfp.>`).
    #[arg(long, default_value = "KFP")]
    stream: String,
    /// Subjects of the stream when this consumer creates it.
    #[arg(long, default_value = "kfp.>")]
    subjects: String,
    #[arg(long, default_value = "kfp.*.task.failed")]
    filter: String,
    /// Durable consumer name: the server remembers what it acknowledged.
    #[arg(long, default_value = "task-failed-printer")]
    durable: String,
    /// Exit after this many events (default: run until stopped).
    #[arg(long)]
    count: Option<usize>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = async_nats::connect(&args.server)
        .await
        .with_context(|| format!("connecting to {}", args.server))?;
    // The stream as it is when it exists; else created to capture `--subjects` (the bridge's
    // JetStream sink refuses to start while no stream captures its subjects).
    let stream = jetstream::new(client)
        .get_or_create_stream(stream::Config {
            name: args.stream.clone(),
            subjects: vec![args.subjects.clone()],
            ..Default::default()
        })
        .await
        .with_context(|| format!("stream {}", args.stream))?;
    let consumer = stream
        .get_or_create_consumer(
            &args.durable,
            pull::Config {
                durable_name: Some(args.durable.clone()),
                filter_subject: args.filter.clone(),
                ..Default::default()
            },
        )
        .await
        .context("durable consumer")?;
    // Pull in batches of 200, or no more than `--count` wants: messages pulled and never
    // acknowledged would wait for the consumer's ack timeout (30 s) before the next copy gets them.
    let batch = args.count.unwrap_or(200).clamp(1, 200);
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(batch)
        .messages()
        .await?;
    let stop = common::shutdown();
    tokio::pin!(stop);
    eprintln!(
        "consuming {} from stream {} as {}",
        args.filter, args.stream, args.durable
    );
    let mut seen = 0;
    while args.count.is_none_or(|count| seen < count) {
        let message = tokio::select! {
            message = messages.next() => match message {
                Some(message) => message?,
                None => break,
            },
            _ = &mut stop => break,
        };
        let headers: Vec<(String, String)> = message
            .headers
            .iter()
            .flat_map(|h| h.iter())
            .filter_map(|(name, values)| Some((name.to_string(), values.first()?.to_string())))
            .collect();
        let decoded =
            common::Message::with_headers("ce-", headers, message.payload.to_vec()).into_event();
        match decoded {
            Ok(event) => println!("{}", common::status_line(&event)),
            Err(err) => eprintln!("skipping a message on {}: {err:#}", message.subject),
        }
        // Waits for the server to confirm the ack, so what was handled is never delivered again.
        message.double_ack().await.map_err(anyhow::Error::msg)?;
        seen += 1;
    }
    Ok(())
}
