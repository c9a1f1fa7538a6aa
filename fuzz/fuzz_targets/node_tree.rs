//! Structure-aware: an arbitrary node tree (parents, types, templates, KFP v1/v2 labels) goes
//! through an arbitrary sequence of phases, one watch line per step (the workflow's phase, a
//! retry, a node's phase and message, a deletion), and the derivation's invariants hold
//! over the whole sequence — including dangling parents, cycles and phases going backwards.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

const PHASES: [&str; 8] = [
    "Pending",
    "Running",
    "Succeeded",
    "Failed",
    "Error",
    "Skipped",
    "Omitted",
    "",
];
const TYPES: [&str; 7] = [
    "Pod",
    "DAG",
    "Retry",
    "Skipped",
    "Steps",
    "StepGroup",
    "Suspend",
];
const TEMPLATES: [&str; 6] = [
    "system-container-executor",
    "system-container-impl",
    "system-dag-driver",
    "retry-system-container-executor",
    "root",
    "echo",
];

#[derive(Arbitrary, Debug)]
struct Node {
    parent: u8,
    kind: u8,
    template: u8,
}

#[derive(Arbitrary, Debug)]
enum Step {
    Workflow {
        phase: u8,
    },
    Node {
        node: u8,
        phase: u8,
        message: bool,
        exit_code: Option<u8>,
    },
    Retry,
    Delete,
}

#[derive(Arbitrary, Debug)]
struct Run {
    kfp_v2: bool,
    nodes: Vec<Node>,
    steps: Vec<Step>,
}

fn object(run: &Run, wf_phase: &str, nodes: &[(String, Option<u8>, bool)]) -> Value {
    let name = "fuzz-wf";
    let mut status_nodes = serde_json::Map::new();
    for (i, spec) in run.nodes.iter().take(16).enumerate() {
        let id = format!("{name}-{i}");
        let children: Vec<String> = run
            .nodes
            .iter()
            .take(16)
            .enumerate()
            .filter(|(_, n)| usize::from(n.parent) % 17 == i)
            .map(|(j, _)| format!("{name}-{j}"))
            .collect();
        let (phase, exit, message) = nodes.get(i).cloned().unwrap_or_default();
        let mut node = json!({
            "id": id,
            "name": format!("{name}.n{i}"),
            "displayName": format!("n{i}"),
            "type": TYPES[usize::from(spec.kind) % TYPES.len()],
            "templateName": TEMPLATES[usize::from(spec.template) % TEMPLATES.len()],
            "phase": phase,
            "startedAt": "2026-01-01T00:00:00Z",
            "children": children,
        });
        if let Some(code) = exit {
            node["outputs"] = json!({"exitCode": code.to_string()});
            node["finishedAt"] = json!("2026-01-01T00:01:00Z");
        }
        if message {
            node["message"] = json!("OOMKilled (exit code 137)");
        }
        status_nodes.insert(id, node);
    }
    let mut labels = serde_json::Map::new();
    if run.kfp_v2 {
        labels.insert("pipelines.kubeflow.org/v2_component".into(), json!("true"));
    }
    labels.insert(
        "pipeline/runid".into(),
        json!("5f0c7a3e-0000-4000-8000-000000000001"),
    );
    json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "name": name, "namespace": "fuzz", "uid": "00000000-0000-4000-8000-00000000f022",
            "resourceVersion": "1", "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": labels,
        },
        "status": {
            "phase": wf_phase, "startedAt": "2026-01-01T00:00:00Z",
            "finishedAt": if matches!(wf_phase, "Succeeded" | "Failed" | "Error") { json!("2026-01-01T00:02:00Z") } else { Value::Null },
            "nodes": status_nodes,
        },
    })
}

fuzz_target!(|run: Run| {
    if run.nodes.len() > 16 || run.steps.len() > 24 {
        return;
    }
    let mut wf_phase = "Pending";
    let mut nodes: Vec<(String, Option<u8>, bool)> =
        vec![("Pending".into(), None, false); run.nodes.len()];
    let mut lines = Vec::new();
    let mut change = "ADDED";
    for step in &run.steps {
        match step {
            Step::Workflow { phase } => wf_phase = PHASES[usize::from(*phase) % PHASES.len()],
            Step::Node {
                node,
                phase,
                message,
                exit_code,
            } => {
                if let Some(n) = nodes.get_mut(usize::from(*node) % run.nodes.len().max(1)) {
                    *n = (
                        PHASES[usize::from(*phase) % PHASES.len()].into(),
                        *exit_code,
                        *message,
                    );
                }
            }
            // A retry (`argo retry`, KFP's retry): the ended run runs again.
            Step::Retry => wf_phase = "Running",
            Step::Delete => change = "DELETED",
        }
        let line = json!({"type": change, "object": object(&run, wf_phase, &nodes)});
        lines.push(serde_json::to_vec(&line).expect("json"));
        if change == "DELETED" {
            break;
        }
        change = "MODIFIED";
    }
    let lines: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
    kfp_event_bridge_fuzz::check(&lines);
});
