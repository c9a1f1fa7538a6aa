//! "Start pipeline B when A succeeds": on `run.succeeded` of pipeline A, creates a run of B
//! through the KFP v2beta1 REST API (`POST /apis/v2beta1/runs`), passing values of A's run.
//!
//! ```sh
//! cargo run --example chain_pipelines -- --kfp-url http://ml-pipeline.kubeflow:8888 \
//!     --when-pipeline iris-training --pipeline-id B_ID --pipeline-version-id B_VERSION_ID \
//!     --param upstream_run={kfprunid} --param dataset={param:dataset}
//! ```
//!
//! An HTTP receiver like `http_receiver` (a Knative Trigger filtered on `run.succeeded`, or the
//! bridge's `--sink 'http://…/?types=run.succeeded'`). Parameter values may name `{kfprunid}`,
//! `{workflow}`, `{namespace}` and `{param:NAME}` (A's run parameter NAME; a value that is just
//! `{param:NAME}` keeps its JSON type). B runs in A's
//! namespace unless `--experiment-id` says otherwise. With `--token-file` (e.g. a projected
//! service-account token with audience `pipelines.kubeflow.org`, re-read per request) requests
//! carry `Authorization: Bearer`.
//!
//! Events arrive at least once, so the run name is derived from A's run and the API is asked
//! first whether a run of that name exists: a repeated event starts nothing twice (one replica;
//! two racing replicas could).

mod common;

use anyhow::{Context, bail};
use clap::Parser;
use cloudevents::{AttributesReader, Event};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
struct Args {
    /// The KFP API server (`ml-pipeline` Service, port 8888 in a standard install).
    #[arg(long)]
    kfp_url: String,
    /// Pipeline A: its successful runs start B (the event's `pipeline` extension).
    #[arg(long)]
    when_pipeline: String,
    /// Pipeline B's id.
    #[arg(long)]
    pipeline_id: String,
    /// Pipeline B's version (the v2beta1 API requires both ids).
    #[arg(long)]
    pipeline_version_id: String,
    /// Experiment for B's runs; default: the default experiment of A's namespace.
    #[arg(long)]
    experiment_id: Option<String>,
    /// B's run parameter, `NAME=VALUE` (repeatable); VALUE may name {kfprunid}, {workflow},
    /// {namespace}, {param:NAME}.
    #[arg(long = "param", value_parser = common::key_value)]
    params: Vec<(String, String)>,
    /// Name of B's run, same placeholders; must differ per run of A.
    #[arg(long, default_value = "after {workflow}")]
    run_name: String,
    /// File with a bearer token for the API.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Address to listen on (default `0.0.0.0:$PORT`, as Knative sets it).
    #[arg(long)]
    listen: Option<String>,
}

/// Fills `{kfprunid}`, `{workflow}`, `{namespace}` and `{param:NAME}` from A's run.
fn fill(template: &str, event: &Event, data: &Value) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .with_context(|| format!("unclosed {{ in {template:?}"))?;
        out += &rest[..open];
        let name = &rest[open + 1..open + close];
        let value = match name.strip_prefix("param:") {
            Some(param) => match &data["Parameters"][param] {
                Value::String(s) => s.clone(),
                Value::Null => bail!("run {} has no parameter {param:?}", event.id()),
                other => other.to_string(),
            },
            None => match name {
                "kfprunid" | "workflow" | "namespace" => event
                    .extension(name)
                    .map(|v| v.to_string())
                    .with_context(|| format!("event {} has no {name}", event.id()))?,
                other => bail!("unknown placeholder {{{other}}} in {template:?}"),
            },
        };
        out += &value;
        rest = &rest[open + close + 1..];
    }
    Ok(out + rest)
}

/// A parameter of B: A's parameter as it was (a number stays a number) when the value is just
/// `{param:NAME}`, else the filled-in text.
fn parameter(template: &str, event: &Event, data: &Value) -> anyhow::Result<Value> {
    let whole = template
        .strip_prefix("{param:")
        .and_then(|rest| rest.strip_suffix('}'))
        .filter(|name| !name.contains(['{', '}']));
    match whole.map(|name| &data["Parameters"][name]) {
        Some(value) if !value.is_null() => Ok(value.clone()),
        _ => Ok(fill(template, event, data)?.into()),
    }
}

struct Chain {
    args: Args,
    client: reqwest::Client,
}

impl Chain {
    async fn call(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let mut request = request.header("content-type", "application/json");
        if let Some(path) = &self.args.token_file {
            let token = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            request = request.bearer_auth(token.trim());
        }
        let response = request.send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        if !status.is_success() {
            bail!(
                "KFP API answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(serde_json::from_slice(&body).unwrap_or_default())
    }

    /// Whether a run named `name` exists in `namespace` already.
    async fn exists(&self, namespace: &str, name: &str) -> anyhow::Result<bool> {
        let filter = json!({"predicates": [
            {"key": "display_name", "operation": "EQUALS", "string_value": name}
        ]});
        let url = format!(
            "{}/apis/v2beta1/runs",
            self.args.kfp_url.trim_end_matches('/')
        );
        let request = self.client.get(url).query(&[
            ("namespace", namespace),
            ("filter", &filter.to_string()),
            ("page_size", "1"),
        ]);
        let found = self.call(request).await?;
        Ok(found["runs"]
            .as_array()
            .is_some_and(|runs| !runs.is_empty()))
    }

    async fn handle(&self, event: Event) -> anyhow::Result<()> {
        let pipeline = event.extension("pipeline").map(|p| p.to_string());
        if common::short_type(&event) != "run.succeeded"
            || pipeline.as_deref() != Some(self.args.when_pipeline.as_str())
        {
            return Ok(());
        }
        let data = common::data(&event);
        let namespace = fill("{namespace}", &event, &data)?;
        let name = fill(&self.args.run_name, &event, &data)?;
        if self.exists(&namespace, &name).await? {
            println!(
                "run {name:?} exists already (event {} seen before)",
                event.id()
            );
            return Ok(());
        }
        let mut parameters = serde_json::Map::new();
        for (key, value) in &self.args.params {
            parameters.insert(key.clone(), parameter(value, &event, &data)?);
        }
        let version = json!({
            "pipeline_id": self.args.pipeline_id,
            "pipeline_version_id": self.args.pipeline_version_id,
        });
        let mut run = json!({
            "display_name": name,
            "description": format!("Started by {} of pipeline {}", event.ty(), self.args.when_pipeline),
            "pipeline_version_reference": version,
            "runtime_config": {"parameters": parameters},
        });
        match &self.args.experiment_id {
            Some(id) => run["experiment_id"] = id.as_str().into(),
            None => run["namespace"] = namespace.into(),
        }
        let url = format!(
            "{}/apis/v2beta1/runs",
            self.args.kfp_url.trim_end_matches('/')
        );
        let created = self
            .call(self.client.post(url).body(serde_json::to_vec(&run)?))
            .await?;
        println!(
            "started run {} ({name:?}) of pipeline {} after {}",
            created["run_id"].as_str().unwrap_or("?"),
            self.args.pipeline_id,
            event.subject().unwrap_or_default()
        );
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listen = args.listen.clone().unwrap_or_else(common::default_listen);
    let chain = Arc::new(Chain {
        args,
        client: reqwest::Client::new(),
    });
    common::serve(&listen, move |event| {
        let chain = chain.clone();
        async move { chain.handle(event).await }
    })
    .await
}
