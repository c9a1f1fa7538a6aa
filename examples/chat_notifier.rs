//! A chat notifier: failed tasks and tasks stuck before they run (image pulls, scheduling,
//! mounts — the bridge's `task.warning`) become one readable message each, posted to an incoming
//! webhook (Slack, Mattermost, Rocket.Chat and Google Chat all take `{"text": …}`) or printed.
//!
//! `cargo run --example chat_notifier -- --webhook-file /secrets/webhook-url` (an HTTP receiver
//! like `http_receiver`; point a Knative Trigger filtered on the two types, or the bridge's
//! `--sink 'http://…/?types=task.failed,task.warning'`, at it). The webhook URL is a secret: it is
//! read from a file and never printed.

mod common;

use anyhow::{Context, bail};
use clap::Parser;
use cloudevents::{AttributesReader, Event};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
struct Args {
    /// File holding the incoming-webhook URL; without it messages are only printed.
    #[arg(long)]
    webhook_file: Option<PathBuf>,
    /// Address to listen on (default `0.0.0.0:$PORT`, as Knative sets it).
    #[arg(long)]
    listen: Option<String>,
}

/// The message for a failed or stuck task; `None` for every other event.
fn message(event: &Event) -> Option<String> {
    let data = common::data(event);
    let text = |key: &str| data[key].as_str().unwrap_or_default();
    let task = [text("TaskName"), text("NodeName")]
        .into_iter()
        .find(|t| !t.is_empty())
        .unwrap_or("?");
    let run = match text("RunName") {
        "" => text("WorkflowName").to_owned(),
        name => format!("{name} ({})", text("WorkflowName")),
    };
    let mut place = format!("namespace {}", text("Namespace"));
    if !text("PipelineName").is_empty() {
        place = format!("pipeline {}, {place}", text("PipelineName"));
    }
    let attempt = data["Attempt"].as_u64().unwrap_or(0);
    let retry = if attempt > 0 {
        format!(", attempt {}", attempt + 1)
    } else {
        String::new()
    };
    match common::short_type(event) {
        "task.failed" => {
            // Argo's message names the node first ("Failed node x.root.train: …"); the reason follows.
            let reason = text("Message")
                .split_once(": ")
                .map_or(text("Message"), |(_, reason)| reason);
            let exit = match data["ExitCode"].as_i64() {
                Some(137) => " — exit code 137: killed, most often out of memory".to_owned(),
                Some(code) if !reason.contains("exit code") => format!(" — exit code {code}"),
                _ => String::new(),
            };
            Some(format!(
                "❌ Task `{task}` failed in run {run} ({place}{retry}): {reason}{exit}"
            ))
        }
        "task.warning" => {
            let lifecycle = &data["Lifecycle"];
            let outlook = if lifecycle["Terminal"].as_bool() == Some(true) {
                "it will not start without a change"
            } else {
                "it may still start"
            };
            Some(format!(
                "⚠️ Task `{task}` in run {run} ({place}) is stuck: {} ({}) — {outlook}. {}",
                lifecycle["Category"].as_str().unwrap_or("unknown"),
                lifecycle["Reason"].as_str().unwrap_or_default(),
                lifecycle["Message"].as_str().unwrap_or(text("Message")),
            ))
        }
        _ => None,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let webhook = match &args.webhook_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let webhook = Arc::new(webhook);
    let client = reqwest::Client::new();
    let listen = args.listen.unwrap_or_else(common::default_listen);
    common::serve(&listen, move |event| {
        let (client, webhook) = (client.clone(), webhook.clone());
        async move {
            let Some(text) = message(&event) else {
                return Ok(());
            };
            println!("{text}");
            let Some(url) = webhook.as_deref() else {
                return Ok(());
            };
            let body = serde_json::to_vec(&serde_json::json!({ "text": text }))?;
            // Errors name the event, never the URL (it carries the webhook's secret).
            let response = client
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map_err(|err| {
                    anyhow::anyhow!(
                        "webhook unreachable for {}: {}",
                        event.id(),
                        err.without_url()
                    )
                })?;
            if !response.status().is_success() {
                bail!("webhook answered {} for {}", response.status(), event.id());
            }
            Ok(())
        }
    })
    .await
}
