//! Kubernetes Events from Argo's workflow-controller, merged with status-derived facts.
//!
//! The same logical event arrives as a new Event, as a `count` bump of that Event, as an
//! aggregate `(combined from similar events): …` without annotations (client-go aggregates after
//! 10 similar events in 10 minutes), and again after a re-list. All of them map to the fact key
//! (workflow uid, node id, slot), so duplicates merge. While the Workflow's node status is
//! visible, Events only confirm what the status says (they are emitted after the status is
//! persisted, workflow-level ones even before it); they become facts only when the workflow is
//! gone or its nodes are offloaded to Argo's database.

use super::tasks::{NodeEvents, split_attempt};
use super::{Deriver, HELD_PER_RUN, emit_new, nodes, run::timestamp};
use crate::model::{Fact, FactKind, Origin, RunInfo, TaskInfo};
use crate::source::objects::ClusterEvent;
use chrono::{DateTime, Utc};
use std::sync::Arc;

const AGGREGATE_PREFIX: &str = "(combined from similar events): ";
/// At most this many failed tasks are named in an Event-only `run.failed`.
const EVENT_FAILURES: usize = 8;
const NODE_NAME: &str = "workflows.argoproj.io/node-name";
const NODE_TYPE: &str = "workflows.argoproj.io/node-type";
const NODE_ID: &str = "workflows.argoproj.io/node-id";
const NODE_START: &str = "workflows.argoproj.io/node-start-time";
const WORKFLOW_NAME: &str = "workflows.argoproj.io/workflow-name";
const WORKFLOW_UID: &str = "workflows.argoproj.io/workflow-uid";

/// What an Event says happened to which node.
struct NodeRef {
    id: String,
    name: String,
    node_type: String,
    task_name: String,
    attempt: u32,
    started_at: Option<DateTime<Utc>>,
}

impl Deriver {
    pub(super) fn event(&mut self, ev: &ClusterEvent) -> Vec<Fact> {
        if ev.component() != "workflow-controller" {
            self.stats.events_ignored += 1;
            return Vec::new();
        }
        let obj = &ev.involved_object;
        // With `nodeEvents.sendAsPod` (Argo >= 3.2) node events of Pod nodes concern the Pod and
        // name their workflow in annotations.
        let (workflow, uid) = match obj.kind.as_str() {
            "Workflow" => (obj.name.clone(), obj.uid.clone()),
            "Pod" => (
                ev.metadata
                    .annotations
                    .get(WORKFLOW_NAME)
                    .cloned()
                    .unwrap_or_default(),
                ev.metadata
                    .annotations
                    .get(WORKFLOW_UID)
                    .cloned()
                    .unwrap_or_default(),
            ),
            _ => {
                self.stats.events_ignored += 1;
                return Vec::new();
            }
        };
        if uid.is_empty() || workflow.is_empty() {
            self.stats.events_unattributed += 1;
            return Vec::new();
        }
        let message = ev
            .message
            .strip_prefix(AGGREGATE_PREFIX)
            .unwrap_or(&ev.message);
        let Some(kind) = fact_kind(&ev.reason) else {
            self.stats.events_unmapped += 1;
            return Vec::new();
        };
        if self.is_history(timestamp(ev.last_seen())) {
            self.stats.history_skipped += 1;
            return Vec::new();
        }
        let state = self.runs.entry(uid.clone()).or_default();
        // A tombstoned run, or an Event of an earlier attempt of a retried one (last seen by the
        // time that attempt ended).
        let earlier = state
            .attempt
            .since
            .is_some_and(|since| timestamp(ev.last_seen()).is_some_and(|t| t.timestamp() <= since));
        if state.finished || earlier {
            self.stats.history_skipped += 1;
            return Vec::new();
        }
        let merged = state.nodes_visible || (kind.is_run() && state.run.is_some());
        let namespace = if obj.namespace.is_empty() {
            &ev.metadata.namespace
        } else {
            &obj.namespace
        };
        let run = state.run.clone().unwrap_or_else(|| {
            Arc::new(RunInfo {
                uid: uid.clone(),
                namespace: namespace.clone(),
                workflow: workflow.clone(),
                attempt: state.attempt,
                ..RunInfo::default()
            })
        });
        let time = timestamp(ev.last_seen());
        let fact = |kind, task: Option<TaskInfo>, time, reason: &str, message: &str| Fact {
            kind,
            run: Arc::clone(&run),
            task,
            lifecycle: None,
            time,
            reason: reason.to_owned(),
            message: message.to_owned(),
            origin: Origin::Event,
        };
        // A run starts before anything else happens in it; an Event-only run learns its start
        // from `WorkflowRunning` or not at all (no time then).
        let mut candidates = Vec::new();
        if kind != FactKind::RunStarted {
            candidates.push(fact(
                FactKind::RunStarted,
                None,
                None,
                "WorkflowRunning",
                "Workflow Running",
            ));
        }
        if kind.is_run() {
            // A DAG workflow fails without a message (its root node has none): name the tasks
            // its Events said failed, as the status derivation does.
            let named;
            let message = if kind == FactKind::RunFailed && message.is_empty() {
                named = state.event_failures.join("; ");
                named.as_str()
            } else {
                message
            };
            candidates.push(fact(kind, None, time, &ev.reason, message));
        } else {
            let Some(node) = node_ref(ev, &workflow, message, self.config.node_events) else {
                self.stats.events_unattributed += 1;
                return Vec::new();
            };
            let phase = ev.reason.trim_start_matches("WorkflowNode");
            let task = TaskInfo {
                node_id: node.id,
                node_name: node.name.clone(),
                node_type: node.node_type,
                task_name: node.task_name,
                phase: phase.to_owned(),
                started_at: node.started_at,
                finished_at: kind.is_terminal().then_some(time).flatten(),
                attempt: node.attempt,
                ..TaskInfo::default()
            };
            if kind != FactKind::TaskSkipped {
                let started = format!("Running node {}", node.name);
                let at = node.started_at.or(time);
                candidates.push(fact(
                    FactKind::TaskStarted,
                    Some(task.clone()),
                    at,
                    "WorkflowNodeRunning",
                    &started,
                ));
            }
            if kind == FactKind::TaskFailed && state.event_failures.len() < EVENT_FAILURES {
                // `Failed node <name>: <node message>`
                let why = message
                    .strip_prefix(phase)
                    .and_then(|m| m.strip_prefix(" node "))
                    .and_then(|m| m.strip_prefix(node.name.as_str()))
                    .and_then(|m| m.strip_prefix(": "))
                    .unwrap_or_default();
                let failed = super::failed_task(&task.task_name, why);
                if !state.event_failures.contains(&failed) {
                    state.event_failures.push(failed);
                }
            }
            if kind != FactKind::TaskStarted {
                candidates.push(fact(kind, Some(task), time, &ev.reason, message));
            }
        }
        let unconfirmed = self.config.defer_event_facts
            && !state.gone
            && !state.run.as_ref().is_some_and(|r| r.nodes_offloaded);
        if merged || unconfirmed {
            // The status gives (or gave, or will give) these; hold them in case the workflow
            // disappears first.
            self.stats.events_merged += 1;
            if !state.run.as_ref().is_some_and(|r| r.finished()) {
                let room = HELD_PER_RUN.saturating_sub(state.held.len());
                state.held.extend(candidates.into_iter().take(room));
            }
            return Vec::new();
        }
        self.stats.events_used += 1;
        state.event_marks = true;
        emit_new(state, candidates)
    }
}

fn fact_kind(reason: &str) -> Option<FactKind> {
    Some(match reason {
        "WorkflowRunning" => FactKind::RunStarted,
        "WorkflowSucceeded" => FactKind::RunSucceeded,
        "WorkflowFailed" => FactKind::RunFailed,
        "WorkflowNodeRunning" => FactKind::TaskStarted,
        "WorkflowNodeSucceeded" => FactKind::TaskSucceeded,
        "WorkflowNodeFailed" | "WorkflowNodeError" => FactKind::TaskFailed,
        "WorkflowNodeSkipped" | "WorkflowNodeOmitted" => FactKind::TaskSkipped,
        _ => return None,
    })
}

/// Identifies the task attempt a node event is about, the way the status derivation would: the
/// same node id for the same attempt, so the two merge.
fn node_ref(ev: &ClusterEvent, workflow: &str, message: &str, mode: NodeEvents) -> Option<NodeRef> {
    let annotations = &ev.metadata.annotations;
    // Argo's message is `<Phase> node <name>[: <node message>]`; read the name from it only
    // when the annotation is missing (controllers < 2.8, aggregated events).
    let name = match annotations.get(NODE_NAME) {
        Some(name) => name.clone(),
        None => {
            let phase = ev.reason.trim_start_matches("WorkflowNode");
            let rest = message.strip_prefix(phase)?.strip_prefix(" node ")?;
            rest.split(": ").next()?.to_owned()
        }
    };
    let node_type = annotations.get(NODE_TYPE).cloned().unwrap_or_default();
    let started_at = annotations
        .get(NODE_START)
        .and_then(|nanos| nanos.parse::<i64>().ok())
        .map(DateTime::from_timestamp_nanos);
    let last = name.rsplit('.').next().unwrap_or(&name);
    let (last_base, attempt) = split_attempt(last);
    if mode == NodeEvents::All {
        let id = annotations
            .get(NODE_ID)
            .cloned()
            .unwrap_or_else(|| nodes::node_id(workflow, &name));
        let task_name = last_base.to_owned();
        return Some(NodeRef {
            id,
            name,
            node_type,
            task_name,
            attempt: attempt.unwrap_or(0),
            started_at,
        });
    }
    // Without the status only Pod nodes can be told to be tasks; an aggregate has no type, but a
    // KFP v2 executor pod is recognisable by name.
    let v2_executor = last_base == "executor" && name.contains('.');
    if !(node_type == "Pod" || v2_executor) || last_base.ends_with("-driver") {
        return None;
    }
    if v2_executor {
        let anchor = &name[..name.len() - last.len() - 1];
        let (task, anchor_attempt) = split_attempt(anchor.rsplit('.').next().unwrap_or(anchor));
        let task_name = task.to_owned();
        return Some(match attempt {
            // `executor(N)`, N > 0: a retried pod is its own attempt; the first attempt is named
            // by the executor DAG, as in the status derivation.
            Some(n) if n > 0 => NodeRef {
                id: annotations
                    .get(NODE_ID)
                    .cloned()
                    .unwrap_or_else(|| nodes::node_id(workflow, &name)),
                name,
                node_type,
                task_name,
                attempt: n,
                started_at,
            },
            // A single pod folds into its executor DAG, which is the task.
            _ => NodeRef {
                id: nodes::node_id(workflow, anchor),
                name: anchor.to_owned(),
                node_type: "DAG".into(),
                task_name,
                attempt: attempt.or(anchor_attempt).unwrap_or(0),
                started_at,
            },
        });
    }
    let id = annotations
        .get(NODE_ID)
        .cloned()
        .unwrap_or_else(|| nodes::node_id(workflow, &name));
    let task_name = last_base.to_owned();
    Some(NodeRef {
        id,
        name,
        node_type,
        task_name,
        attempt: attempt.unwrap_or(0),
        started_at,
    })
}
