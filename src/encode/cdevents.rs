//! The bridge's events as CDEvents v0.5.1 (the CD Foundation's vocabulary for pipeline and task
//! runs), for the sinks that ask for them (`format=cdevents`): `pipelinerun.queued|started|finished`
//! and `taskrun.started|finished` (`0.3.0`), and two custom events for what CDEvents has no type
//! for, `dev.cdeventsx.kfp-taskrun.skipped|warned.0.1.0`, with the schemas in
//! `schemas/cdevents/`. Carried as CloudEvents per the CDEvents binding: `type`, `source` and
//! `time` are the context's, `subject` is the subject's `id`, `data` is the whole CDEvent and
//! `dataschema` its schema. Pure: a function of the event the bridge built, so the same fact
//! gives the same CDEvent, id included, on every run.

use super::{ID_NAMESPACE, segment};
use cloudevents::event::Data;
use cloudevents::{AttributesReader as _, Event, EventBuilder, EventBuilderV10};
use serde_json::{Map, Value, json};

/// The CDEvents specification version the events follow.
pub const SPEC_VERSION: &str = "0.5.1";
/// The `$id` prefix of the custom events' schemas (`schemas/cdevents/*.json`).
pub const CUSTOM_SCHEMA_PREFIX: &str = "urn:kfp-event-bridge:schema:cdevents:";

/// Which events a sink receives: the bridge's own, or CDEvents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    CloudEvents,
    CdEvents,
}

impl Format {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "cloudevents" => Ok(Self::CloudEvents),
            "cdevents" => Ok(Self::CdEvents),
            other => Err(format!("{other:?} is not one of cloudevents, cdevents")),
        }
    }
}

/// Every CDEvents type the bridge emits, with its schema: the spec's own for the standard
/// types, the project's for the custom ones.
pub const TYPES: &[(&str, &str)] = &[
    (
        "dev.cdevents.pipelinerun.started.0.3.0",
        "https://cdevents.dev/0.5.1/schema/pipelinerun-started-event",
    ),
    (
        "dev.cdevents.pipelinerun.finished.0.3.0",
        "https://cdevents.dev/0.5.1/schema/pipelinerun-finished-event",
    ),
    (
        "dev.cdevents.taskrun.started.0.3.0",
        "https://cdevents.dev/0.5.1/schema/taskrun-started-event",
    ),
    (
        "dev.cdevents.taskrun.finished.0.3.0",
        "https://cdevents.dev/0.5.1/schema/taskrun-finished-event",
    ),
    (
        "dev.cdeventsx.kfp-taskrun.skipped.0.1.0",
        "urn:kfp-event-bridge:schema:cdevents:kfp-taskrun-skipped:0.1.0",
    ),
    (
        "dev.cdeventsx.kfp-taskrun.warned.0.1.0",
        "urn:kfp-event-bridge:schema:cdevents:kfp-taskrun-warned:0.1.0",
    ),
    (
        "dev.cdevents.pipelinerun.queued.0.3.0",
        "https://cdevents.dev/0.5.1/schema/pipelinerun-queued-event",
    ),
];

/// Which CDEvent a bridge event type (its short form, `task.failed`) becomes.
pub fn type_of(short: &str) -> Option<&'static str> {
    Some(match short {
        "run.queued" => TYPES[6].0,
        "run.started" => TYPES[0].0,
        "run.succeeded" | "run.failed" => TYPES[1].0,
        "task.started" => TYPES[2].0,
        "task.succeeded" | "task.failed" => TYPES[3].0,
        "task.skipped" => TYPES[4].0,
        "task.warning" => TYPES[5].0,
        _ => return None,
    })
}

/// The schema (`dataschema`) of a CDEvents type the bridge emits; empty for another type.
pub fn schema_of(ty: &str) -> &'static str {
    TYPES
        .iter()
        .find(|(t, _)| *t == ty)
        .map_or("", |(_, schema)| schema)
}

/// `outcome` of a finished run or task: `cancel` for a run terminated or stopped (and its tasks
/// cut short), `error` for Argo's `Error` phase (the system, not the step, failed), `failure`
/// otherwise.
fn outcome(short: &str, data: &Value) -> &'static str {
    let reason = data["FailureReason"].as_str().unwrap_or("");
    match short {
        "run.succeeded" | "task.succeeded" => "success",
        _ if matches!(reason, "Terminated" | "Stopped") => "cancel",
        _ if data["Phase"] == "Error" => "error",
        _ => "failure",
    }
}

/// A URI for `uri` when the UIs' addresses are not known: the subject as a URN, every character
/// that is not unreserved, `/` or `:` percent-encoded (task paths hold `[`, `]`).
fn urn(subject: &str) -> String {
    let encoded: Vec<String> = subject.split('/').map(segment).collect();
    format!("urn:kfp-event-bridge:{}", encoded.join("/"))
}

/// A bridge event that cannot be a CDEvent: CDEvents need a timestamp, and nothing dates it (a
/// run known only from its Kubernetes Events, whose start was never seen).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undatable;

/// The bridge's event as a CDEvent; `Ok(None)` when it is not one of the bridge's run or task
/// events (a `resend` of something else, or of a CDEvent: it goes out as it is).
pub fn from_event(event: &Event) -> Result<Option<Event>, Undatable> {
    let short = sink_core::template::short_type(event.ty());
    let Some(ty) = type_of(short) else {
        return Ok(None);
    };
    let data: Value = match event.data() {
        Some(Data::Json(v)) => v.clone(),
        Some(Data::Binary(b)) => match serde_json::from_slice(b) {
            Ok(v) => v,
            Err(_) => return Ok(None),
        },
        Some(Data::String(s)) => match serde_json::from_str(s) {
            Ok(v) => v,
            Err(_) => return Ok(None),
        },
        None => return Ok(None),
    };
    let Some(workflow) = data.get("WorkflowName").and_then(Value::as_str) else {
        return Ok(None);
    };
    let namespace = data["Namespace"].as_str().unwrap_or("");
    // The cluster's time of the fact; a fact without one (none of its times was recorded) is
    // dated by the run's or task's times the data holds, as CDEvents needs a timestamp.
    let parsed = |member: &str| {
        data[member]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.to_utc())
    };
    let (first, second) = if short.ends_with(".started") {
        ("StartedAt", "FinishedAt")
    } else {
        ("FinishedAt", "StartedAt")
    };
    let time = event
        .time()
        .copied()
        .or_else(|| parsed(first))
        .or_else(|| parsed(second))
        .ok_or(Undatable)?;
    let source = event.source().to_string();
    let text = |member: &str| data[member].as_str().filter(|s| !s.is_empty());

    // Each run attempt is a pipelineRun of its own, each task attempt a taskRun of its own.
    let mut run_id = format!("{namespace}/{workflow}");
    if let Some(n) = data["RunAttempt"].as_u64() {
        run_id.push_str(&format!("#{n}"));
    }
    let is_task = short.starts_with("task.");
    let subject_id = if is_task {
        let ce_subject = event.subject().unwrap_or("");
        let task = ce_subject
            .strip_prefix(&format!("{namespace}/{workflow}/"))
            .unwrap_or(ce_subject);
        let mut id = format!("{run_id}/{task}");
        if let Some(n) = data["Attempt"].as_u64().filter(|n| *n > 0) {
            id.push_str(&format!("({n})"));
        }
        id
    } else {
        run_id.clone()
    };

    let mut content = Map::new();
    if is_task {
        let name = text("TaskName").or(text("NodeName")).unwrap_or("");
        content.insert("taskName".into(), json!(name));
        let uri = text("TaskUrl")
            .or(text("RunUrl"))
            .map_or_else(|| urn(&subject_id), str::to_owned);
        content.insert("uri".into(), json!(uri));
        content.insert(
            "pipelineRun".into(),
            json!({"id": run_id, "source": source}),
        );
    } else {
        let name = text("PipelineName").unwrap_or(workflow);
        content.insert("pipelineName".into(), json!(name));
        let uri = text("RunUrl").map_or_else(|| urn(&subject_id), str::to_owned);
        content.insert("uri".into(), json!(uri));
    }
    match short {
        "run.succeeded" | "run.failed" | "task.succeeded" | "task.failed" => {
            let outcome = outcome(short, &data);
            content.insert("outcome".into(), json!(outcome));
            if outcome != "success" {
                let errors = text("Message")
                    .or(text("FailureReason"))
                    .unwrap_or("failed");
                content.insert("errors".into(), json!(errors));
            }
        }
        "task.skipped" => {
            let message = text("Message").unwrap_or("");
            content.insert("reason".into(), json!(message));
        }
        "task.warning" => {
            let lifecycle = &data["Lifecycle"];
            content.insert(
                "category".into(),
                json!(lifecycle["Category"].as_str().unwrap_or("")),
            );
            content.insert(
                "reason".into(),
                json!(lifecycle["Reason"].as_str().unwrap_or("")),
            );
            content.insert(
                "message".into(),
                json!(lifecycle["Message"].as_str().unwrap_or("")),
            );
            content.insert(
                "terminal".into(),
                json!(lifecycle["Terminal"].as_bool().unwrap_or(false)),
            );
        }
        _ => {}
    }

    let id = uuid::Uuid::new_v5(&ID_NAMESPACE, format!("cdevents/{}", event.id()).as_bytes())
        .to_string();
    let timestamp = super::rfc3339(time);
    let schema = schema_of(ty);
    let mut context = json!({
        "specversion": SPEC_VERSION,
        "id": id,
        "source": source,
        "type": ty,
        "timestamp": timestamp,
    });
    if schema.starts_with(CUSTOM_SCHEMA_PREFIX) {
        context["schemaUri"] = json!(schema);
    }
    let cdevent = json!({
        "context": context,
        "subject": {"id": subject_id, "source": source, "content": content},
    });

    let mut builder = EventBuilderV10::new()
        .id(id.clone())
        .source(source)
        .ty(ty)
        .subject(subject_id)
        .time(time);
    for (name, value) in event.iter_extensions() {
        // An event of its own names a span of its own in the same trace.
        let value = match (name, value) {
            ("traceparent", cloudevents::event::ExtensionValue::String(parent)) => {
                match parent.split('-').collect::<Vec<_>>().as_slice() {
                    [version, trace, _span, flags] => {
                        let span: String = id
                            .chars()
                            .filter(char::is_ascii_hexdigit)
                            .take(16)
                            .collect();
                        format!("{version}-{trace}-{span}-{flags}").into()
                    }
                    _ => value.clone(),
                }
            }
            _ => value.clone(),
        };
        builder = builder.extension(name, value);
    }
    let bytes = serde_json::to_vec(&cdevent).expect("JSON values serialize");
    Ok(builder
        .data_with_schema("application/json", schema, bytes)
        .build()
        .ok())
}
