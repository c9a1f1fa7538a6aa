//! Facts: what happened to a run or a task, as pure data. Derivation produces them, encoding turns
//! them into CloudEvents; nothing here does I/O.

use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The kinds of fact, one per CloudEvent type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FactKind {
    /// The Workflow exists and waits: reported once per run (its first attempt), at its creation
    /// time, when the Workflow is first seen.
    RunQueued,
    RunStarted,
    RunSucceeded,
    RunFailed,
    TaskStarted,
    TaskWarning,
    TaskSucceeded,
    TaskFailed,
    TaskSkipped,
}

impl FactKind {
    pub const ALL: [FactKind; 9] = [
        Self::RunQueued,
        Self::RunStarted,
        Self::RunSucceeded,
        Self::RunFailed,
        Self::TaskStarted,
        Self::TaskSucceeded,
        Self::TaskFailed,
        Self::TaskSkipped,
        Self::TaskWarning,
    ];

    /// The CloudEvent type after the configurable prefix, e.g. `run.started`.
    pub fn type_suffix(self) -> &'static str {
        match self {
            Self::RunQueued => "run.queued",
            Self::RunStarted => "run.started",
            Self::RunSucceeded => "run.succeeded",
            Self::RunFailed => "run.failed",
            Self::TaskStarted => "task.started",
            Self::TaskSucceeded => "task.succeeded",
            Self::TaskFailed => "task.failed",
            Self::TaskSkipped => "task.skipped",
            Self::TaskWarning => "task.warning",
        }
    }

    pub fn is_run(self) -> bool {
        matches!(
            self,
            Self::RunQueued | Self::RunStarted | Self::RunSucceeded | Self::RunFailed
        )
    }

    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            Self::RunQueued | Self::RunStarted | Self::TaskStarted | Self::TaskWarning
        )
    }

    /// Order of facts that carry the same timestamp within one subject.
    pub fn causal_rank(self) -> u8 {
        match self {
            Self::RunQueued => 0,
            Self::RunStarted => 1,
            Self::TaskStarted => 2,
            Self::TaskWarning => 3,
            Self::TaskSucceeded | Self::TaskFailed => 4,
            // A skip at the moment a task ended is the effect of that end (`depends` not met).
            Self::TaskSkipped => 5,
            Self::RunSucceeded | Self::RunFailed => 6,
        }
    }
}

/// What is known about the run (the Workflow) a fact belongs to; shared by its facts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunInfo {
    pub uid: String,
    pub namespace: String,
    pub workflow: String,
    /// `pipeline/runid`; empty for plain Argo workflows.
    pub kfp_run_id: String,
    pub run_name: String,
    pub pipeline_name: String,
    pub recurring_run_id: String,
    pub phase: String,
    pub message: String,
    /// When the Workflow was created (`metadata.creationTimestamp`): when the run was queued.
    pub created_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Run parameters: v1 `spec.arguments.parameters`, v2 the root driver's `parameterValues`.
    pub parameters: BTreeMap<String, Value>,
    /// Why a failed run failed: `Terminated`, `Stopped`, `DeadlineExceeded`, `Failed` or `Error`.
    pub failure: Option<FailureKind>,
    /// Argo keeps the node statuses in its database; only run-level facts can be derived.
    pub nodes_offloaded: bool,
    /// Which attempt of the run this is: a retry (`argo retry`, KFP's retry) runs the same
    /// Workflow again.
    pub attempt: RunAttempt,
    /// The W3C trace id Argo's controller wrote (`workflows.argoproj.io/trace-id`): 32 lower-case
    /// hex digits, not all zero.
    pub trace_id: Option<String>,
}

/// How a run attempt ended, as its status said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    Error,
}

impl Outcome {
    /// The outcome a terminal phase names, if it is one.
    pub fn of_phase(phase: &str) -> Option<Self> {
        match phase {
            "Succeeded" => Some(Self::Succeeded),
            "Failed" => Some(Self::Failed),
            "Error" => Some(Self::Error),
            _ => None,
        }
    }

    pub fn phase(self) -> &'static str {
        match self {
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Error => "Error",
        }
    }
}

/// One attempt of a run. A retried Workflow keeps its uid and its node ids (Argo's node ids
/// are a hash of the node name), so the attempt is part of every later fact's identity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunAttempt {
    /// Attempts before this one: 0 for the first attempt, whose ids are those of a run never
    /// retried.
    pub retries: u32,
    /// When the previous attempt ended (unix seconds, from its `status.finishedAt`): a node that
    /// finished by then was kept by the retry and belongs to an earlier attempt.
    pub since: Option<i64>,
    /// How the previous attempt ended, when known.
    pub previous: Option<Outcome>,
    /// The first attempt was first seen with the status already saying "retried"
    /// (`Completed: False`): that mark then tells nothing about a later retry.
    pub marked: bool,
}

impl RunAttempt {
    /// The attempt's number, from 1.
    pub fn number(&self) -> u32 {
        self.retries.saturating_add(1)
    }

    /// The hash a fact of this attempt about `node_id` is remembered by: the node's own for the
    /// first attempt (as before retries were known), the node and attempt for later ones.
    pub fn node_hash(&self, node_id: &str) -> u64 {
        if self.retries == 0 {
            node_hash(node_id)
        } else {
            node_hash(&format!("{node_id}\u{1f}{}", self.number()))
        }
    }
}

impl RunInfo {
    /// The run reached a terminal phase.
    pub fn finished(&self) -> bool {
        matches!(self.phase.as_str(), "Succeeded" | "Failed" | "Error")
    }
}

/// A KEP-12843 lifecycle category. The discriminant is the category's bit in a checkpoint
/// mark ([`Slot::bit`]) and fixed forever: checkpoints written by every version keep meaning the
/// same category, whatever order the match table (whose order is the match priority) has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum LifecycleCategory {
    ImagePull = 0,
    Admission = 1,
    Volume = 2,
    Scheduling = 3,
    Runtime = 4,
    Node = 5,
    Quota = 6,
}

impl LifecycleCategory {
    /// Every category, by bit.
    pub const ALL: [Self; 7] = [
        Self::ImagePull,
        Self::Admission,
        Self::Volume,
        Self::Scheduling,
        Self::Runtime,
        Self::Node,
        Self::Quota,
    ];

    /// The name published (`Category`) and in the warning's id.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ImagePull => "ImagePull",
            Self::Admission => "Admission",
            Self::Volume => "Volume",
            Self::Scheduling => "Scheduling",
            Self::Runtime => "Runtime",
            Self::Node => "Node",
            Self::Quota => "Quota",
        }
    }

    /// The category's bit index in a checkpoint mark.
    pub fn bit(self) -> u8 {
        self as u8
    }
}

/// Why a run or a task attempt failed (`FailureReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The run's phase is Failed, or a task failed for no more precise reason.
    Failed,
    /// The run's phase is Error, or a task exited non-zero or errored.
    Error,
    /// KFP's terminate (`activeDeadlineSeconds: 0`) or `argo terminate`.
    Terminated,
    /// `argo stop`: exit handlers still run.
    Stopped,
    DeadlineExceeded,
    OOMKilled,
    Evicted,
    ImagePull,
    PodDeleted,
    Preempted,
    /// KFP v2: the task's driver failed (inputs, cache, pod spec).
    DriverFailed,
}

impl FailureKind {
    /// The name published (`FailureReason`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "Failed",
            Self::Error => "Error",
            Self::Terminated => "Terminated",
            Self::Stopped => "Stopped",
            Self::DeadlineExceeded => "DeadlineExceeded",
            Self::OOMKilled => "OOMKilled",
            Self::Evicted => "Evicted",
            Self::ImagePull => "ImagePull",
            Self::PodDeleted => "PodDeleted",
            Self::Preempted => "Preempted",
            Self::DriverFailed => "DriverFailed",
        }
    }
}

/// A pod lifecycle problem of a Pending task (KEP-12843).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifecycle {
    pub category: LifecycleCategory,
    /// The pattern that matched, e.g. `ImagePullBackOff`.
    pub reason: &'static str,
    pub message: String,
    /// The class does not fix itself (image pull, admission, volume).
    pub terminal: bool,
}

/// One attempt of one task, as far as a fact needs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskInfo {
    /// The Argo node whose phase drives this attempt's facts.
    pub node_id: String,
    pub node_name: String,
    pub node_type: String,
    /// What a KFP user calls the step: for KFP v2 the name its UI shows.
    pub task_name: String,
    /// KFP v2: the pipeline's key for the task, when its UI name differs (`set_display_name`).
    pub task_key: Option<String>,
    pub template: String,
    pub phase: String,
    pub message: String,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub exit_code: Option<i64>,
    pub pod_name: String,
    pub attempt: u32,
    /// KFP v2 reused a cached result instead of running the executor.
    pub cached: bool,
    /// An exit handler (`onExit`) or lifecycle hook (its event): the task runs for that hook.
    pub hook: Option<String>,
    /// The loop iteration (`withItems`/`withParam`, KFP `dsl.ParallelFor`) the task runs in.
    pub iteration: Option<u32>,
    /// The task's groups and key where it is not a task of the workflow's own DAG or steps
    /// (`inner-pipeline.print-op`, `for-loop-2[0].print-op`): one task instance.
    pub path: Option<String>,
    /// A failed attempt after which a retry follows (its Retry node is not finished).
    pub retry_follows: bool,
    /// Why a failed attempt failed: `OOMKilled`, `Error` (a non-zero exit code), `Evicted`,
    /// `DeadlineExceeded`, `ImagePull`, `PodDeleted`, `Preempted`, `DriverFailed` (KFP v2),
    /// `Terminated`, `Stopped` or `Failed`; empty unless it failed.
    pub failure: Option<FailureKind>,
}

/// Where a fact was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// From the Workflow's status (the source of truth).
    Status,
    /// From a Kubernetes Event, when the status could not say (workflow gone or offloaded).
    Event,
}

/// Something that happened to a run or one task attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Fact {
    pub kind: FactKind,
    pub run: Arc<RunInfo>,
    pub task: Option<TaskInfo>,
    pub lifecycle: Option<Lifecycle>,
    /// When it happened in the cluster; `None` only when no timestamp exists at all.
    pub time: Option<DateTime<Utc>>,
    /// The Argo event reason this fact corresponds to, e.g. `WorkflowNodeSucceeded`.
    pub reason: String,
    /// The message Argo's event would carry, e.g. `Succeeded node wf.root.train`.
    pub message: String,
    pub origin: Origin,
}

impl Fact {
    /// Whether this fact ends a run whose node status was visible: nothing can follow it (an
    /// offloaded run's task facts come from its Events, which may arrive after its end).
    pub fn closes_run(&self) -> bool {
        matches!(self.kind, FactKind::RunSucceeded | FactKind::RunFailed)
            && !self.run.nodes_offloaded
    }

    /// The identity of the fact: the same fact always yields the same key, whether learned from
    /// the status or from an Event, now or after a restart.
    pub fn key(&self) -> FactKey {
        FactKey {
            workflow_uid: self.run.uid.clone(),
            node_id: self
                .task
                .as_ref()
                .map(|t| t.node_id.clone())
                .unwrap_or_default(),
            slot: Slot::of(self.kind, self.lifecycle.as_ref()),
            retries: self.run.attempt.retries,
        }
    }

    /// This fact's [`Mark`].
    pub fn mark(&self) -> Mark {
        let node = self.task.as_ref().map_or("", |t| t.node_id.as_str());
        Mark {
            node: self.run.attempt.node_hash(node),
            slots: Slot::of(self.kind, self.lifecycle.as_ref()).bit(),
        }
    }
}

/// Which of an attempt's (or run's) at-most-once slots a fact fills.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    /// The run's queued fact (on the run's own node, where no warning ever is).
    Queued,
    Started,
    /// One terminal fact per run or attempt, whatever the outcome.
    Terminal,
    /// A lifecycle warning of a category (`None`: of none known, sharing the last bit).
    Warning(Option<LifecycleCategory>),
}

impl Slot {
    pub fn of(kind: FactKind, lifecycle: Option<&Lifecycle>) -> Self {
        match kind {
            FactKind::RunQueued => Self::Queued,
            FactKind::RunStarted | FactKind::TaskStarted => Self::Started,
            FactKind::TaskWarning => Self::Warning(lifecycle.map(|l| l.category)),
            _ => Self::Terminal,
        }
    }
}

impl Slot {
    /// The slot as one bit of a node's [`Mark`] mask: started, terminal, then one bit per
    /// lifecycle category, fixed per category (an unknown category shares the last bit).
    pub fn bit(&self) -> u16 {
        match self {
            Self::Started => 1,
            Self::Terminal => 2,
            // The first warning bit: warnings are task facts, the run's node never has one, so
            // the bit is free there (and checkpoints written before it read as "not queued").
            Self::Queued => 4,
            Self::Warning(category) => {
                let index = category.map_or(13, |c| c.bit());
                4 << index.min(13)
            }
        }
    }
}

/// A compact, stable record of done facts within one workflow: a hash of the node id (the run's
/// own facts use the empty id) and a mask of [`Slot::bit`]s. What derivation and the checkpoint
/// remember per workflow, so memory grows with nodes, not with object size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mark {
    pub node: u64,
    pub slots: u16,
}

/// FNV-1a, 64 bits: stable across builds and platforms, so checkpoints survive upgrades.
pub fn node_hash(node_id: &str) -> u64 {
    node_id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Identity of a fact for de-duplication: workflow uid, node id (empty for the run), slot and
/// run attempt.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FactKey {
    pub workflow_uid: String,
    pub node_id: String,
    pub slot: Slot,
    /// The run attempt's [`RunAttempt::retries`].
    pub retries: u32,
}
