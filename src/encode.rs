//! Facts → CloudEvents v1.0: deterministic ids, a stable source per workflow, the cluster's time,
//! routing extensions and the kfp-event-handler payload grown with run and task details.
//!
//! Pure: the same fact and configuration always give the same event, byte for byte once written
//! by `sink_core::structured`.

pub mod cdevents;

use crate::model::{Fact, FactKind, FailureKind};
use cloudevents::{Event, EventBuilder, EventBuilderV10};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// Extension naming why an event was dead-lettered (the sink's error message).
pub const DEAD_LETTER_REASON: &str = "deadletterreason";
/// Extension naming the sink that refused a dead-lettered event.
pub const DEAD_LETTER_SINK: &str = "deadlettersink";

/// Default CloudEvent type prefix: `org.kubeflow.pipelines.run.started` and so on.
pub const DEFAULT_TYPE_PREFIX: &str = "org.kubeflow.pipelines";
/// Default source prefix: the in-cluster API server address, as Knative's ApiServerSource uses.
pub const DEFAULT_SOURCE_PREFIX: &str = "https://kubernetes.default.svc";
/// The `$id` of `schemas/event-data.v1.json`, used as `dataschema`.
pub const DATA_SCHEMA: &str = "urn:kfp-event-bridge:schema:event-data:v1";
/// CloudEvents intermediaries must forward events up to 64 KiB; leave room for the attributes.
pub const DEFAULT_MAX_DATA_BYTES: usize = 60 * 1024;

/// Namespace of the name-based (v5) UUIDs used as event ids; fixed forever, or ids would change.
const ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6b66_7065_7665_6e74_2d62_7269_6467_6501);

/// Every `data` member, in the order docs/events.md documents them. A test keeps this list, the JSON
/// Schema and the catalog the same.
pub const DATA_FIELDS: &[&str] = &[
    "KfpRunId",
    "WorkflowName",
    "NodeName",
    "EventType",
    "Message",
    "Namespace",
    "RunName",
    "PipelineName",
    "RecurringRunId",
    "Phase",
    "FailureReason",
    "NodeId",
    "NodeType",
    "TaskName",
    "TaskKey",
    "TemplateName",
    "StartedAt",
    "FinishedAt",
    "DurationSeconds",
    "ExitCode",
    "PodName",
    "Attempt",
    "RunAttempt",
    "PreviousAttempt",
    "Cached",
    "Hook",
    "Iteration",
    "RetryFollows",
    "Parameters",
    "Lifecycle",
    "NodeStatusOffloaded",
    "RunUrl",
    "TaskUrl",
    "Truncated",
];

/// Extension attributes the bridge sets (plus any from `K_CE_OVERRIDES`).
/// `pipeline` makes the pipeline name filterable where only attributes are (Knative Triggers, routing).
pub const EXTENSIONS: &[&str] = &[
    "kfprunid",
    "namespace",
    "workflow",
    "pipeline",
    "partitionkey",
    "traceparent",
];

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error(
        "invalid extension name {0:?}: CloudEvents attribute names are lower-case letters and digits"
    )]
    ExtensionName(String),
    #[error("K_CE_OVERRIDES is not {{\"extensions\": {{name: value}}}}: {0}")]
    Overrides(String),
    #[error("dataschema {0:?} is not an absolute URI")]
    DataSchema(String),
    #[error("{0} {1:?}: {2}")]
    UiUrl(&'static str, String, &'static str),
    #[error("event could not be built: {0}")]
    Build(#[from] cloudevents::event::EventBuilderError),
    #[error("event data could not be serialized: {0}")]
    Data(#[from] serde_json::Error),
}

/// How facts become events.
#[derive(Debug, Clone)]
pub struct EncodeConfig {
    pub type_prefix: String,
    pub source_prefix: String,
    pub dataschema: String,
    pub max_data_bytes: usize,
    /// Extensions added to every event (Knative `K_CE_OVERRIDES`), replacing same-named ones.
    pub overrides: BTreeMap<String, String>,
    /// Where the UIs are, for the `RunUrl` and `TaskUrl` links.
    pub links: Links,
}

/// The KFP and Argo UIs' addresses (`--kfp-ui-url`, `--argo-ui-url`), parsed: links are built on
/// them as URLs (their path and query kept, everything percent-encoded as a URL needs).
#[derive(Debug, Clone, Default)]
pub struct Links {
    pub kfp_ui: Option<url::Url>,
    pub argo_ui: Option<url::Url>,
}

impl Links {
    /// Checks and keeps the UIs' addresses; an empty one is none. An address must be an absolute
    /// `http`/`https` URL with a host, without credentials (they would be in every event) and
    /// without a fragment (KFP's UI routes in it; the bridge writes the route).
    pub fn new(kfp_ui: Option<&str>, argo_ui: Option<&str>) -> Result<Self, EncodeError> {
        let check = |flag: &'static str,
                     text: Option<&str>|
         -> Result<Option<url::Url>, EncodeError> {
            let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
                return Ok(None);
            };
            // Shown without what could be a credential.
            let refuse = |why| EncodeError::UiUrl(flag, sink_core::redact(text), why);
            let absolute = "is not an absolute http or https URL";
            let mut u = url::Url::parse(text).map_err(|_| refuse(absolute))?;
            if !matches!(u.scheme(), "http" | "https") || u.host().is_none() {
                return Err(refuse(absolute));
            }
            if !u.username().is_empty() || u.password().is_some() {
                return Err(refuse(
                    "holds credentials, which every event would carry: give the UI's public address",
                ));
            }
            if u.fragment().is_some_and(|f| !f.is_empty() && f != "/") {
                return Err(refuse(
                    "has a fragment: give the UI's address, the bridge adds the run's route",
                ));
            }
            u.set_fragment(None);
            Ok(Some(u))
        };
        Ok(Self {
            kfp_ui: check("--kfp-ui-url", kfp_ui)?,
            argo_ui: check("--argo-ui-url", argo_ui)?,
        })
    }

    /// The run's page: KFP's run details page for a KFP run (KFP's UI routes with a hash:
    /// `#/runs/details/<run id>`, for v1 and v2 runs alike), else the Argo UI's workflow page.
    fn run(&self, run: &crate::model::RunInfo) -> Option<String> {
        match (&self.kfp_ui, &self.argo_ui) {
            (Some(kfp), _) if !run.kfp_run_id.is_empty() => {
                let mut page = kfp.clone();
                if !page.path().ends_with('/') {
                    let path = format!("{}/", page.path());
                    page.set_path(&path);
                }
                page.set_fragment(Some(&format!("/runs/details/{}", segment(&run.kfp_run_id))));
                Some(page.into())
            }
            (_, Some(argo)) => Some(argo_workflow(argo, run).into()),
            _ => None,
        }
    }

    /// The task's page: the Argo UI's workflow page with the node selected. KFP's UI has no page
    /// for a task the bridge can name (v2's execution page needs the metadata store's execution
    /// id; v1's run page takes no node).
    fn task(&self, run: &crate::model::RunInfo, node_id: &str) -> Option<String> {
        let mut page = argo_workflow(self.argo_ui.as_ref()?, run);
        page.query_pairs_mut().append_pair("nodeId", node_id);
        Some(page.into())
    }
}

/// `<argo>/workflows/<namespace>/<name>`, the Argo UI's workflow page (the address's own query
/// kept).
fn argo_workflow(argo: &url::Url, run: &crate::model::RunInfo) -> url::Url {
    let mut page = argo.clone();
    if let Ok(mut path) = page.path_segments_mut() {
        path.pop_if_empty()
            .extend(["workflows", &run.namespace, &run.workflow]);
    }
    page
}

/// The CloudEvents distributed-tracing extension's `traceparent` (W3C Trace Context, version
/// 00) for an event of a run whose trace id Argo wrote: the event's own span id, derived from its
/// id (the same event always names the same span), flagged sampled (Argo records only sampled
/// traces' ids).
fn traceparent(trace_id: &str, event_id: &str) -> String {
    let mut span: String = event_id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(16)
        .collect();
    if span.bytes().all(|b| b == b'0') {
        span.replace_range(15.., "1");
    }
    format!("00-{trace_id}-{span}-01")
}

impl Default for EncodeConfig {
    fn default() -> Self {
        Self {
            type_prefix: DEFAULT_TYPE_PREFIX.into(),
            source_prefix: DEFAULT_SOURCE_PREFIX.into(),
            dataschema: DATA_SCHEMA.into(),
            max_data_bytes: DEFAULT_MAX_DATA_BYTES,
            overrides: BTreeMap::new(),
            links: Links::default(),
        }
    }
}

impl EncodeConfig {
    /// Checks what a bad flag could break, once, before any event is built.
    pub fn validate(&self) -> Result<(), EncodeError> {
        // The SDK parses `dataschema` as an absolute URL, as the spec requires.
        EventBuilderV10::new()
            .id("check")
            .source("/")
            .ty("check")
            .data_with_schema("application/json", self.dataschema.as_str(), Value::Null)
            .build()
            .map_err(|_| EncodeError::DataSchema(self.dataschema.clone()))?;
        for name in self.overrides.keys() {
            check_extension_name(name)?;
        }
        Ok(())
    }

    /// Reads Knative's `K_CE_OVERRIDES` JSON (`{"extensions":{"name":"value"}}`).
    pub fn with_ce_overrides(mut self, json: &str) -> Result<Self, EncodeError> {
        #[derive(serde::Deserialize)]
        struct Overrides {
            #[serde(default)]
            extensions: BTreeMap<String, Value>,
        }
        let parsed: Overrides =
            serde_json::from_str(json).map_err(|e| EncodeError::Overrides(e.to_string()))?;
        for (name, value) in parsed.extensions {
            check_extension_name(&name)?;
            let text = match value {
                Value::String(s) => s,
                other => other.to_string(),
            };
            self.overrides.insert(name, text);
        }
        Ok(self)
    }
}

fn check_extension_name(name: &str) -> Result<(), EncodeError> {
    const RESERVED: &[&str] = &[
        "data",
        "id",
        "source",
        "specversion",
        "type",
        "datacontenttype",
        "dataschema",
        "subject",
        "time",
    ];
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok && !RESERVED.contains(&name) {
        Ok(())
    } else {
        Err(EncodeError::ExtensionName(name.to_owned()))
    }
}

/// The deterministic id of a fact: a v5 UUID of (workflow uid, node id or `run`, type, attempt,
/// warning category, and the run attempt from the second on). A re-send after a crash carries the same id; consumers de-duplicate on
/// `source` + `id`.
pub fn fact_id(fact: &Fact) -> String {
    let node = fact.task.as_ref().map_or("run", |t| t.node_id.as_str());
    let attempt = fact.task.as_ref().map_or(0, |t| t.attempt);
    let category = fact.lifecycle.as_ref().map_or("", |l| l.category.as_str());
    let mut name = format!(
        "{}/{node}/{}/{attempt}/{category}",
        fact.run.uid,
        fact.kind.type_suffix()
    );
    // A retried run's later attempts: the first attempt's ids are those of a run never retried.
    let run_attempt = fact.run.attempt;
    if run_attempt.retries > 0 {
        name.push_str(&format!("/run-attempt/{}", run_attempt.number()));
    }
    uuid::Uuid::new_v5(&ID_NAMESPACE, name.as_bytes()).to_string()
}

/// `<prefix>/apis/argoproj.io/v1alpha1/namespaces/<ns>/workflows/<name>`: the workflow's API path.
pub fn source(prefix: &str, namespace: &str, workflow: &str) -> String {
    format!(
        "{}/apis/argoproj.io/v1alpha1/namespaces/{}/workflows/{}",
        prefix.trim_end_matches('/'),
        segment(namespace),
        segment(workflow)
    )
}

/// Percent-encodes everything but RFC 3986 unreserved characters (Kubernetes names never need it;
/// bad input must still give a valid URI-reference).
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct LifecycleData<'a> {
    category: &'a str,
    reason: &'a str,
    message: String,
    terminal: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct PreviousAttemptData {
    phase: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Data<'a> {
    kfp_run_id: &'a str,
    workflow_name: &'a str,
    node_name: &'a str,
    event_type: &'a str,
    message: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    namespace: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    run_name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pipeline_name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    recurring_run_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    phase: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    failure_reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    node_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    task_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    task_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    template_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pod_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_attempt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_attempt: Option<PreviousAttemptData>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    cached: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    hook: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iteration: Option<u32>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    retry_follows: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<&'a BTreeMap<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lifecycle: Option<LifecycleData<'a>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    node_status_offloaded: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    task_url: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    truncated: Vec<&'static str>,
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn not_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// Cuts `text` to at most `max` bytes on a character boundary, marking the cut.
fn clip(text: &mut String, max: usize) -> bool {
    if text.len() <= max {
        return false;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push('…');
    true
}

fn data<'a>(fact: &'a Fact, links: &Links) -> Data<'a> {
    let run = &*fact.run;
    let task = fact.task.as_ref();
    let (started, finished) = match task {
        Some(t) => (t.started_at, t.finished_at),
        None => (run.started_at, run.finished_at),
    };
    let finished = finished.filter(|_| fact.kind.is_terminal());
    // A queued run has not started, whenever its queued event is reported.
    let started = started.filter(|_| fact.kind != FactKind::RunQueued);
    let node_name = task.map_or("", |t| t.node_name.rsplit('.').next().unwrap_or(""));
    Data {
        kfp_run_id: &run.kfp_run_id,
        workflow_name: &run.workflow,
        node_name,
        event_type: &fact.reason,
        message: fact.message.clone(),
        namespace: &run.namespace,
        run_name: &run.run_name,
        pipeline_name: &run.pipeline_name,
        recurring_run_id: &run.recurring_run_id,
        phase: match fact.kind {
            FactKind::RunStarted | FactKind::TaskStarted => "Running",
            FactKind::RunQueued | FactKind::TaskWarning => "Pending",
            FactKind::RunSucceeded => "Succeeded",
            FactKind::RunFailed if run.phase.is_empty() => "Failed",
            FactKind::RunFailed => &run.phase,
            _ => task.map_or("", |t| t.phase.as_str()),
        },
        failure_reason: match fact.kind {
            FactKind::RunFailed => run.failure.map_or("", FailureKind::as_str),
            FactKind::TaskFailed => task.and_then(|t| t.failure).map_or("", FailureKind::as_str),
            _ => "",
        },
        node_id: task.map(|t| t.node_id.as_str()),
        node_type: task.and_then(|t| not_empty(&t.node_type)),
        task_name: task.map(|t| t.task_name.as_str()),
        task_key: task.and_then(|t| t.task_key.as_deref()),
        template_name: task.and_then(|t| not_empty(&t.template)),
        started_at: started.map(rfc3339),
        finished_at: finished.map(rfc3339),
        // A node whose end precedes its start (clocks of the nodes writing them disagree) lasted
        // no time, not negative time.
        duration_seconds: started
            .zip(finished)
            .map(|(s, f)| (f - s).num_seconds().max(0)),
        // Only an ended attempt has one: a `task.started` synthesized after the fact must read
        // as it would have when it happened (a re-send after a restart is the same event).
        exit_code: task
            .and_then(|t| t.exit_code)
            .filter(|_| fact.kind.is_terminal()),
        pod_name: task.and_then(|t| not_empty(&t.pod_name)),
        attempt: task.map(|t| t.attempt),
        run_attempt: (run.attempt.retries > 0).then(|| run.attempt.number()),
        previous_attempt: run
            .attempt
            .previous
            .filter(|_| fact.kind == FactKind::RunStarted && run.attempt.retries > 0)
            .map(|outcome| PreviousAttemptData {
                phase: outcome.phase(),
                finished_at: run
                    .attempt
                    .since
                    .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
                    .map(rfc3339),
            }),
        cached: task.is_some_and(|t| t.cached),
        hook: task.and_then(|t| t.hook.as_deref()),
        iteration: task.and_then(|t| t.iteration),
        retry_follows: fact.kind == FactKind::TaskFailed && task.is_some_and(|t| t.retry_follows),
        parameters: (!run.parameters.is_empty()).then_some(&run.parameters),
        lifecycle: fact.lifecycle.as_ref().map(|l| LifecycleData {
            category: l.category.as_str(),
            reason: l.reason,
            message: l.message.clone(),
            terminal: l.terminal,
        }),
        node_status_offloaded: run.nodes_offloaded,
        run_url: links.run(run),
        task_url: task.and_then(|t| links.task(run, &t.node_id)),
        truncated: Vec::new(),
    }
}

/// Serializes the payload, trimming it to `max` bytes: parameters go first, then long messages.
/// `Truncated` names what was cut. The JSON goes through a tree so its members come out sorted,
/// as they always have; its bytes are both the size measured and the event's data.
fn bounded_data(fact: &Fact, config: &EncodeConfig) -> Result<Vec<u8>, serde_json::Error> {
    let max = config.max_data_bytes;
    let mut data = data(fact, &config.links);
    let json = |d: &Data<'_>| serde_json::to_value(d).and_then(|v| serde_json::to_vec(&v));
    let mut bytes = json(&data)?;
    if bytes.len() <= max {
        return Ok(bytes);
    }
    if data.parameters.take().is_some() {
        data.truncated.push("Parameters");
        bytes = json(&data)?;
    }
    if bytes.len() > max {
        let budget = (max / 4).max(256);
        let mut cut = clip(&mut data.message, budget);
        if let Some(l) = data.lifecycle.as_mut() {
            cut |= clip(&mut l.message, budget);
        }
        if cut {
            data.truncated.push("Message");
        }
        bytes = json(&data)?;
    }
    Ok(bytes)
}

/// Builds the CloudEvent for one fact.
pub fn encode(fact: &Fact, config: &EncodeConfig) -> Result<Event, EncodeError> {
    let run = &*fact.run;
    let mut subject = format!("{}/{}", run.namespace, run.workflow);
    if let Some(task) = fact.task.as_ref() {
        subject.push('/');
        match &task.path {
            // A task in a nested pipeline, sub-DAG, condition or loop: its groups and key.
            Some(path) => subject.push_str(path),
            None => {
                // The key, unique in its DAG, where the UI name (which need not be) differs.
                subject.push_str(task.task_key.as_deref().unwrap_or(&task.task_name));
                // One loop iteration is one task instance: iterations share the task's name.
                if let Some(i) = task.iteration {
                    subject.push_str(&format!("[{i}]"));
                }
            }
        }
    }
    let id = fact_id(fact);
    let trace = run.trace_id.as_deref().map(|t| traceparent(t, &id));
    let mut builder = EventBuilderV10::new()
        .id(id)
        .source(source(&config.source_prefix, &run.namespace, &run.workflow))
        .ty(format!(
            "{}.{}",
            config.type_prefix,
            fact.kind.type_suffix()
        ))
        .subject(subject);
    if let Some(time) = fact.time {
        builder = builder.time(time);
    }
    let partition_key = if run.kfp_run_id.is_empty() {
        &run.uid
    } else {
        &run.kfp_run_id
    };
    let extensions = [
        ("kfprunid", run.kfp_run_id.as_str()),
        ("namespace", run.namespace.as_str()),
        ("workflow", run.workflow.as_str()),
        ("pipeline", run.pipeline_name.as_str()),
        ("partitionkey", partition_key.as_str()),
        ("traceparent", trace.as_deref().unwrap_or("")),
    ];
    for (name, value) in extensions {
        if !value.is_empty() && !config.overrides.contains_key(name) {
            builder = builder.extension(name, value);
        }
    }
    for (name, value) in &config.overrides {
        builder = builder.extension(name, value.as_str());
    }
    // Serialized once here; every sink copies these bytes (see `structured::is_json`).
    let data = bounded_data(fact, config)?;
    Ok(builder
        .data_with_schema("application/json", config.dataschema.as_str(), data)
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Origin, RunInfo, TaskInfo};
    use std::sync::Arc;

    /// Clock skew between the nodes writing a node's times can put its end before its start.
    #[test]
    fn an_end_before_the_start_lasted_no_time() {
        let at = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.to_utc())
                .ok()
        };
        let fact = Fact {
            kind: FactKind::TaskSucceeded,
            run: Arc::new(RunInfo::default()),
            task: Some(TaskInfo {
                started_at: at("2026-03-14T09:00:10Z"),
                finished_at: at("2026-03-14T09:00:07Z"),
                ..TaskInfo::default()
            }),
            lifecycle: None,
            time: None,
            reason: String::new(),
            message: String::new(),
            origin: Origin::Status,
        };
        let data: Value =
            serde_json::from_slice(&bounded_data(&fact, &EncodeConfig::default()).expect("data"))
                .expect("json");
        assert_eq!(data["DurationSeconds"], 0);
    }
}
