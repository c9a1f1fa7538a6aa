//! The command line: every flag documented, every flag with an environment twin. `--help` is the
//! reference; the flag table in docs/running.md follows it (a test keeps them in step).

use crate::derive::NodeEvents;
use crate::encode;
use crate::telemetry::LogFormat;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

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

impl Cli {
    /// Parses the process arguments; without a subcommand the bridge runs live (`run`).
    pub fn parse_with_default() -> Self {
        Self::parse_from(with_default_command(std::env::args_os().collect()))
    }
}

/// Inserts `run` where the subcommand belongs when none is given: after the program name and
/// the global logging flags, before the first other argument.
pub fn with_default_command(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    const COMMANDS: [&str; 6] = ["run", "record", "replay", "resend", "asyncapi", "help"];
    const TAKES_VALUE: [&str; 2] = ["--log", "--log-format"];
    let mut at = 1;
    while at < args.len() {
        let arg = args[at].to_string_lossy();
        if TAKES_VALUE.contains(&arg.as_ref()) {
            at += 2;
        } else if TAKES_VALUE
            .iter()
            .any(|f| arg.starts_with(&format!("{f}=")))
        {
            at += 1;
        } else {
            break;
        }
    }
    let given = args.get(at).map(|a| a.to_string_lossy().into_owned());
    let keep = given.as_deref().is_some_and(|a| {
        COMMANDS.contains(&a) || matches!(a, "-h" | "--help" | "-V" | "--version")
    });
    if !keep {
        args.insert(at.min(args.len()), "run".into());
    }
    args
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Watch Workflows and the workflow controller's Events and publish their facts (the default).
    Run(Box<RunArgs>),
    /// Write a recording (JSON lines of watch events) from a live cluster until interrupted.
    Record(RecordArgs),
    /// Feed a recording (JSON lines of Kubernetes watch events) through derivation and encoding.
    Replay(ReplayArgs),
    /// Publish CloudEvents from a file (JSON lines: a dead-letter file, a replay's output) again.
    Resend(ResendArgs),
    /// Print the AsyncAPI 3.0 document of what the configured sinks publish (nothing connects).
    Asyncapi(AsyncapiArgs),
}

#[derive(Debug, Args)]
pub struct AsyncapiArgs {
    #[command(flatten)]
    pub delivery: DeliveryArgs,
    #[command(flatten)]
    pub encode: EncodeArgs,
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
    /// Log filter in RUST_LOG syntax, e.g. `info` or `warn,kfp_event_bridge=debug`. Without it,
    /// `RUST_LOG` applies, else `info`.
    #[arg(long, env = "KFP_BRIDGE_LOG", global = true)]
    pub log: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The recording to read; `-` reads standard input.
    pub file: PathBuf,
    #[command(flatten)]
    pub delivery: DeliveryArgs,
    #[command(flatten)]
    pub derive: DeriveArgs,
    #[command(flatten)]
    pub encode: EncodeArgs,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Debug, Args)]
pub struct ResendArgs {
    /// The file of structured CloudEvents, one per line; `-` reads standard input.
    pub file: PathBuf,
    #[command(flatten)]
    pub delivery: DeliveryArgs,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `100ms`, `30s`, `5m`, `1h`, `7d` or a bare number of seconds, as a flag's value.
fn event_format(text: &str) -> Result<crate::encode::cdevents::Format, String> {
    crate::encode::cdevents::Format::parse(text)
}

fn duration(text: &str) -> Result<Duration, String> {
    sink_core::parse_duration(text)
}

/// `--watch-timeout`: whole seconds the API server takes as `timeoutSeconds`, 1 s to 1 h.
fn watch_timeout(text: &str) -> Result<Duration, String> {
    let timeout = duration(text)?;
    if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&timeout) {
        return Err(format!("{text}: a watch timeout is between 1s and 1h"));
    }
    Ok(Duration::from_secs(timeout.as_secs()))
}

/// Where the admin server listens, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAddr {
    Off,
    At(std::net::SocketAddr),
}

impl std::str::FromStr for AdminAddr {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        if text == "off" {
            return Ok(Self::Off);
        }
        text.parse()
            .map(Self::At)
            .map_err(|_| format!("{text:?}: expected HOST:PORT (e.g. 0.0.0.0:8080) or off"))
    }
}

/// The admin HTTP server: `/healthz`, `/readyz`, `/metrics`.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// Address of the admin server (`/healthz`, `/readyz`, `/metrics`), or `off`. Default for
    /// `run`: 127.0.0.1:8080 (the container image sets 0.0.0.0:8080); for `replay` and `resend`:
    /// off. Port 0 picks a free port (logged).
    #[arg(long, env = "KFP_BRIDGE_ADMIN_ADDR")]
    pub admin_addr: Option<AdminAddr>,
    /// How often each sink's health is checked for `/readyz`.
    #[arg(long, env = "KFP_BRIDGE_HEALTH_INTERVAL", default_value = "10s", value_parser = duration)]
    pub health_interval: Duration,
    /// Distinct `pipeline` label values of the `kfp_*` metrics; later pipelines share `other`.
    #[arg(long, env = "KFP_BRIDGE_METRICS_MAX_PIPELINES", default_value_t = 100)]
    pub metrics_max_pipelines: usize,
}

/// Which cluster and what in it to watch.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// A kubeconfig file; without it `KUBECONFIG`, `~/.kube/config` or the in-cluster service
    /// account are used.
    #[arg(long, env = "KFP_BRIDGE_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Watch only this namespace (repeatable; comma-separated in the environment). Default: all.
    #[arg(
        long = "namespace",
        env = "KFP_BRIDGE_NAMESPACES",
        value_delimiter = ','
    )]
    pub namespaces: Vec<String>,
    /// Watch only Workflows matching this label selector, e.g. `pipeline/runid`.
    #[arg(long, env = "KFP_BRIDGE_LABEL_SELECTOR")]
    pub label_selector: Option<String>,
    /// Also watch the workflow controller's Kubernetes Events (`source=workflow-controller`).
    #[arg(
        long,
        env = "KFP_BRIDGE_WATCH_EVENTS",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub watch_events: bool,
    /// Each watch request asks the API server to end it after this long (then it resumes from
    /// its last version); a watch that sends nothing at all — no event, no bookmark — for this
    /// long and 5 s more is taken for dead and started again. 1s to 1h.
    #[arg(long, env = "KFP_BRIDGE_WATCH_TIMEOUT", default_value = "290s", value_parser = watch_timeout)]
    pub watch_timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct RecordArgs {
    /// The recording to write (appended); `-` writes standard output.
    pub file: PathBuf,
    #[command(flatten)]
    pub watch: WatchArgs,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub watch: WatchArgs,
    /// Where done facts are remembered across restarts: `file:DIR`, `configmap:NAMESPACE/NAME`
    /// (`?shards=N`, default 32) or `none`. Default in a cluster: a ConfigMap
    /// `kfp-event-bridge-checkpoint` in the bridge's namespace; outside one it must be given.
    #[arg(long, env = "KFP_BRIDGE_CHECKPOINT")]
    pub checkpoint: Option<String>,
    /// How often changed checkpoint shards are written.
    #[arg(long, env = "KFP_BRIDGE_CHECKPOINT_INTERVAL", default_value = "1s", value_parser = duration)]
    pub checkpoint_interval: Duration,
    /// While catching up after a start (until every watch has listed once), at most this many
    /// facts are sent and not yet in the checkpoint — what a `kill -9` then can make the next
    /// start send again; the checkpoint is written each time half of them are done. After the
    /// catch-up the bound is --max-in-flight.
    #[arg(long, env = "KFP_BRIDGE_CATCH_UP_BOUND", default_value_t = 100_000)]
    pub catch_up_bound: usize,
    /// Runs that finished longer ago are history: never published, their tombstones dropped.
    #[arg(long, env = "KFP_BRIDGE_RETENTION", default_value = "24h", value_parser = duration)]
    pub retention: Duration,
    /// Run several replicas; only the holder of a Lease publishes.
    #[arg(long, env = "KFP_BRIDGE_LEADER_ELECTION")]
    pub leader_election: bool,
    /// Name of the Lease.
    #[arg(
        long,
        env = "KFP_BRIDGE_LEADER_ELECTION_NAME",
        default_value = "kfp-event-bridge"
    )]
    pub leader_election_name: String,
    /// Namespace of the Lease; default the bridge's own (in a cluster) or the kubeconfig's.
    #[arg(long, env = "KFP_BRIDGE_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// This replica's name in the Lease; default the host name plus a random suffix.
    #[arg(long, env = "KFP_BRIDGE_LEADER_ELECTION_IDENTITY")]
    pub leader_election_identity: Option<String>,
    /// How long a standby waits on an unrenewed Lease before taking over.
    #[arg(long, env = "KFP_BRIDGE_LEASE_DURATION", default_value = "15s", value_parser = duration)]
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it stops publishing.
    #[arg(long, env = "KFP_BRIDGE_RENEW_DEADLINE", default_value = "10s", value_parser = duration)]
    pub renew_deadline: Duration,
    /// Interval between Lease attempts, by leader and standby.
    #[arg(long, env = "KFP_BRIDGE_LEASE_RETRY_PERIOD", default_value = "2s", value_parser = duration)]
    pub lease_retry_period: Duration,
    #[command(flatten)]
    pub delivery: DeliveryArgs,
    #[command(flatten)]
    pub derive: DeriveArgs,
    #[command(flatten)]
    pub encode: EncodeArgs,
    #[command(flatten)]
    pub admin: AdminArgs,
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
    /// The KFP UI's address, e.g. `https://kubeflow.example.com/pipeline`: every event of a KFP
    /// run gets `RunUrl`, the run's details page there.
    #[arg(long, env = "KFP_BRIDGE_KFP_UI_URL")]
    pub kfp_ui_url: Option<String>,
    /// The Argo Workflows UI's address, e.g. `https://argo.example.com`: `RunUrl` for other
    /// workflows (for every run without `--kfp-ui-url`) and `TaskUrl`, the node's page, on task
    /// events.
    #[arg(long, env = "KFP_BRIDGE_ARGO_UI_URL")]
    pub argo_ui_url: Option<String>,
}

/// Where events go and how hard the bridge tries. Flags and their environment twins override the
/// `--config` file, which overrides the defaults.
#[derive(Debug, Clone, Args)]
pub struct DeliveryArgs {
    /// Where to publish (repeatable; space-separated in the environment): `stdout`, `file:PATH`,
    /// `http(s)://…`. Filters ride in the query: `types=task.*,run.failed`, `namespaces=team-*`,
    /// `pipelines=…` (comma-separated globs), and `name=` names the sink in logs. Default: stdout
    /// when no sink is configured anywhere.
    #[arg(long = "sink", env = "KFP_BRIDGE_SINKS", value_delimiter = ' ')]
    pub sinks: Vec<String>,
    /// A librdkafka property for every `kafka://` sink, `NAME=VALUE` (repeatable; space-separated
    /// in the environment), e.g. `security.protocol=SASL_SSL`; `NAME_file=PATH` reads the value
    /// from a file. A sink's own options (URI query, config file) take precedence.
    #[arg(
        long = "kafka-option",
        env = "KFP_BRIDGE_KAFKA_OPTIONS",
        value_delimiter = ' '
    )]
    pub kafka_options: Vec<String>,
    /// A YAML file with sinks (filters, options), dead letter, retry and lane settings.
    #[arg(long, env = "KFP_BRIDGE_CONFIG")]
    pub config: Option<PathBuf>,
    /// What sinks that name no `format` receive: `cloudevents` (the bridge's events) or
    /// `cdevents` (CDEvents v0.5.1 pipelineRun and taskRun events).
    #[arg(long, env = "KFP_BRIDGE_FORMAT", default_value = "cloudevents", value_parser = event_format)]
    pub format: crate::encode::cdevents::Format,
    /// Where events go that a sink refused for good: any sink URI, e.g. `file:/var/lib/kfp-event-bridge/dead.jsonl`.
    #[arg(long, env = "KFP_BRIDGE_DEAD_LETTER")]
    pub dead_letter: Option<String>,
    /// kfp-event-handler's subscriber directory: one file per subscriber holding its URL.
    #[arg(long, env = "KFP_BRIDGE_SUBSCRIBERS_DIR")]
    pub subscribers_dir: Option<PathBuf>,
    /// Knative's sink URL (set by SinkBinding / ContainerSource); adds an HTTP sink.
    #[arg(long, env = "K_SINK")]
    pub knative_sink: Option<String>,
    /// Request timeout for the `K_SINK` sink, in seconds (Knative's `K_SINK_TIMEOUT`).
    #[arg(long, env = "K_SINK_TIMEOUT")]
    pub knative_sink_timeout: Option<u64>,
    /// Delay after the first failed attempt [default: 200ms].
    #[arg(long, env = "KFP_BRIDGE_RETRY_INITIAL", value_parser = duration)]
    pub retry_initial: Option<Duration>,
    /// Longest delay between attempts [default: 60s].
    #[arg(long, env = "KFP_BRIDGE_RETRY_MAX", value_parser = duration)]
    pub retry_max: Option<Duration>,
    /// Growth of the delay per consecutive failure [default: 2].
    #[arg(long, env = "KFP_BRIDGE_RETRY_MULTIPLIER")]
    pub retry_multiplier: Option<f64>,
    /// Attempts per event before it is dead-lettered; 0 retries until delivered [default: 0].
    #[arg(long, env = "KFP_BRIDGE_RETRY_MAX_ATTEMPTS")]
    pub retry_max_attempts: Option<u32>,
    /// Cap on a delay a receiver asks for with `Retry-After` [default: 5m].
    #[arg(long, env = "KFP_BRIDGE_RETRY_AFTER_MAX", value_parser = duration)]
    pub retry_after_max: Option<Duration>,
    /// Events queued or in flight per sink before intake pauses [default: 10000].
    #[arg(long, env = "KFP_BRIDGE_LANE_CAPACITY")]
    pub lane_capacity: Option<usize>,
    /// Events published and not yet acknowledged per sink [default: 256].
    #[arg(long, env = "KFP_BRIDGE_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,
    /// On SIGTERM/SIGINT, how long to wait for in-flight events [default: 30s].
    #[arg(long, env = "KFP_BRIDGE_SHUTDOWN_TIMEOUT", value_parser = duration)]
    pub shutdown_timeout: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(args: &[&str]) -> Vec<String> {
        with_default_command(args.iter().map(Into::into).collect())
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn run_is_the_default_command() {
        assert_eq!(rewritten(&["b"]), ["b", "run"]);
        assert_eq!(
            rewritten(&["b", "--sink", "stdout"]),
            ["b", "run", "--sink", "stdout"]
        );
        assert_eq!(
            rewritten(&[
                "b",
                "--log",
                "warn",
                "--log-format=json",
                "--namespace",
                "x"
            ]),
            [
                "b",
                "--log",
                "warn",
                "--log-format=json",
                "run",
                "--namespace",
                "x"
            ]
        );
        for kept in [
            &["b", "--log", "warn", "replay", "f"][..],
            &["b", "record", "-"],
            &["b", "--help"],
            &["b", "--version"],
        ] {
            assert_eq!(rewritten(kept), kept);
        }
        let cli = Cli::parse_from(rewritten(&["b", "--checkpoint", "none"]));
        assert!(
            matches!(cli.command, Command::Run(args) if args.checkpoint.as_deref() == Some("none"))
        );
    }
}
