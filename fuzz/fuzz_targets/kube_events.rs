//! Structure-aware: Kubernetes Events as Argo's workflow-controller writes them (on the
//! Workflow, or on the Pod with `nodeEvents.sendAsPod`), with arbitrary reasons, messages,
//! node annotations, counts and aggregates, before, between and after the Workflow's own watch
//! lines and its deletion — the derivation's invariants hold over the whole sequence.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

const REASONS: [&str; 12] = [
    "WorkflowRunning",
    "WorkflowSucceeded",
    "WorkflowFailed",
    "WorkflowTimedOut",
    "WorkflowNodeRunning",
    "WorkflowNodeSucceeded",
    "WorkflowNodeFailed",
    "WorkflowNodeError",
    "WorkflowNodeSkipped",
    "WorkflowNodeOmitted",
    "WorkflowNodePending",
    "BackOff",
];
const NODE_TYPES: [&str; 5] = ["Pod", "DAG", "Retry", "Steps", ""];
const UID: &str = "00000000-0000-4000-8000-00000000e0e0";

#[derive(Arbitrary, Debug)]
struct Ev {
    reason: u8,
    /// Another reason text than Argo's.
    odd_reason: Option<String>,
    message: String,
    aggregate: bool,
    on_pod: bool,
    node: Option<u8>,
    attempt: Option<u8>,
    node_type: u8,
    start_ns: Option<u64>,
    count: u8,
    second: u8,
    other_uid: bool,
    other_component: bool,
    deleted: bool,
}

#[derive(Arbitrary, Debug)]
enum Line {
    Event(Ev),
    /// The Workflow with `n` pod nodes in this phase (`None`: offloaded, no nodes).
    Workflow {
        phase: u8,
        nodes: Option<u8>,
    },
    DeleteWorkflow,
}

const PHASES: [&str; 5] = ["Pending", "Running", "Succeeded", "Failed", "Error"];

fn event(i: usize, ev: &Ev) -> Value {
    let reason = ev
        .odd_reason
        .clone()
        .unwrap_or_else(|| REASONS[usize::from(ev.reason) % REASONS.len()].to_owned());
    let message = if ev.aggregate {
        format!("(combined from similar events): {}", ev.message)
    } else {
        ev.message.clone()
    };
    let mut annotations = serde_json::Map::new();
    if let Some(n) = ev.node {
        let suffix = ev.attempt.map_or(String::new(), |a| format!("({})", a % 4));
        annotations.insert(
            "workflows.argoproj.io/node-id".into(),
            json!(format!("ev-wf-{}", n % 8)),
        );
        annotations.insert(
            "workflows.argoproj.io/node-name".into(),
            json!(format!("ev-wf.task-{}{suffix}", n % 8)),
        );
        annotations.insert(
            "workflows.argoproj.io/node-type".into(),
            json!(NODE_TYPES[usize::from(ev.node_type) % NODE_TYPES.len()]),
        );
    }
    if let Some(ns) = ev.start_ns {
        annotations.insert(
            "workflows.argoproj.io/node-start-time".into(),
            json!(ns.to_string()),
        );
    }
    let uid = if ev.other_uid { "someone-else" } else { UID };
    let involved = if ev.on_pod {
        annotations.insert("workflows.argoproj.io/workflow-name".into(), json!("ev-wf"));
        annotations.insert("workflows.argoproj.io/workflow-uid".into(), json!(uid));
        json!({"apiVersion": "v1", "kind": "Pod", "name": "ev-wf-pod", "namespace": "fuzz", "uid": "pod-uid"})
    } else {
        json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "name": "ev-wf", "namespace": "fuzz", "uid": uid})
    };
    let at = format!("2026-01-01T00:00:{:02}Z", ev.second % 60);
    json!({
        "type": if ev.deleted { "DELETED" } else { "ADDED" },
        "object": {
            "apiVersion": "v1", "kind": "Event", "count": ev.count,
            "firstTimestamp": at, "lastTimestamp": at,
            "involvedObject": involved, "reason": reason, "message": message,
            "metadata": {"name": format!("ev-wf.{i:016x}"), "namespace": "fuzz", "uid": format!("ev-{i}"), "annotations": annotations},
            "source": {"component": if ev.other_component { "kubelet" } else { "workflow-controller" }},
            "type": if reason.contains("Failed") || reason.contains("Error") { "Warning" } else { "Normal" },
        },
    })
}

fn workflow(phase: &str, nodes: Option<u8>, change: &str) -> Value {
    let mut status = json!({"phase": phase, "startedAt": "2026-01-01T00:00:00Z"});
    match nodes {
        Some(n) => {
            let mut map = serde_json::Map::new();
            map.insert(
                "ev-wf".into(),
                json!({"id": "ev-wf", "name": "ev-wf", "displayName": "ev-wf", "type": "DAG", "phase": phase, "startedAt": "2026-01-01T00:00:00Z"}),
            );
            for i in 0..(n % 8) {
                map.insert(
                    format!("ev-wf-{i}"),
                    json!({"id": format!("ev-wf-{i}"), "name": format!("ev-wf.task-{i}"), "displayName": format!("task-{i}"), "type": "Pod", "phase": phase, "boundaryID": "ev-wf", "startedAt": "2026-01-01T00:00:01Z"}),
                );
            }
            status["nodes"] = Value::Object(map);
        }
        None => status["offloadNodeStatusVersion"] = json!("fnv:1"),
    }
    if matches!(phase, "Succeeded" | "Failed" | "Error") {
        status["finishedAt"] = json!("2026-01-01T00:02:00Z");
    }
    json!({
        "type": change,
        "object": {
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
            "metadata": {"name": "ev-wf", "namespace": "fuzz", "uid": UID, "creationTimestamp": "2026-01-01T00:00:00Z",
                         "labels": {"workflows.argoproj.io/workflow-archiving-status": "Archived"}},
            "status": status,
        },
    })
}

fuzz_target!(|lines: Vec<Line>| {
    if lines.len() > 32 {
        return;
    }
    let mut text = Vec::new();
    let mut seen = false;
    for (i, line) in lines.iter().enumerate() {
        let value = match line {
            Line::Event(ev) => event(i, ev),
            Line::Workflow { phase, nodes } => {
                let change = if seen { "MODIFIED" } else { "ADDED" };
                seen = true;
                workflow(PHASES[usize::from(*phase) % PHASES.len()], *nodes, change)
            }
            Line::DeleteWorkflow => workflow("Succeeded", Some(1), "DELETED"),
        };
        text.push(serde_json::to_vec(&value).expect("JSON"));
    }
    let lines: Vec<&[u8]> = text.iter().map(Vec::as_slice).collect();
    kfp_event_bridge_fuzz::check(&lines);
});
