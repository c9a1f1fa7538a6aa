//! What a fact says about its run, read from the Workflow: KFP labels and annotations, the run's
//! parameters (which live in different places in KFP v1 and v2) and why a failed run failed.

use crate::model::{FailureKind, RunInfo};
use crate::source::objects::Workflow;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::BTreeMap;

pub const LABEL_RUN_ID: &str = "pipeline/runid";
const ANNOTATION_RUN_NAME: &str = "pipelines.kubeflow.org/run_name";
const ANNOTATION_PIPELINE_SPEC: &str = "pipelines.kubeflow.org/pipeline_spec";
const LABEL_V2_COMPONENT: &str = "pipelines.kubeflow.org/v2_component";
/// Argo Workflows 4.1+ writes the trace id of the workflow's telemetry trace here.
const ANNOTATION_TRACE_ID: &str = "workflows.argoproj.io/trace-id";

/// Parses a Kubernetes timestamp; a malformed one counts as absent.
pub fn timestamp(text: Option<&str>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Whether the KFP v2 compiler produced this workflow (its driver templates or pod label).
pub fn is_kfp_v2(wf: &Workflow) -> bool {
    wf.spec
        .pod_metadata
        .labels
        .get(LABEL_V2_COMPONENT)
        .is_some_and(|v| v == "true")
        || wf
            .spec
            .templates
            .iter()
            .any(|t| t.name == "system-dag-driver")
}

/// Builds the run part of every fact derived from this observation of `wf`.
pub fn run_info(wf: &Workflow) -> RunInfo {
    let meta = &wf.metadata;
    let status = wf.status.clone().unwrap_or_default();
    let v2 = is_kfp_v2(wf);
    let failure = match status.phase.as_str() {
        "Failed" | "Error" => Some(failure_kind(wf, &status.phase, &status.message)),
        _ => None,
    };
    RunInfo {
        uid: meta.uid.clone(),
        namespace: meta.namespace.clone(),
        workflow: meta.name.clone(),
        kfp_run_id: meta.labels.get(LABEL_RUN_ID).cloned().unwrap_or_default(),
        run_name: meta
            .annotations
            .get(ANNOTATION_RUN_NAME)
            .cloned()
            .unwrap_or_default(),
        pipeline_name: if v2 {
            v2_pipeline_name(wf)
        } else {
            v1_pipeline_name(wf)
        },
        recurring_run_id: meta
            .owner_references
            .iter()
            .find(|o| o.kind == "ScheduledWorkflow")
            .map(|o| o.uid.clone())
            .unwrap_or_default(),
        phase: status.phase.clone(),
        message: status.message.clone(),
        created_at: timestamp(meta.creation_timestamp.as_deref()),
        started_at: timestamp(status.started_at.as_deref()),
        finished_at: timestamp(status.finished_at.as_deref()),
        parameters: if v2 {
            v2_parameters(wf)
        } else {
            v1_parameters(wf)
        },
        failure,
        nodes_offloaded: !status.offload_node_status_version.is_empty(),
        attempt: crate::model::RunAttempt::default(),
        trace_id: meta
            .annotations
            .get(ANNOTATION_TRACE_ID)
            .filter(|id| is_trace_id(id))
            .cloned(),
    }
}

/// A W3C trace id: 32 lower-case hex digits, not all zero (an all-zero id is invalid).
fn is_trace_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && id.bytes().any(|b| b != b'0')
}

/// KFP terminates by `activeDeadlineSeconds: 0` (backend `execution_spec.go`), Argo's CLI by
/// `spec.shutdown`; a deadline shows up in the message. Argo emits `WorkflowFailed` for all of
/// them, so the data is where a consumer can tell them apart.
fn failure_kind(wf: &Workflow, phase: &str, message: &str) -> FailureKind {
    let lower = message.to_ascii_lowercase();
    if wf.spec.shutdown == "Terminate" || wf.spec.active_deadline_seconds == Some(0) {
        FailureKind::Terminated
    } else if wf.spec.shutdown == "Stop" {
        FailureKind::Stopped
    } else if lower.contains("deadline")
        || lower.contains("timed out")
        || lower.contains("max duration")
    {
        FailureKind::DeadlineExceeded
    } else if phase == "Error" {
        FailureKind::Error
    } else {
        FailureKind::Failed
    }
}

/// KFP v1 and plain Argo: `spec.arguments.parameters`.
fn v1_parameters(wf: &Workflow) -> BTreeMap<String, Value> {
    wf.spec
        .arguments
        .parameters
        .iter()
        .filter_map(|p| Some((p.name.clone(), Value::String(p.text()?))))
        .collect()
}

/// KFP v2: `spec.arguments.parameters` holds compiler blobs (component and implementation specs),
/// never published; the run's values are the `parameterValues` of the root driver's
/// `runtime-config` argument (backend `argocompiler/dag.go`).
fn v2_parameters(wf: &Workflow) -> BTreeMap<String, Value> {
    let runtime_config = wf
        .spec
        .templates
        .iter()
        .filter_map(|t| t.dag.as_ref())
        .flat_map(|dag| &dag.tasks)
        .filter(|task| task.name == "root-driver")
        .flat_map(|task| &task.arguments.parameters)
        .find(|p| p.name == "runtime-config")
        .and_then(|p| p.text());
    let Some(Ok(Value::Object(config))) = runtime_config.map(|c| serde_json::from_str::<Value>(&c))
    else {
        return BTreeMap::new();
    };
    match config
        .get("parameterValues")
        .or_else(|| config.get("parameters"))
    {
        Some(Value::Object(values)) => values.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        _ => BTreeMap::new(),
    }
}

/// KFP v2 task names as KFP's UI shows them (`taskInfo.name`, e.g. after `set_display_name`),
/// where they differ from the task's key: by (DAG component, task key). The compiler puts each
/// DAG component's spec in `spec.arguments.parameters` as `components-root` and
/// `components-<component>` (backend `argocompiler/argo.go`); the executor DAG of a task runs
/// inside a node whose template is its component (`root` for the pipeline's own DAG).
pub fn v2_display_names(wf: &Workflow) -> BTreeMap<(String, String), String> {
    let mut names = BTreeMap::new();
    for param in &wf.spec.arguments.parameters {
        let Some(component) = param.name.strip_prefix("components-") else {
            continue;
        };
        let Some(text) = param.text() else { continue };
        // Only DAG components name tasks; container components' specs are skipped unparsed.
        if !text.contains("\"dag\"") {
            continue;
        }
        let Ok(spec) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let Some(tasks) = spec.pointer("/dag/tasks").and_then(Value::as_object) else {
            continue;
        };
        for (key, task) in tasks {
            if let Some(name) = task.pointer("/taskInfo/name").and_then(Value::as_str)
                && name != key
                && !name.is_empty()
            {
                names.insert((component.to_owned(), key.clone()), name.to_owned());
            }
        }
    }
    names
}

/// KFP v1 SDK: the `name` in the `pipeline_spec` annotation.
fn v1_pipeline_name(wf: &Workflow) -> String {
    wf.metadata
        .annotations
        .get(ANNOTATION_PIPELINE_SPEC)
        .and_then(|spec| serde_json::from_str::<Value>(spec).ok())
        .and_then(|spec| spec.get("name").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default()
}

/// KFP v2: the drivers' `--pipeline_name` argument.
fn v2_pipeline_name(wf: &Workflow) -> String {
    wf.spec
        .templates
        .iter()
        .filter_map(|t| t.container.as_ref())
        .find_map(|c| {
            let at = c
                .args
                .iter()
                .position(|a| a.as_str() == Some("--pipeline_name"))?;
            c.args.get(at + 1)?.as_str().map(str::to_owned)
        })
        .unwrap_or_default()
}
