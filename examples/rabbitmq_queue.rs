//! A RabbitMQ queue bound to the bridge's topic exchange, printing each run's and task's status.
//!
//! `cargo run --example rabbitmq_queue -- --url amqp://guest:guest@localhost:5672/%2f`
//!
//! With the bridge publishing to
//! `amqp://…?exchange=kfp&routing_key=kfp.{namespace}.{type}`, the binding pattern picks what
//! the queue gets: `kfp.#` everything, `kfp.*.task.failed` failed tasks, `kfp.team-a.run.*` the
//! runs of one namespace. The queue is durable, so events published while this consumer is down
//! wait for it; each is acknowledged after it was handled (at-least-once; de-duplicate on the
//! CloudEvent `id`, which the bridge also sets as `message_id`).

mod common;

use anyhow::Context;
use clap::Parser;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions};
use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties, ExchangeKind};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "amqp://guest:guest@localhost:5672/%2f")]
    url: String,
    /// The topic exchange the bridge publishes to (declared here if missing).
    #[arg(long, default_value = "kfp")]
    exchange: String,
    #[arg(long, default_value = "kfp-status-printer")]
    queue: String,
    /// Binding pattern over the routing keys.
    #[arg(long, default_value = "kfp.#")]
    binding: String,
    /// Exit after this many events (default: run until stopped).
    #[arg(long)]
    count: Option<usize>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let connection = Connection::connect(&args.url, ConnectionProperties::default())
        .await
        .context("connecting to RabbitMQ")?;
    let channel = connection.create_channel().await?;
    channel
        .exchange_declare(
            args.exchange.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .context("exchange")?;
    channel
        .queue_declare(
            args.queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .context("queue")?;
    channel
        .queue_bind(
            args.queue.as_str().into(),
            args.exchange.as_str().into(),
            args.binding.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .context("binding")?;
    // At most 100 unacknowledged deliveries in flight to this consumer.
    channel.basic_qos(100, BasicQosOptions::default()).await?;
    let mut deliveries = channel
        .basic_consume(
            args.queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    eprintln!(
        "consuming from queue {} bound to exchange {} with {}",
        args.queue, args.exchange, args.binding
    );
    let stop = common::shutdown();
    tokio::pin!(stop);
    let mut seen = 0;
    while args.count.is_none_or(|count| seen < count) {
        let delivery = tokio::select! {
            delivery = deliveries.next() => match delivery {
                Some(delivery) => delivery?,
                None => break,
            },
            _ = &mut stop => break,
        };
        let properties = &delivery.properties;
        let headers = properties
            .headers()
            .as_ref()
            .map(|table| {
                table
                    .inner()
                    .iter()
                    .filter_map(|(name, value)| match value {
                        AMQPValue::LongString(s) => Some((name.to_string(), s.to_string())),
                        AMQPValue::ShortString(s) => Some((name.to_string(), s.to_string())),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let message = common::Message {
            prefix: "ce-",
            headers,
            content_type: properties.content_type().as_ref().map(|s| s.to_string()),
            body: delivery.data.clone(),
        };
        match message.into_event() {
            Ok(event) => println!("{}", common::status_line(&event)),
            Err(err) => eprintln!("skipping delivery {}: {err:#}", delivery.delivery_tag),
        }
        delivery.ack(BasicAckOptions::default()).await?;
        seen += 1;
    }
    connection.close(200, "bye".into()).await?;
    Ok(())
}
