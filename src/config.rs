//! Configuration: which events go to which sink — `--sink` URIs with their filters, the YAML
//! `--config` file that says the same for larger setups, kfp-event-handler's subscriber directory
//! and Knative's `K_SINK`. Everything is validated before anything starts; errors name the sink
//! and the field.

use crate::cli::{DeliveryArgs, DeriveArgs, EncodeArgs, RunArgs, WatchArgs};
use crate::derive::DeriveConfig;
use crate::encode::EncodeConfig;
pub use crate::pipeline::router::Filter;
use crate::pipeline::{LaneConfig, RetryPolicy};
use serde::Deserialize;
use sink_core::uri;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// One configured destination before it is opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkSpec {
    /// The transport URI, without the bridge's own query parameters.
    pub uri: String,
    /// A display name for logs and metrics, replacing the redacted URI.
    pub name: Option<String>,
    pub filter: Filter,
    /// Transport options given separately (config file); `None` when they ride in the URI query.
    pub options: Option<Vec<(String, String)>>,
    /// The events' vocabulary (`format=`); `None`: the `--format` default.
    pub format: Option<crate::encode::cdevents::Format>,
}

impl SinkSpec {
    /// What opening the sink is given.
    pub fn config(&self) -> sink_core::SinkConfig<'_> {
        sink_core::SinkConfig {
            uri: &self.uri,
            name: self.name.as_deref(),
            options: self.options.as_deref(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{context}: {message}")]
pub struct ConfigError {
    pub context: String,
    pub message: String,
}

fn config_error(context: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        context: context.into(),
        message: message.into(),
    }
}

/// Parses a `--sink` value: the bridge's `types`, `namespaces`, `pipelines` (comma-separated
/// globs) and `name` query parameters are taken out; everything else stays for the transport.
pub fn parse_sink_arg(arg: &str) -> Result<SinkSpec, ConfigError> {
    let context = || format!("--sink {}", crate::sinks::redact(arg));
    let (base, query) = match arg.split_once('?') {
        Some((base, query)) => (base, query),
        None => (arg, ""),
    };
    let mut spec = SinkSpec::default();
    let mut kept = Vec::new();
    for param in uri::params(query).map_err(|m| config_error(context(), m))? {
        let (key, value) = (param.key, param.value);
        let globs = || -> Result<Vec<String>, ConfigError> { globs(&value, key, &context()) };
        match key {
            "types" => spec.filter.types.extend(globs()?),
            "namespaces" => spec.filter.namespaces.extend(globs()?),
            "pipelines" => spec.filter.pipelines.extend(globs()?),
            "name" if !value.is_empty() => spec.name = Some(value),
            "name" => return Err(config_error(context(), "name: must not be empty")),
            "format" => {
                let format = crate::encode::cdevents::Format::parse(&value)
                    .map_err(|m| config_error(context(), format!("format: {m}")))?;
                spec.format = Some(format);
            }
            _ => kept.push(param.raw),
        }
    }
    spec.uri = uri::with_query(base, &kept);
    if spec.uri.trim().is_empty() {
        return Err(config_error(context(), "empty sink URI"));
    }
    Ok(spec)
}

fn globs(list: &str, field: &str, context: &str) -> Result<Vec<String>, ConfigError> {
    list.split(',')
        .map(str::trim)
        .map(|g| {
            if g.is_empty() {
                Err(config_error(
                    context,
                    format!("{field}: empty pattern in {list:?}"),
                ))
            } else {
                Ok(g.to_owned())
            }
        })
        .collect()
}

/// The YAML `--config` file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub sinks: Vec<SinkEntry>,
    pub dead_letter: Option<String>,
    pub retry: Option<RetryEntry>,
    pub lanes: Option<LanesEntry>,
    pub shutdown_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkEntry {
    pub uri: String,
    pub name: Option<String>,
    #[serde(default)]
    pub types: Vec<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub pipelines: Vec<String>,
    /// `cloudevents` (the bridge's events) or `cdevents`; absent: the `--format` default.
    pub format: Option<String>,
    /// Transport options, the same names as the URI query parameters; a list repeats the option.
    #[serde(default)]
    pub options: BTreeMap<String, serde_yaml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryEntry {
    pub initial: Option<String>,
    pub max: Option<String>,
    pub multiplier: Option<f64>,
    pub max_attempts: Option<u32>,
    pub retry_after_max: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LanesEntry {
    pub capacity: Option<usize>,
    pub window: Option<usize>,
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let context = format!("--config {}", path.display());
        let text =
            std::fs::read_to_string(path).map_err(|e| config_error(&context, e.to_string()))?;
        let file: ConfigFile =
            serde_yaml::from_str(&text).map_err(|e| config_error(&context, e.to_string()))?;
        Ok(file)
    }

    /// The sinks of the file as specs, each checked.
    pub fn sink_specs(&self, path: &Path) -> Result<Vec<SinkSpec>, ConfigError> {
        self.sinks
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                let context = format!(
                    "--config {}: sinks[{i}] ({})",
                    path.display(),
                    entry
                        .name
                        .clone()
                        .unwrap_or_else(|| crate::sinks::redact(&entry.uri))
                );
                if entry.uri.trim().is_empty() {
                    return Err(config_error(context, "uri: must not be empty"));
                }
                if entry.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
                    return Err(config_error(context, "name: must not be empty"));
                }
                for (field, list) in [
                    ("types", &entry.types),
                    ("namespaces", &entry.namespaces),
                    ("pipelines", &entry.pipelines),
                ] {
                    if list.iter().any(|g| g.trim().is_empty()) {
                        return Err(config_error(context, format!("{field}: empty pattern")));
                    }
                }
                let format = match entry.format.as_deref() {
                    Some(text) => Some(
                        crate::encode::cdevents::Format::parse(text)
                            .map_err(|m| config_error(&context, format!("format: {m}")))?,
                    ),
                    None => None,
                };
                let mut options = Vec::new();
                for (key, value) in &entry.options {
                    let values = match value {
                        serde_yaml::Value::Sequence(vs) => vs.iter().collect(),
                        v => vec![v],
                    };
                    for v in values {
                        let text = match v {
                            serde_yaml::Value::String(s) => s.clone(),
                            serde_yaml::Value::Number(n) => n.to_string(),
                            serde_yaml::Value::Bool(b) => b.to_string(),
                            _ => {
                                return Err(config_error(
                                    context,
                                    format!("options.{key}: expected a string, number or boolean"),
                                ));
                            }
                        };
                        options.push((key.clone(), text));
                    }
                }
                Ok(SinkSpec {
                    uri: entry.uri.clone(),
                    name: entry.name.clone(),
                    filter: Filter {
                        types: entry.types.clone(),
                        namespaces: entry.namespaces.clone(),
                        pipelines: entry.pipelines.clone(),
                    },
                    options: Some(options),
                    format,
                })
            })
            .collect()
    }
}

/// kfp-event-handler's subscriber ConfigMap mounted as a directory: one file per subscriber, its
/// whole content (trimmed) an HTTP URL. Hidden entries (the ConfigMap volume's `..data` links)
/// and directories are skipped; files are taken in name order.
pub fn subscribers(dir: &Path) -> Result<Vec<SinkSpec>, ConfigError> {
    let context = format!("--subscribers-dir {}", dir.display());
    let entries = std::fs::read_dir(dir).map_err(|e| config_error(&context, e.to_string()))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| config_error(&context, e.to_string()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || entry.path().is_dir() {
            continue;
        }
        files.push((name, entry.path()));
    }
    files.sort();
    let mut specs = Vec::with_capacity(files.len());
    for (name, path) in files {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| config_error(&context, format!("{name}: {e}")))?;
        let url = text.trim();
        if url.is_empty() {
            tracing::warn!(subscriber = %name, "subscriber file is empty; skipped");
            continue;
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(config_error(
                &context,
                format!(
                    "{name}: {:?} is not an http:// or https:// URL",
                    crate::sinks::redact(url)
                ),
            ));
        }
        specs.push(SinkSpec {
            uri: url.to_owned(),
            name: Some(format!("subscriber/{name}")),
            // What kfp-event-handler forwarded (Argo's Events: no queued run).
            filter: Filter {
                types: ["run.started", "run.succeeded", "run.failed", "task.*"]
                    .map(String::from)
                    .into(),
                ..Filter::default()
            },
            options: Some(Vec::new()),
            // kfp-event-handler's subscribers read its payload, whatever --format says.
            format: Some(crate::encode::cdevents::Format::CloudEvents),
        });
    }
    Ok(specs)
}

pub use sink_core::parse_duration;

/// Everything delivery needs, validated.
#[derive(Debug, Clone)]
pub struct DeliveryPlan {
    pub sinks: Vec<SinkSpec>,
    pub dead_letter: Option<SinkSpec>,
    pub lanes: LaneConfig,
    pub retry: RetryPolicy,
    pub shutdown_timeout: Duration,
}

/// Shortest retention: Kubernetes keeps Events an hour, and a run forgotten sooner could be
/// brought back by its Events.
pub const MIN_RETENTION: Duration = Duration::from_secs(3600);

/// `run`'s own timings, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivePlan {
    pub retention: Duration,
    pub checkpoint_interval: Duration,
    /// With `--leader-election`: lease duration, renew deadline, retry period.
    pub lease: Option<(Duration, Duration, Duration)>,
}

/// Checks `run`'s timings: the retention at least an hour, a checkpoint interval, and lease
/// duration > renew deadline > retry period > 0.
pub fn live_plan(args: &RunArgs) -> Result<LivePlan, ConfigError> {
    if args.retention < MIN_RETENTION {
        return Err(config_error(
            format!("--retention {:?}", args.retention),
            "at least 1h (Kubernetes keeps Events an hour)",
        ));
    }
    if args.checkpoint_interval.is_zero() {
        return Err(config_error("--checkpoint-interval", "must be above zero"));
    }
    let lease = args.leader_election.then_some((
        args.lease_duration,
        args.renew_deadline,
        args.lease_retry_period,
    ));
    if let Some((duration, renew, retry)) = lease
        && (retry.is_zero() || renew <= retry || duration <= renew)
    {
        return Err(config_error(
            "leader election",
            "wants lease duration > renew deadline > retry period > 0",
        ));
    }
    Ok(LivePlan {
        retention: args.retention,
        checkpoint_interval: args.checkpoint_interval,
        lease,
    })
}

/// Merges flags, the config file, the subscriber directory and `K_SINK` into one checked plan:
/// a flag wins over the file, the file over the default.
pub fn delivery_plan(args: &DeliveryArgs) -> Result<DeliveryPlan, ConfigError> {
    let file = match &args.config {
        Some(path) => Some((path, ConfigFile::load(path)?)),
        None => None,
    };
    let mut sinks = Vec::new();
    for arg in &args.sinks {
        sinks.push(parse_sink_arg(arg)?);
    }
    if let Some((path, file)) = &file {
        sinks.extend(file.sink_specs(path)?);
    }
    if let Some(dir) = &args.subscribers_dir {
        sinks.extend(subscribers(dir)?);
    }
    if let Some(url) = args
        .knative_sink
        .as_deref()
        .filter(|u| !u.trim().is_empty())
    {
        let mut options = Vec::new();
        if let Some(secs) = args.knative_sink_timeout.filter(|s| *s > 0) {
            options.push(("timeout".to_owned(), format!("{secs}s")));
        }
        sinks.push(SinkSpec {
            uri: url.trim().to_owned(),
            name: Some("K_SINK".to_owned()),
            filter: Default::default(),
            options: Some(options),
            format: None,
        });
    }
    if sinks.is_empty() {
        sinks.push(parse_sink_arg("stdout")?);
    }
    for spec in &mut sinks {
        spec.format.get_or_insert(args.format);
    }
    let mut kafka_options = Vec::new();
    for option in args.kafka_options.iter().filter(|o| !o.trim().is_empty()) {
        let Some((name, value)) = option.split_once('=') else {
            return Err(ConfigError {
                context: "--kafka-option".into(),
                message: format!(
                    "{:?} is not NAME=VALUE",
                    option.split('=').next().unwrap_or("")
                ),
            });
        };
        kafka_options.push((name.trim().to_owned(), value.to_owned()));
    }
    for spec in sinks.iter_mut().filter(|s| s.uri.starts_with("kafka://")) {
        let mut options = kafka_options.clone();
        options.extend(spec.options.take().unwrap_or_default());
        spec.options = Some(options);
    }
    let from_file = |f: fn(&ConfigFile) -> Option<String>| file.as_ref().and_then(|(_, c)| f(c));
    let dead_letter = args
        .dead_letter
        .clone()
        .or_else(|| from_file(|c| c.dead_letter.clone()))
        .filter(|u| !u.trim().is_empty())
        .map(|u| parse_sink_arg(&u))
        .transpose()?;
    if let Some(spec) = &dead_letter
        && (spec.format.is_some() || spec.filter != Filter::default())
    {
        return Err(config_error(
            "--dead-letter",
            "takes no format, types, namespaces or pipelines: it keeps each refused event as the \
             sink refused it",
        ));
    }
    let retry_file = file.as_ref().and_then(|(_, c)| c.retry.as_ref());
    let lanes_file = file.as_ref().and_then(|(_, c)| c.lanes.as_ref());
    let defaults = RetryPolicy::default();
    let duration = |flag: Option<Duration>,
                    field: Option<&Option<String>>,
                    name: &str,
                    default: Duration|
     -> Result<Duration, ConfigError> {
        match (flag, field.and_then(|f| f.as_ref())) {
            (Some(d), _) => Ok(d),
            (None, Some(text)) => parse_duration(text).map_err(|message| ConfigError {
                context: format!("--config: retry.{name}"),
                message,
            }),
            (None, None) => Ok(default),
        }
    };
    let retry = RetryPolicy {
        initial: duration(
            args.retry_initial,
            retry_file.map(|r| &r.initial),
            "retry_initial",
            defaults.initial,
        )?,
        max: duration(
            args.retry_max,
            retry_file.map(|r| &r.max),
            "retry_max",
            defaults.max,
        )?,
        multiplier: args
            .retry_multiplier
            .or(retry_file.and_then(|r| r.multiplier))
            .unwrap_or(defaults.multiplier),
        max_attempts: args
            .retry_max_attempts
            .or(retry_file.and_then(|r| r.max_attempts))
            .unwrap_or(defaults.max_attempts),
        retry_after_max: duration(
            args.retry_after_max,
            retry_file.map(|r| &r.retry_after_max),
            "retry_after_max",
            defaults.retry_after_max,
        )?,
    };
    if !(1.0..=10.0).contains(&retry.multiplier) {
        return Err(ConfigError {
            context: "retry multiplier".into(),
            message: format!("{} is not between 1 and 10", retry.multiplier),
        });
    }
    if retry.initial.is_zero() || retry.max < retry.initial {
        return Err(ConfigError {
            context: "retry delays".into(),
            message: "initial must be above zero and max at least initial".into(),
        });
    }
    let lane_defaults = LaneConfig::default();
    let lanes = LaneConfig {
        capacity: args
            .lane_capacity
            .or(lanes_file.and_then(|l| l.capacity))
            .unwrap_or(lane_defaults.capacity),
        window: args
            .max_in_flight
            .or(lanes_file.and_then(|l| l.window))
            .unwrap_or(lane_defaults.window),
    };
    if lanes.capacity == 0 || lanes.window == 0 {
        return Err(ConfigError {
            context: "lanes".into(),
            message: "capacity and max in flight must be above zero".into(),
        });
    }
    let shutdown_timeout = match args.shutdown_timeout {
        Some(d) => d,
        None => match file.as_ref().and_then(|(_, c)| c.shutdown_timeout.clone()) {
            Some(text) => parse_duration(&text).map_err(|message| ConfigError {
                context: "shutdown timeout".into(),
                message,
            })?,
            None => Duration::from_secs(30),
        },
    };
    Ok(DeliveryPlan {
        sinks,
        dead_letter,
        lanes,
        retry,
        shutdown_timeout,
    })
}

/// The watches `run` and `record` open: namespaces and selector trimmed, empty ones dropped.
pub fn watch(args: &WatchArgs) -> crate::source::live::WatchConfig {
    crate::source::live::WatchConfig {
        namespaces: args
            .namespaces
            .iter()
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .collect(),
        label_selector: args.label_selector.clone().filter(|s| !s.trim().is_empty()),
        events: args.watch_events,
        timeout: args.watch_timeout,
    }
}

/// The derivation's settings from its flags.
pub fn derive(args: &DeriveArgs) -> DeriveConfig {
    DeriveConfig {
        node_events: args.node_events,
        kfp_only: args.kfp_only,
        history_before: None,
        defer_event_facts: false,
    }
}

/// The encoder's settings from its flags, checked (type prefix, source, dataschema, the
/// `--ce-overrides` JSON).
pub fn encode(args: &EncodeArgs) -> Result<EncodeConfig, crate::encode::EncodeError> {
    let mut config = EncodeConfig {
        type_prefix: args.type_prefix.clone(),
        source_prefix: args.source_prefix.clone(),
        dataschema: args.dataschema.clone(),
        max_data_bytes: args.max_data_bytes,
        overrides: Default::default(),
        links: crate::encode::Links::new(args.kfp_ui_url.as_deref(), args.argo_ui_url.as_deref())?,
    };
    if let Some(json) = args
        .ce_overrides
        .as_deref()
        .filter(|j| !j.trim().is_empty())
    {
        config = config.with_ce_overrides(json)?;
    }
    config.validate()?;
    Ok(config)
}
