//! An HTTP receiver as a Knative Service runs it: CloudEvents POSTed to `/` (by the bridge's HTTP
//! sink, a Knative Broker's Trigger or a SinkBinding), one status line printed per event.
//!
//! `cargo run --example http_receiver` (listens on `0.0.0.0:$PORT`, 8080 without `PORT`), then
//! `kfp-event-bridge replay examples/recordings/kfp-v2-success.jsonl --sink http://localhost:8080/`
//!
//! Binary and structured mode are both understood (the SDK's HTTP binding decodes them). Answers
//! 200 once the event is handled and 400 for a body that is no CloudEvent; a sender retries
//! anything else.

mod common;

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Address to listen on (default `0.0.0.0:$PORT`, as Knative sets it).
    #[arg(long)]
    listen: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listen = args.listen.unwrap_or_else(common::default_listen);
    common::serve(&listen, |event| async move {
        println!("{}", common::status_line(&event));
        Ok(())
    })
    .await
}
