//! Configuration: which events go to which sink — `--sink` URIs with their filters, the YAML
//! `--config` file that says the same for larger setups, kfp-event-handler's subscriber directory
//! and Knative's `K_SINK`. Everything is validated before anything starts; errors name the sink
//! and the field.

pub use crate::pipeline::router::Filter;
use serde::Deserialize;
use sink_core::uri;
use std::collections::BTreeMap;
use std::path::Path;

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
                for (field, list) in [
                    ("types", &entry.types),
                    ("namespaces", &entry.namespaces),
                    ("pipelines", &entry.pipelines),
                ] {
                    if list.iter().any(|g| g.trim().is_empty()) {
                        return Err(config_error(context, format!("{field}: empty pattern")));
                    }
                }
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
            filter: Filter::default(),
            options: Some(Vec::new()),
        });
    }
    Ok(specs)
}

pub use sink_core::parse_duration;
