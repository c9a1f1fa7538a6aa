//! Status → facts. The Workflow status is the truth (Argo's own Events are best effort: they are
//! aggregated, expire and say nothing about pod lifecycle problems), so every observation of a
//! Workflow is compared with what has already been derived, and only new facts come out — missed
//! ones synthesized with their cluster timestamps, in causal order. Kubernetes Events are merged
//! in: they produce facts only where the status cannot (workflow gone, nodes offloaded).
//!
//! Pure: no I/O, no clock, no randomness. The same observations give the same facts.

mod events;
pub mod lifecycle;
pub mod nodes;
pub mod run;
pub mod tasks;

use crate::model::{Fact, FactKind, Lifecycle, Mark, Origin, RunInfo, TaskInfo, node_hash};
use crate::source::objects::{Node, Workflow};
use crate::source::recording::Observed;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
pub use tasks::NodeEvents;

/// Choices that change which facts are derived.
#[derive(Debug, Clone, Default)]
pub struct DeriveConfig {
    pub node_events: NodeEvents,
    /// Skip workflows without the `pipeline/runid` label (plain Argo workflows).
    pub kfp_only: bool,
    /// Runs that finished before this moment, and Events last seen before it, are history: no
    /// facts (the live input's `--retention`; a replay has none).
    pub history_before: Option<DateTime<Utc>>,
    /// Hold the facts an Event carries unless its workflow is known to be offloaded or gone
    /// ([`Deriver::gone`]). Live, the Event watch can run ahead of the Workflow watch, and the
    /// status, richer, is expected to give the same facts; a replay reads one ordered stream.
    pub defer_event_facts: bool,
}

/// Counters a caller reports (replay's summary, the metrics endpoint).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub workflows_observed: u64,
    pub facts: u64,
    /// Facts an Event carried that the status already gave (or will give): merged, not re-sent.
    pub events_merged: u64,
    /// Events turned into facts because the status could not say (workflow gone or offloaded).
    pub events_used: u64,
    /// Events from other components or about other objects.
    pub events_ignored: u64,
    /// workflow-controller Events whose workflow or node could not be identified.
    pub events_unattributed: u64,
    /// workflow-controller reasons that are no fact (e.g. `ArtifactGCFailed`, `WorkflowTimedOut`).
    pub events_unmapped: u64,
    pub workflows_skipped_not_kfp: u64,
    /// Observations whose nodes Argo had offloaded to its database.
    pub offloaded_observations: u64,
    /// Workflows seen with their nodes offloaded.
    pub offloaded_workflows: u64,
    /// Observations whose `compressedNodes` could not be decoded.
    pub node_decode_errors: u64,
    /// Observations of runs that finished before the retention window, or of finished runs whose
    /// facts are all done.
    pub history_skipped: u64,
}

/// Event facts held per run at most, while the status is expected to give them.
const HELD_PER_RUN: usize = 64;

/// What has been derived for one workflow.
#[derive(Default)]
struct RunState {
    /// Per node hash, the slots already derived (or done according to the checkpoint).
    done: HashMap<u64, u16>,
    /// Every fact of this finished run is done: later observations derive nothing.
    finished: bool,
    /// Facts Kubernetes Events carried that the status should give too; published if the
    /// workflow disappears before its status does ([`Deriver::gone`]).
    held: Vec<Fact>,
    /// The workflow is known to be gone: its Events speak for it at once.
    gone: bool,
    /// The latest status had node information the derivation could use.
    nodes_visible: bool,
    /// The offloaded node status has been reported once (it is reported once per workflow).
    offload_reported: bool,
    /// Pods last seen Pending, by node hash, with their creation time: when one is seen past
    /// Pending, its pending time is known ([`Deriver::take_pod_starts`]).
    pending_pods: HashMap<u64, DateTime<Utc>>,
    run: Option<Arc<RunInfo>>,
}

/// A task's pod seen Pending, then past Pending: it was created at `created` and is running by
/// the time of the observation that showed it (the caller knows that time; derivation has no clock).
#[derive(Debug, Clone)]
pub struct PodStart {
    pub run: Arc<RunInfo>,
    pub created: DateTime<Utc>,
}

/// Logs a notice from [`Deriver::take_notices`] at its level; `line`: the recording line it
/// came from, for a replay.
pub fn log_notice(level: tracing::Level, notice: &str, line: Option<u64>) {
    match (level == tracing::Level::WARN, line) {
        (true, Some(line)) => tracing::warn!(line, "{notice}"),
        (true, None) => tracing::warn!("{notice}"),
        (false, Some(line)) => tracing::debug!(line, "{notice}"),
        (false, None) => tracing::debug!("{notice}"),
    }
}

/// Derives facts from a sequence of observations, remembering what it already derived.
pub struct Deriver {
    config: DeriveConfig,
    runs: HashMap<String, RunState>,
    stats: Stats,
    /// Problems worth one log line each, with their level, drained by the caller.
    notices: Vec<(tracing::Level, String)>,
    /// An offloaded workflow has been reported at warning level (later ones at debug: with
    /// node status offloading on, every large workflow is one, and the counter has the number).
    offload_warned: bool,
    pod_starts: Vec<PodStart>,
}

impl Deriver {
    pub fn new(config: DeriveConfig) -> Self {
        Self {
            config,
            runs: HashMap::new(),
            stats: Stats::default(),
            notices: Vec::new(),
            offload_warned: false,
            pod_starts: Vec::new(),
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Takes the pods seen leaving Pending since the last call.
    pub fn take_pod_starts(&mut self) -> Vec<PodStart> {
        std::mem::take(&mut self.pod_starts)
    }

    /// Takes the notices gathered since the last call (decode problems, offloaded workflows).
    pub fn take_notices(&mut self) -> Vec<(tracing::Level, String)> {
        std::mem::take(&mut self.notices)
    }

    /// Marks facts as already delivered (from a checkpoint), so they are never derived again.
    pub fn mark_done(&mut self, workflow_uid: &str, mark: Mark) {
        let state = self.runs.entry(workflow_uid.to_owned()).or_default();
        *state.done.entry(mark.node).or_default() |= mark.slots;
    }

    /// Records that every fact of a finished run is done: its state shrinks to the uid, and
    /// later observations of it (labels a persistence agent adds, late Events) derive nothing.
    pub fn finish(&mut self, workflow_uid: &str) {
        let state = self.runs.entry(workflow_uid.to_owned()).or_default();
        *state = RunState {
            finished: true,
            ..RunState::default()
        };
    }

    /// Forgets a workflow entirely (deleted, and past the retention window).
    pub fn forget(&mut self, workflow_uid: &str) {
        self.runs.remove(workflow_uid);
    }

    /// Workflows whose state is more than a tombstone (not finished, or finished with marks).
    pub fn open_runs(&self) -> usize {
        self.runs.values().filter(|s| !s.finished).count()
    }

    /// Workflows with held Event facts.
    pub fn holding(&self) -> Vec<String> {
        self.runs
            .iter()
            .filter(|(_, s)| !s.held.is_empty())
            .map(|(uid, _)| uid.clone())
            .collect()
    }

    /// Workflows the deriver holds state for.
    pub fn tracked(&self) -> usize {
        self.runs.len()
    }

    /// Moves the history horizon (see [`DeriveConfig::history_before`]).
    pub fn set_history_before(&mut self, at: Option<DateTime<Utc>>) {
        self.config.history_before = at;
    }

    /// The workflow disappeared without its final status being observed (deleted while the
    /// watch was re-listing): from now on its Events speak for it, and the facts they carried
    /// while the status was expected to give them come out now.
    pub fn gone(&mut self, workflow_uid: &str) -> Vec<Fact> {
        let Some(state) = self.runs.get_mut(workflow_uid) else {
            return Vec::new();
        };
        if state.finished {
            return Vec::new();
        }
        state.nodes_visible = false;
        state.gone = true;
        let held = std::mem::take(&mut state.held);
        let facts = emit_new(state, held);
        // Run facts from Events are no longer merged into a status that will not come.
        if let Some(run) = &mut state.run
            && !run.finished()
        {
            state.run = None;
        }
        self.stats.facts += facts.len() as u64;
        facts
    }

    /// The new facts one watch event brings, in causal order.
    pub fn observe(&mut self, observed: &Observed) -> Vec<Fact> {
        let facts = match observed {
            Observed::Workflow(_, wf) => self.workflow(wf),
            Observed::Event(_, ev) => self.event(ev),
        };
        self.stats.facts += facts.len() as u64;
        facts
    }

    fn workflow(&mut self, wf: &Workflow) -> Vec<Fact> {
        self.stats.workflows_observed += 1;
        if wf.metadata.uid.is_empty() {
            self.notices.push((
                tracing::Level::WARN,
                format!(
                    "workflow {:?} has no metadata.uid; skipped",
                    wf.metadata.name
                ),
            ));
            return Vec::new();
        }
        if self.config.kfp_only && !wf.metadata.labels.contains_key(run::LABEL_RUN_ID) {
            self.stats.workflows_skipped_not_kfp += 1;
            // Remembered (as finished: nothing to derive), so its Events are ignored too.
            self.runs
                .entry(wf.metadata.uid.clone())
                .or_default()
                .finished = true;
            return Vec::new();
        }
        if self.runs.get(&wf.metadata.uid).is_some_and(|s| s.finished) {
            self.stats.history_skipped += 1;
            return Vec::new();
        }
        let run = Arc::new(run::run_info(wf));
        if run.finished() && self.is_history(run.finished_at) {
            self.stats.history_skipped += 1;
            return Vec::new();
        }
        let status = wf.status.as_ref();
        let mut nodes_visible = status.is_some_and(|s| !s.nodes.is_empty());
        let decoded;
        let nodes = match status {
            Some(s) if s.nodes.is_empty() && !s.compressed_nodes.is_empty() => {
                match nodes::decompress(&s.compressed_nodes) {
                    Ok(n) => {
                        nodes_visible = true;
                        decoded = normalized(&n);
                        Some(&decoded)
                    }
                    Err(err) => {
                        self.stats.node_decode_errors += 1;
                        self.notices.push((
                            tracing::Level::WARN,
                            format!(
                                "workflow {}/{}: {err}; deriving run-level facts only",
                                run.namespace, run.workflow
                            ),
                        ));
                        None
                    }
                }
            }
            Some(s) if s.nodes.iter().any(|(id, n)| n.id != *id) => {
                decoded = normalized(&s.nodes);
                Some(&decoded)
            }
            Some(s) => Some(&s.nodes),
            None => None,
        };
        let state = self.runs.entry(run.uid.clone()).or_default();
        if run.nodes_offloaded && !nodes_visible {
            self.stats.offloaded_observations += 1;
            if !std::mem::replace(&mut state.offload_reported, true) {
                self.stats.offloaded_workflows += 1;
                let first = !std::mem::replace(&mut self.offload_warned, true);
                let level = if first {
                    tracing::Level::WARN
                } else {
                    tracing::Level::DEBUG
                };
                let more = if first {
                    " (further offloaded workflows are logged at debug level and counted in kfp_event_bridge_offloaded_workflows_total)"
                } else {
                    ""
                };
                self.notices.push((
                    level,
                    format!(
                        "workflow {}/{}: node status offloaded to Argo's database; run-level facts only, task facts from Kubernetes Events{more}",
                        run.namespace, run.workflow
                    ),
                ));
            }
        }
        let mut candidates = run_facts(&run);
        if run.nodes_offloaded && !nodes_visible {
            // Held Event facts are all there is for an offloaded workflow.
            candidates.append(&mut state.held);
        }
        if let Some(nodes) = nodes {
            let format_v1 = wf
                .metadata
                .annotations
                .get("workflows.argoproj.io/pod-name-format")
                .is_some_and(|f| f == "v1");
            for attempt in tasks::attempts(nodes, &wf.spec.templates, self.config.node_events) {
                task_facts(&run, &attempt, format_v1, &mut candidates);
                if let Some(pod) = attempt.pod {
                    let node = node_hash(&pod.id);
                    match pod.phase.as_str() {
                        "Pending" => {
                            if let Some(created) = run::timestamp(pod.started_at.as_deref()) {
                                state.pending_pods.entry(node).or_insert(created);
                            }
                        }
                        "Running" | "Succeeded" | "Failed" | "Error" => {
                            if let Some(created) = state.pending_pods.remove(&node) {
                                self.pod_starts.push(PodStart {
                                    run: Arc::clone(&run),
                                    created,
                                });
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        state.nodes_visible = nodes_visible;
        if run.finished() {
            state.held.clear();
            state.pending_pods.clear();
        }
        state.run = Some(run);
        emit_new(state, candidates)
    }

    fn is_history(&self, at: Option<DateTime<Utc>>) -> bool {
        matches!((self.config.history_before, at), (Some(before), Some(at)) if at < before)
    }
}

/// Keeps the candidates not derived before, in causal order, and remembers them.
fn emit_new(state: &mut RunState, mut candidates: Vec<Fact>) -> Vec<Fact> {
    // Inserting while filtering also drops a fact proposed twice in one observation (a node that
    // a malformed tree reaches by two paths).
    candidates.retain(|f| {
        let mark = f.mark();
        let slots = state.done.entry(mark.node).or_default();
        let new = *slots & mark.slots == 0;
        *slots |= mark.slots;
        new
    });
    sort_causally(&mut candidates);
    candidates
}

/// Run start first, run end last, and in between by time, an attempt's start before its warnings
/// before its end even when clocks disagree.
fn sort_causally(facts: &mut [Fact]) {
    let started: HashMap<String, Option<DateTime<Utc>>> = facts
        .iter()
        .filter(|f| f.kind == FactKind::TaskStarted)
        .filter_map(|f| f.task.as_ref().map(|t| (t.node_id.clone(), f.time)))
        .collect();
    facts.sort_by_cached_key(|f| {
        let group = match f.kind {
            FactKind::RunStarted => 0,
            FactKind::RunSucceeded | FactKind::RunFailed => 2,
            _ => 1,
        };
        let node = f
            .task
            .as_ref()
            .map(|t| t.node_id.clone())
            .unwrap_or_default();
        let floor = started.get(&node).copied().flatten();
        (group, f.time.max(floor), f.kind.causal_rank(), node)
    });
}

fn run_facts(run: &Arc<RunInfo>) -> Vec<Fact> {
    let fact = |kind, time, reason: &str, message: String| Fact {
        kind,
        run: Arc::clone(run),
        task: None,
        lifecycle: None,
        time,
        reason: reason.to_owned(),
        message,
        origin: Origin::Status,
    };
    let started = run.started_at;
    let finished = run.finished_at.or(started);
    let mut out = Vec::new();
    if matches!(
        run.phase.as_str(),
        "Running" | "Succeeded" | "Failed" | "Error"
    ) {
        out.push(fact(
            FactKind::RunStarted,
            started,
            "WorkflowRunning",
            "Workflow Running".into(),
        ));
    }
    match run.phase.as_str() {
        "Succeeded" => out.push(fact(
            FactKind::RunSucceeded,
            finished,
            "WorkflowSucceeded",
            "Workflow completed".into(),
        )),
        "Failed" | "Error" => out.push(fact(
            FactKind::RunFailed,
            finished,
            "WorkflowFailed",
            run.message.clone(),
        )),
        _ => {}
    }
    out
}

/// The facts an attempt's current state implies (before de-duplication).
fn task_facts(
    run: &Arc<RunInfo>,
    attempt: &tasks::Attempt<'_>,
    pod_format_v1: bool,
    out: &mut Vec<Fact>,
) {
    let node = attempt.driving;
    let warning = attempt
        .warning_pod
        .filter(|p| p.phase == "Pending")
        .and_then(|p| lifecycle::classify(&p.message).map(|l| (p, l)));
    let terminal = match node.phase.as_str() {
        "Succeeded" => Some(FactKind::TaskSucceeded),
        "Failed" | "Error" => Some(FactKind::TaskFailed),
        "Skipped" | "Omitted" => Some(FactKind::TaskSkipped),
        _ => None,
    };
    let started = node.phase == "Running"
        || warning.is_some()
        || matches!(terminal, Some(k) if k != FactKind::TaskSkipped);
    if !started && terminal.is_none() {
        return;
    }
    let info = task_info(run, attempt, pod_format_v1);
    let fact = |kind, time, reason: String, message: String, lifecycle: Option<Lifecycle>| Fact {
        kind,
        run: Arc::clone(run),
        task: Some(info.clone()),
        lifecycle,
        time,
        reason,
        message,
        origin: Origin::Status,
    };
    let phase_message = |phase: &str| match node.message.as_str() {
        "" => format!("{phase} node {}", node.name),
        message => format!("{phase} node {}: {message}", node.name),
    };
    if started {
        let message = format!("Running node {}", node.name);
        out.push(fact(
            FactKind::TaskStarted,
            info.started_at,
            "WorkflowNodeRunning".into(),
            message,
            None,
        ));
    }
    if let Some((pod, lifecycle)) = warning {
        let time = run::timestamp(pod.started_at.as_deref()).or(info.started_at);
        let message = format!("Pending node {}: {}", pod.name, lifecycle.message);
        out.push(fact(
            FactKind::TaskWarning,
            time,
            "WorkflowNodePending".into(),
            message,
            Some(lifecycle),
        ));
    }
    if let Some(kind) = terminal {
        let time = info.finished_at.or(info.started_at).or(run.finished_at);
        out.push(fact(
            kind,
            time,
            format!("WorkflowNode{}", node.phase),
            phase_message(&node.phase),
            None,
        ));
    }
}

fn task_info(run: &RunInfo, attempt: &tasks::Attempt<'_>, pod_format_v1: bool) -> TaskInfo {
    let node = attempt.driving;
    let pod = attempt.pod;
    let exit_code = pod
        .or(Some(node))
        .and_then(|n| n.outputs.as_ref())
        .and_then(|o| match &o.exit_code {
            Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
            Some(serde_json::Value::Number(n)) => n.as_i64(),
            _ => None,
        });
    // The pod's message says more (`main: OOMKilled (exit code 137)`) than the DAG's
    // (`child 'x' failed`).
    let message = pod
        .map(|p| p.message.as_str())
        .filter(|m| !m.is_empty())
        .unwrap_or(&node.message);
    let identity = attempt.identity;
    TaskInfo {
        node_id: identity.id.clone(),
        node_name: identity.name.clone(),
        node_type: identity.node_type.clone(),
        task_name: attempt.task_name.clone(),
        template: node.template().to_owned(),
        phase: node.phase.clone(),
        message: message.to_owned(),
        started_at: run::timestamp(node.started_at.as_deref()),
        finished_at: run::timestamp(node.finished_at.as_deref()),
        exit_code,
        pod_name: pod
            .filter(|p| !matches!(p.phase.as_str(), "Skipped" | "Omitted"))
            .map(|p| nodes::pod_name(&run.workflow, p, pod_format_v1))
            .unwrap_or_default(),
        attempt: attempt.attempt,
        cached: attempt.cached,
    }
}

/// The node map with every node's `id` equal to its key (Argo keeps them equal; bad input may not).
fn normalized(nodes: &BTreeMap<String, Node>) -> BTreeMap<String, Node> {
    nodes
        .iter()
        .map(|(id, node)| {
            let mut node = node.clone();
            node.id.clone_from(id);
            (id.clone(), node)
        })
        .collect()
}
