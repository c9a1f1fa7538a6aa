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

use crate::model::{
    Fact, FactKind, FailureKind, Lifecycle, Mark, Origin, Outcome, RunAttempt, RunInfo, Slot,
    TaskInfo,
};
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
    /// The run attempt this state is about; a retry starts the next one ([`Deriver::workflow`]).
    attempt: RunAttempt,
    /// The current attempt's end, as the status showed it. Kept in the tombstone: a run that
    /// shows a new attempt after it wakes up.
    ended: Option<End>,
    /// KFP v2 task names as the UI shows them, where they differ from the keys (read once).
    display_names: Option<Arc<DisplayNames>>,
    /// Facts from Kubernetes Events went into `done` (the workflow not seen yet, gone or
    /// offloaded): its marks then say nothing about what the status showed, nor about a retry.
    event_marks: bool,
    /// Tasks Kubernetes Events said failed (`<task> failed: <message>`, a few at most): what an
    /// Event-only `run.failed` without a message names.
    event_failures: Vec<String>,
}

/// KFP v2 UI task names by (DAG component, task key) ([`run::v2_display_names`]).
type DisplayNames = BTreeMap<(String, String), String>;

/// How a run attempt ended: its `status.finishedAt` (unix seconds) and phase, as far as known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct End {
    at: Option<i64>,
    outcome: Option<Outcome>,
    /// The `resourceVersion` of the observation that showed the end, when numeric: an earlier
    /// object (a recording replayed again) is history, not a retry.
    version: Option<u64>,
}

impl RunState {
    /// The state of the attempt after this one: nothing of it derived yet.
    fn next_attempt(&self, since: Option<i64>, previous: Option<Outcome>) -> Self {
        RunState {
            attempt: RunAttempt {
                retries: self.attempt.retries.saturating_add(1),
                since,
                previous,
                marked: false,
            },
            offload_reported: self.offload_reported,
            ..RunState::default()
        }
    }

    /// The slots of this attempt already derived for the task `attempt` (by its identity node).
    fn done_slots(&self, attempt: &tasks::Attempt<'_>) -> u16 {
        self.done
            .get(&self.attempt.node_hash(&attempt.identity.id))
            .copied()
            .unwrap_or(0)
    }

    /// Whether an observation with this phase and end shows a new attempt after an ended one:
    /// only a retry takes a finished Workflow back to a phase before the end (Argo's controller
    /// never does, `markWorkflowPhase`: "workflow is already fulfilled"; a retry sets the phase to
    /// `""` (Argo) or `Running` (KFP)), and only a finished later attempt ends later.
    fn retried(&self, phase: &str, end: Option<i64>, version: Option<u64>) -> Option<End> {
        let ended = self.ended?;
        if matches!((ended.version, version), (Some(then), Some(now)) if now < then) {
            return None;
        }
        let again = matches!(phase, "" | "Pending" | "Running")
            || (Outcome::of_phase(phase).is_some()
                && matches!((ended.at, end), (Some(before), Some(now)) if now > before));
        again.then_some(ended)
    }
}

/// A node's moment in whole seconds (Kubernetes timestamps have no finer resolution).
fn seconds(text: Option<&str>) -> Option<i64> {
    run::timestamp(text).map(|t| t.timestamp())
}

fn terminal_phase(phase: &str) -> bool {
    matches!(
        phase,
        "Succeeded" | "Failed" | "Error" | "Skipped" | "Omitted"
    )
}

/// Whether `node` belongs to the attempt that began after `since`: a retry keeps what finished
/// before (untouched, old timestamps) and deletes or resets the rest (re-created nodes reuse
/// their ids, reset ones lose their `finishedAt`), so a node is the new attempt's when it is not
/// finished or finished after the previous attempt ended.
fn in_attempt(since: Option<i64>, node: &Node) -> bool {
    let Some(since) = since else {
        return true;
    };
    !terminal_phase(&node.phase)
        || seconds(node.finished_at.as_deref().or(node.started_at.as_deref()))
            .is_some_and(|t| t > since)
}

/// When a later attempt started: Argo's retry resets `status.startedAt` to the retry's moment
/// (`FormulateRetryWorkflow`); KFP's keeps the first one (`GenerateRetryExecution`) and the
/// status keeps no trace of when the retry came, so then the previous attempt's end (the retry
/// came after it). Both read the same in every observation of the attempt, so a fact derived
/// again after a restart carries the same time.
fn attempt_start(run: &RunInfo, since: Option<i64>) -> Option<DateTime<Utc>> {
    let after = |t: &DateTime<Utc>| since.is_none_or(|s| t.timestamp() > s);
    run.started_at
        .filter(after)
        .or_else(|| since.and_then(|s| DateTime::from_timestamp(s, 0)))
}

/// A task's pod seen Pending, then past Pending: it was created at `created` and is running by
/// the time of the observation that showed it (the caller knows that time; derivation has no clock).
#[derive(Debug, Clone)]
pub struct PodStart {
    pub run: Arc<RunInfo>,
    pub created: DateTime<Utc>,
}

/// Something the derivation could not do as usual, to be logged by whoever runs it: what
/// (`kind`), of which workflow, and the detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// `warn` for what loses facts; `debug` for the expected (every offloaded workflow after the
    /// first).
    pub level: tracing::Level,
    /// `no-uid`, `nodes-undecodable`, `nodes-offloaded`.
    pub kind: &'static str,
    pub namespace: String,
    pub workflow: String,
    /// What happened, in words (the decoding error; what is derived instead).
    pub detail: String,
}

/// Logs a notice from [`Deriver::take_notices`] at its level, with its fields; `line`: the
/// recording line it came from, for a replay.
pub fn log_notice(notice: &Notice, line: Option<u64>) {
    let Notice {
        kind,
        namespace,
        workflow,
        detail,
        ..
    } = notice;
    if notice.level == tracing::Level::WARN {
        tracing::warn!(notice = kind, namespace, workflow, line, "{detail}");
    } else {
        tracing::debug!(notice = kind, namespace, workflow, line, "{detail}");
    }
}

/// Derives facts from a sequence of observations, remembering what it already derived.
pub struct Deriver {
    config: DeriveConfig,
    runs: HashMap<String, RunState>,
    stats: Stats,
    /// Problems worth one log line each, with their level, drained by the caller.
    notices: Vec<Notice>,
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
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// Marks facts as already delivered (from a checkpoint), so they are never derived again.
    pub fn mark_done(&mut self, workflow_uid: &str, mark: Mark) {
        let state = self.runs.entry(workflow_uid.to_owned()).or_default();
        *state.done.entry(mark.node).or_default() |= mark.slots;
    }

    /// Records that every fact of a finished run attempt (`retries` attempts before it) is
    /// done: its state shrinks to a tombstone, and later observations of it (labels a persistence
    /// agent adds, late Events) derive nothing — until one shows a retry. Ignored when a later
    /// attempt is under way already.
    pub fn finish(&mut self, workflow_uid: &str, retries: u32) {
        let state = self.runs.entry(workflow_uid.to_owned()).or_default();
        if state.attempt.retries > retries {
            return;
        }
        *state = RunState {
            finished: true,
            attempt: state.attempt,
            ended: state.ended,
            ..RunState::default()
        };
    }

    /// A tombstone from the checkpoint: attempt `retries` (counted from 0) ended at `at`.
    pub fn restore_finished(
        &mut self,
        workflow_uid: &str,
        retries: u32,
        at: Option<i64>,
        outcome: Option<Outcome>,
    ) {
        let state = self.runs.entry(workflow_uid.to_owned()).or_default();
        *state = RunState {
            finished: true,
            attempt: RunAttempt {
                retries,
                ..RunAttempt::default()
            },
            ended: Some(End {
                at,
                outcome,
                version: None,
            }),
            ..RunState::default()
        };
    }

    /// The attempt a checkpoint's marks belong to (call before [`Deriver::mark_done`]).
    pub fn restore_attempt(&mut self, workflow_uid: &str, attempt: RunAttempt) {
        let state = self.runs.entry(workflow_uid.to_owned()).or_default();
        if state.attempt != attempt {
            *state = RunState {
                attempt,
                ..RunState::default()
            };
        }
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
        let mut held = std::mem::take(&mut state.held);
        state.event_marks |= !held.is_empty();
        if let Some(run) = &state.run {
            for fact in &mut held {
                fact.run = Arc::clone(run);
            }
        }
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
            self.notices.push(Notice {
                level: tracing::Level::WARN,
                kind: "no-uid",
                namespace: wf.metadata.namespace.clone(),
                workflow: wf.metadata.name.clone(),
                detail: format!(
                    "workflow {:?} has no metadata.uid; skipped",
                    wf.metadata.name
                ),
            });
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
        let (phase, end) = wf.status.as_ref().map_or(("", None), |s| {
            let end = seconds(s.finished_at.as_deref().or(s.started_at.as_deref()));
            (s.phase.as_str(), end)
        });
        // Opaque to clients by contract, but etcd's revisions are numbers that only grow; used
        // only to tell an old object from a retry.
        let version = wf.metadata.resource_version.parse::<u64>().ok();
        // A finished run derives nothing more, unless the status shows it was retried.
        let mut woke = None;
        if let Some(state) = self.runs.get_mut(&wf.metadata.uid)
            && state.finished
        {
            match state.retried(phase, end, version) {
                Some(ended) => woke = Some(ended),
                None => {
                    self.stats.history_skipped += 1;
                    return Vec::new();
                }
            }
        }
        let mut run = run::run_info(wf);
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
                        self.notices.push(Notice {
                            level: tracing::Level::WARN,
                            kind: "nodes-undecodable",
                            namespace: run.namespace.clone(),
                            workflow: run.workflow.clone(),
                            detail: format!(
                                "workflow {}/{}: {err}; deriving run-level facts only",
                                run.namespace, run.workflow
                            ),
                        });
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
        let templates = &wf.spec.templates;
        let attempts = nodes.map_or_else(Vec::new, |nodes| {
            tasks::attempts(nodes, templates, self.config.node_events, &wf.metadata.name)
        });
        let state = self.runs.entry(run.uid.clone()).or_default();
        if let Some(ended) = woke.or_else(|| state.retried(phase, end, version)) {
            *state = state.next_attempt(ended.at, ended.outcome);
        } else if state.ended.is_none() && !state.event_marks && reset_tasks(state, &attempts) {
            // The attempt's end was never seen (the bridge was down, or stopped before it was
            // recorded), but a task whose end was published runs again: a retry.
            let since = unseen_end(state, &attempts, wf);
            *state = state.next_attempt(since, None);
        } else if state.ended.is_none()
            && state.attempt.retries == 0
            && !state.attempt.marked
            && !state.event_marks
            && (state.run.is_some() || !state.done.is_empty())
            && retry_marked(wf)
        {
            // The end was never seen, but the status now carries the mark only a retry writes.
            let since = unseen_end(state, &attempts, wf);
            *state = state.next_attempt(since, None);
        } else if state.ended.is_none()
            && !state.event_marks
            && restarted_after(state, &attempts, wf)
        {
            // The end was never seen, but the run's `startedAt` is later than the end of a task
            // of this attempt: Argo's retry reset it.
            let since = unseen_end(state, &attempts, wf);
            *state = state.next_attempt(since, None);
        } else if state.run.is_none() && state.done.is_empty() && retry_marked(wf) {
            // First seen already retried (or resubmitted under another name): its first attempt
            // here, and the mark says nothing about the next retry.
            state.attempt.marked = true;
        }
        if state.attempt.retries > 0 {
            run.started_at = attempt_start(&run, state.attempt.since);
        }
        run.attempt = state.attempt;
        let run = Arc::new(run);
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
                self.notices.push(Notice {
                    level,
                    kind: "nodes-offloaded",
                    namespace: run.namespace.clone(),
                    workflow: run.workflow.clone(),
                    detail: format!(
                        "workflow {}/{}: node status offloaded to Argo's database; run-level facts only, task facts from Kubernetes Events{more}",
                        run.namespace, run.workflow
                    ),
                });
            }
        }
        let mut candidates = run_facts(&run);
        if run.nodes_offloaded && !nodes_visible {
            // Held Event facts are all there is for an offloaded workflow. They go out with what
            // the status says of the run, whichever watch listed first after a restart.
            state.event_marks |= !state.held.is_empty();
            for mut fact in state.held.drain(..) {
                fact.run = Arc::clone(&run);
                candidates.push(fact);
            }
        }
        {
            // Argo writes the format on every workflow it runs since 3.2.5 (v2 the default
            // since 3.4); one without it comes from an older controller, which named pods v1
            // (the node id) — all but 3.2.0–3.2.1.
            let format_v1 = wf
                .metadata
                .annotations
                .get("workflows.argoproj.io/pod-name-format")
                .is_none_or(|f| f == "v1");
            let since = state.attempt.since;
            let names = Arc::clone(state.display_names.get_or_insert_with(|| {
                Arc::new(if run::is_kfp_v2(wf) {
                    run::v2_display_names(wf)
                } else {
                    DisplayNames::new()
                })
            }));
            for attempt in attempts.iter().filter(|a| in_attempt(since, a.driving)) {
                task_facts(&run, attempt, format_v1, &names, &mut candidates);
                if let Some(pod) = attempt.pod {
                    let node = run.attempt.node_hash(&pod.id);
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
            if run.message.is_empty() {
                name_failed_tasks(&mut candidates, &attempts, since);
            }
        }
        state.nodes_visible = nodes_visible;
        if let Some(outcome) = Outcome::of_phase(&run.phase) {
            state.held.clear();
            state.pending_pods.clear();
            state.ended = Some(End {
                at: end,
                outcome: Some(outcome),
                version,
            });
        }
        state.run = Some(run);
        emit_new(state, candidates)
    }

    fn is_history(&self, at: Option<DateTime<Utc>>) -> bool {
        matches!((self.config.history_before, at), (Some(before), Some(at)) if at < before)
    }
}

/// The mark a retry leaves on the status: the `Completed` condition set `False` — Argo's
/// controller only ever sets it `True` (`operator.go` 2831); `FormulateRetryWorkflow` (`util.go`
/// 923) and KFP's `GenerateRetryExecution` (`workflow.go` 215) set it `False` — on a workflow not
/// back at its end yet. A resubmitted workflow (label `resubmitted-from-workflow`) is created with
/// it, so there it says nothing.
fn retry_marked(wf: &Workflow) -> bool {
    let Some(status) = wf.status.as_ref() else {
        return false;
    };
    matches!(status.phase.as_str(), "" | "Pending" | "Running")
        && !wf
            .metadata
            .labels
            .contains_key("workflows.argoproj.io/resubmitted-from-workflow")
        && status
            .conditions
            .iter()
            .any(|c| c.kind == "Completed" && c.status == "False")
}

/// The end of an attempt whose end was not seen, as far as the retried status tells: at least
/// the latest finish among the tasks whose terminal fact it has and that the retry kept, at least
/// its own start (a later attempt: the end of the one before), and before Argo's retry moment
/// (the `startedAt` it resets). Nodes finished by then belong to an earlier attempt.
fn unseen_end(state: &RunState, attempts: &[tasks::Attempt<'_>], wf: &Workflow) -> Option<i64> {
    let terminal = Slot::Terminal.bit();
    let finishes: Vec<i64> = attempts
        .iter()
        .filter(|a| terminal_phase(&a.driving.phase) && state.done_slots(a) & terminal != 0)
        .filter_map(|a| seconds(a.driving.finished_at.as_deref()))
        .collect();
    let retried_at = seconds(wf.status.as_ref().and_then(|s| s.started_at.as_deref()));
    // A task that finished before the run's `startedAt` shows Argo's reset of it: the tasks
    // that finished after it ran again. KFP keeps `startedAt`, and all of them were kept.
    let kept = match retried_at {
        Some(at) if finishes.iter().any(|f| *f < at) => {
            finishes.iter().copied().filter(|f| *f < at).max()
        }
        _ => finishes.iter().copied().max(),
    };
    kept.max(state.attempt.since).max(retried_at.map(|s| s - 1))
}

/// Whether the run's `status.startedAt` is later than the finish of a task this attempt has
/// published facts of: an attempt starts before its tasks end, so it was reset — by Argo's
/// retry, which sets `startedAt` to its own moment.
fn restarted_after(state: &RunState, attempts: &[tasks::Attempt<'_>], wf: &Workflow) -> bool {
    let Some(started) = seconds(wf.status.as_ref().and_then(|s| s.started_at.as_deref())) else {
        return false;
    };
    attempts.iter().any(|a| {
        terminal_phase(&a.driving.phase)
            && seconds(a.driving.finished_at.as_deref()).is_some_and(|f| f < started)
            && state.done_slots(a) != 0
    })
}

/// Whether a task whose terminal fact this attempt already has runs again (its driving node is
/// no longer finished): a retry whose attempt end was not seen.
fn reset_tasks(state: &RunState, attempts: &[tasks::Attempt<'_>]) -> bool {
    let terminal = Slot::Terminal.bit();
    attempts
        .iter()
        .any(|a| !terminal_phase(&a.driving.phase) && state.done_slots(a) & terminal != 0)
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
            FactKind::RunQueued | FactKind::RunStarted => 0,
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
    // Every run is queued first, at its creation: the Workflow exists before it runs. Only a
    // run's first attempt (a retry re-runs the same Workflow, it is not queued again). Reported
    // whenever the Workflow is first seen, even after its start came from its Events: what is
    // reported must not depend on which object the watch happened to see first.
    if let Some(created) = run.created_at.filter(|_| run.attempt.retries == 0) {
        out.push(fact(
            FactKind::RunQueued,
            Some(created),
            "WorkflowPending",
            "Workflow Pending".into(),
        ));
    }
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
    names: &DisplayNames,
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
    let mut info = task_info(run, attempt, pod_format_v1);
    if let Some(component) = attempt.component
        && let Some(name) = names.get(&(component.to_owned(), attempt.task_name.clone()))
    {
        info.task_key = Some(std::mem::replace(&mut info.task_name, name.clone()));
    }
    // No task stays open once its run ended. A daemoned step still running is killed by Argo
    // and marked Succeeded (`killDaemonedChildren`, workflow/controller/exec_control.go), though
    // the status may show it Running at the end (Argo 2.x); any other step still running
    // ended with the run, as the run did.
    let mut ended_with_run = None;
    let terminal = terminal.or_else(|| {
        let outcome = Outcome::of_phase(&run.phase)?;
        let daemoned = node.daemoned == Some(true);
        let (kind, phase, how) = match (daemoned, outcome) {
            (true, _) => (
                FactKind::TaskSucceeded,
                "Succeeded",
                "a daemoned step, ended with its workflow",
            ),
            (false, Outcome::Succeeded) => (
                FactKind::TaskSucceeded,
                "Succeeded",
                "still running when its workflow ended",
            ),
            (false, _) => (
                FactKind::TaskFailed,
                "Failed",
                "still running when its workflow ended",
            ),
        };
        info.phase = phase.to_owned();
        info.finished_at = run.finished_at;
        if kind == FactKind::TaskFailed {
            info.failure = Some(match run.failure {
                Some(FailureKind::Terminated) => FailureKind::Terminated,
                Some(FailureKind::Stopped) => FailureKind::Stopped,
                _ => FailureKind::Failed,
            });
        }
        ended_with_run = Some(how);
        Some(kind)
    });
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
    // The attempt's own message: its pod's (`main: OOMKilled (exit code 137)`) rather than the
    // KFP v2 executor DAG's, which says nothing of why (Argo writes none on DAG nodes).
    let phase_message = |phase: &str| match info.message.as_str() {
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
        let (reason, message) = match ended_with_run {
            Some(how) => (
                format!("WorkflowNode{}", info.phase),
                format!("{} node {}: {how}", info.phase, node.name),
            ),
            None => (
                format!("WorkflowNode{}", node.phase),
                phase_message(&node.phase),
            ),
        };
        out.push(fact(kind, time, reason, message, None));
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
        task_key: None,
        template: node.template().to_owned(),
        phase: node.phase.clone(),
        message: message.to_owned(),
        started_at: task_started_at(run, node, pod),
        finished_at: run::timestamp(node.finished_at.as_deref()),
        exit_code,
        pod_name: pod
            .filter(|p| !matches!(p.phase.as_str(), "Skipped" | "Omitted"))
            .map(|p| nodes::pod_name(&run.workflow, p, pod_format_v1))
            .unwrap_or_default(),
        attempt: attempt.attempt,
        cached: attempt.cached,
        hook: attempt.hook.clone(),
        iteration: attempt.iteration,
        path: attempt.path.clone(),
        retry_follows: attempt.retry_follows,
        failure: match node.phase.as_str() {
            // KFP's driver resolves inputs, the cache and the pod spec; its failure is the
            // task's, whatever its exit code says.
            "Failed" | "Error" if attempt.driver_failed => Some(FailureKind::DriverFailed),
            "Failed" | "Error" => Some(task_failure(run, &node.phase, message, exit_code)),
            _ => None,
        },
    }
}

/// A failed run whose status has no message names its failed tasks instead (the last attempt of
/// each, with its message): `train failed: main: OOMKilled (exit code 137)`.
fn name_failed_tasks(candidates: &mut [Fact], attempts: &[tasks::Attempt<'_>], since: Option<i64>) {
    let Some(run_failed) = candidates
        .iter_mut()
        .find(|f| f.kind == FactKind::RunFailed && f.message.is_empty())
    else {
        return;
    };
    // The latest attempt of each task instance (loop iterations and tasks of nested pipelines
    // share names), named as in the subject.
    let mut last: BTreeMap<String, &tasks::Attempt<'_>> = BTreeMap::new();
    for attempt in attempts.iter().filter(|a| in_attempt(since, a.driving)) {
        let instance = attempt.instance();
        let known = last.get(&instance);
        if known.is_none_or(|k| k.attempt <= attempt.attempt) {
            last.insert(instance, attempt);
        }
    }
    let failed: Vec<String> = last
        .iter()
        .filter(|(_, a)| matches!(a.driving.phase.as_str(), "Failed" | "Error"))
        .map(|(instance, a)| {
            let message = a
                .pod
                .map(|p| p.message.as_str())
                .filter(|m| !m.is_empty())
                .unwrap_or(&a.driving.message);
            failed_task(instance, message)
        })
        .collect();
    run_failed.message = failed.join("; ");
}

/// `<task> failed[: <message>]`: one failed task, as a `run.failed` without a message names it.
pub(crate) fn failed_task(task: &str, message: &str) -> String {
    match message {
        "" => format!("{task} failed"),
        m => format!("{task} failed: {m}"),
    }
}

/// Why a task attempt failed, from the message Argo wrote on its pod node (formats in
/// `inferFailedReason`, `workflow/controller/operator.go`: `<container>: <Reason> (exit code N)`
/// since Argo 3.7, `<Reason> (exit code N)` in 3.0–3.6, `failed with exit code N` in 2.x; the
/// pod's own message for evictions and deadlines; `Pod failed before main container starts due
/// to <Reason>: …`), the run's termination, and the node's phase.
fn task_failure(run: &RunInfo, phase: &str, message: &str, exit_code: Option<i64>) -> FailureKind {
    let has = |needle: &str| message.contains(needle);
    if let Some(ended @ (FailureKind::Terminated | FailureKind::Stopped)) = run.failure {
        // KFP's terminate and `argo terminate|stop` end running pods with a deadline message.
        ended
    } else if has("OOMKilled") {
        FailureKind::OOMKilled
    } else if has("Evicted") || has("The node was low on resource") {
        FailureKind::Evicted
    } else if has("exceeded its deadline")
        || has("DeadlineExceeded")
        || has("Max duration limit exceeded")
    {
        FailureKind::DeadlineExceeded
    } else if has("ImagePull") || has("ErrImage") || has("InvalidImageName") {
        FailureKind::ImagePull
    } else if has("pod deleted") {
        FailureKind::PodDeleted
    } else if has("Preempt") {
        FailureKind::Preempted
    } else if exit_code.is_some_and(|c| c != 0) || has("exit code") || phase == "Error" {
        FailureKind::Error
    } else {
        FailureKind::Failed
    }
}

/// When a task attempt started. A node a retry reset (KFP keeps a reset DAG's `startedAt`)
/// started in an earlier attempt: the re-run's start is then its pod's, or the attempt's.
fn task_started_at(run: &RunInfo, node: &Node, pod: Option<&Node>) -> Option<DateTime<Utc>> {
    let started = run::timestamp(node.started_at.as_deref());
    let Some(since) = run.attempt.since else {
        return started;
    };
    let later = |t: &DateTime<Utc>| t.timestamp() > since;
    started.filter(later).or_else(|| {
        pod.and_then(|p| run::timestamp(p.started_at.as_deref()))
            .filter(later)
            .or(run.started_at)
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_failures_are_classified_from_argo_messages() {
        let run = RunInfo::default();
        let terminated = RunInfo {
            failure: Some(FailureKind::Terminated),
            ..RunInfo::default()
        };
        let cases = [
            (
                &run,
                "Failed",
                "main: OOMKilled (exit code 137)",
                Some(137),
                "OOMKilled",
            ),
            (
                &run,
                "Failed",
                "OOMKilled (exit code 137)",
                None,
                "OOMKilled",
            ),
            (
                &run,
                "Failed",
                "main: Error (exit code 1)",
                Some(1),
                "Error",
            ),
            (&run, "Failed", "failed with exit code 2", None, "Error"),
            (
                &run,
                "Failed",
                "The node was low on resource: memory. Container main was using 1783932Ki",
                None,
                "Evicted",
            ),
            (
                &run,
                "Failed",
                "Step exceeded its deadline",
                None,
                "DeadlineExceeded",
            ),
            (
                &terminated,
                "Failed",
                "Step exceeded its deadline",
                None,
                "Terminated",
            ),
            (
                &run,
                "Error",
                "Pod failed before main container starts due to ErrImagePull: not found",
                None,
                "ImagePull",
            ),
            (&run, "Error", "pod deleted", None, "PodDeleted"),
            (&run, "Error", "", None, "Error"),
            (&run, "Failed", "", None, "Failed"),
        ];
        for (run, phase, message, exit, want) in cases {
            assert_eq!(
                task_failure(run, phase, message, exit).as_str(),
                want,
                "{message}"
            );
        }
    }
}
