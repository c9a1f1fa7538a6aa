//! The command line: every flag documented, every flag with an environment twin. `--help` is the
//! reference; the README's table follows it.

use crate::derive::{DeriveConfig, NodeEvents};
use crate::encode::{self, EncodeConfig};
use crate::telemetry::LogFormat;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "kfp-event-bridge",
    version,
    about = "Kubeflow Pipelines / Argo Workflows runs → CloudEvents"
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Feed a recording (JSON lines of Kubernetes watch events) through derivation and encoding.
    Replay(ReplayArgs),
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log format on standard error.
    #[arg(
        long,
        env = "KFP_BRIDGE_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
    /// Log filter in RUST_LOG syntax, e.g. `info` or `warn,kfp_event_bridge=debug`.
    #[arg(long, env = "KFP_BRIDGE_LOG", default_value = "info", global = true)]
    pub log: String,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The recording to read; `-` reads standard input.
    pub file: PathBuf,
    /// Where to publish (repeatable; space-separated in the environment): `stdout`, `file:PATH`.
    #[arg(
        long = "sink",
        env = "KFP_BRIDGE_SINKS",
        value_delimiter = ' ',
        default_value = "stdout"
    )]
    pub sinks: Vec<String>,
    #[command(flatten)]
    pub derive: DeriveArgs,
    #[command(flatten)]
    pub encode: EncodeArgs,
}

#[derive(Debug, Clone, Args)]
pub struct DeriveArgs {
    /// Which Argo nodes become task events: `tasks` (what a KFP user calls a step) or `all`.
    #[arg(
        long,
        env = "KFP_BRIDGE_NODE_EVENTS",
        value_enum,
        default_value = "tasks"
    )]
    pub node_events: NodeEvents,
    /// Publish only KFP runs (workflows with the `pipeline/runid` label), not plain Argo workflows.
    #[arg(long, env = "KFP_BRIDGE_KFP_ONLY")]
    pub kfp_only: bool,
}

impl DeriveArgs {
    pub fn config(&self) -> DeriveConfig {
        DeriveConfig {
            node_events: self.node_events,
            kfp_only: self.kfp_only,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct EncodeArgs {
    /// Prefix of the CloudEvent `type`, e.g. `<prefix>.run.succeeded`.
    #[arg(long, env = "KFP_BRIDGE_TYPE_PREFIX", default_value = encode::DEFAULT_TYPE_PREFIX)]
    pub type_prefix: String,
    /// Prefix of the CloudEvent `source`; name the cluster here when several publish to one bus.
    #[arg(long, env = "KFP_BRIDGE_SOURCE_PREFIX", default_value = encode::DEFAULT_SOURCE_PREFIX)]
    pub source_prefix: String,
    /// The `dataschema` attribute: an absolute URI naming the payload's JSON Schema.
    #[arg(long, env = "KFP_BRIDGE_DATASCHEMA", default_value = encode::DATA_SCHEMA)]
    pub dataschema: String,
    /// Largest `data` payload in bytes; larger payloads lose their parameters, then long messages.
    #[arg(long, env = "KFP_BRIDGE_MAX_DATA_BYTES", default_value_t = encode::DEFAULT_MAX_DATA_BYTES)]
    pub max_data_bytes: usize,
    /// Knative's extension overrides, `{"extensions":{"name":"value"}}`, added to every event.
    #[arg(long, env = "K_CE_OVERRIDES")]
    pub ce_overrides: Option<String>,
}

impl EncodeArgs {
    pub fn config(&self) -> Result<EncodeConfig, encode::EncodeError> {
        let mut config = EncodeConfig {
            type_prefix: self.type_prefix.clone(),
            source_prefix: self.source_prefix.clone(),
            dataschema: self.dataschema.clone(),
            max_data_bytes: self.max_data_bytes,
            overrides: Default::default(),
        };
        if let Some(json) = self
            .ce_overrides
            .as_deref()
            .filter(|j| !j.trim().is_empty())
        {
            config = config.with_ce_overrides(json)?;
        }
        config.validate()?;
        Ok(config)
    }
}
