//! The parts of Kubernetes objects the bridge reads, as serde shapes that tolerate anything else.
//!
//! Only the fields used are declared; every one has a default, so an object that lacks a field
//! (or that a newer Argo extends) still decodes. Argo's `Workflow` is not in k8s-openapi, and one
//! lenient [`ClusterEvent`] covers both `v1` and `events.k8s.io/v1` Events.

use serde::Deserialize;
use std::collections::BTreeMap;

/// A list or map written as `null` (Argo 2.x wrote `templates: null`; YAML-born objects have
/// `children: null` and the like) reads as empty, as a missing one does.
fn null_as_empty<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// `metadata` of any object.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub resource_version: String,
    pub creation_timestamp: Option<String>,
    #[serde(deserialize_with = "null_as_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(deserialize_with = "null_as_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(deserialize_with = "null_as_empty")]
    pub owner_references: Vec<OwnerReference>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct OwnerReference {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

/// An Argo `Workflow` (`argoproj.io/v1alpha1`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Workflow {
    pub metadata: ObjectMeta,
    pub spec: WorkflowSpec,
    /// Absent on a just-submitted workflow; `None` and an empty status mean the same.
    pub status: Option<WorkflowStatus>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WorkflowSpec {
    pub entrypoint: String,
    pub arguments: Arguments,
    #[serde(deserialize_with = "null_as_empty")]
    pub templates: Vec<Template>,
    /// KFP terminates a run by setting this to 0.
    pub active_deadline_seconds: Option<i64>,
    /// `Stop` or `Terminate` after `argo stop` / `argo terminate`.
    pub shutdown: String,
    pub pod_metadata: PodMetadata,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PodMetadata {
    #[serde(deserialize_with = "null_as_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Arguments {
    #[serde(deserialize_with = "null_as_empty")]
    pub parameters: Vec<Parameter>,
}

/// An Argo parameter; `value` may be absent (a declared input with no value yet).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Parameter {
    pub name: String,
    pub value: Option<serde_json::Value>,
}

impl Parameter {
    /// The value as Argo means it: a string (YAML may have turned `"8"` into a number).
    pub fn text(&self) -> Option<String> {
        match self.value.as_ref()? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        }
    }
}

/// A template, reduced to what tells a task apart and where KFP keeps its run metadata.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Template {
    pub name: String,
    pub dag: Option<Dag>,
    pub steps: Option<serde::de::IgnoredAny>,
    pub container: Option<Container>,
    pub script: Option<serde::de::IgnoredAny>,
    pub resource: Option<serde::de::IgnoredAny>,
    #[serde(rename = "containerSet")]
    pub container_set: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Dag {
    #[serde(deserialize_with = "null_as_empty")]
    pub tasks: Vec<DagTask>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DagTask {
    pub name: String,
    pub template: String,
    pub arguments: Arguments,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Container {
    #[serde(deserialize_with = "null_as_empty")]
    pub args: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WorkflowStatus {
    pub phase: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub message: String,
    pub progress: String,
    #[serde(deserialize_with = "null_as_empty")]
    pub nodes: BTreeMap<String, Node>,
    pub compressed_nodes: String,
    pub offload_node_status_version: String,
    #[serde(deserialize_with = "null_as_empty")]
    pub conditions: Vec<Condition>,
}

/// A workflow condition: `Completed` (`True` when the controller marks the workflow completed;
/// `False` only from a retry or resubmission) or `PodRunning`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
}

/// One entry of `status.nodes`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Node {
    pub id: String,
    pub name: String,
    pub display_name: String,
    #[serde(rename = "type")]
    pub node_type: String,
    pub template_name: String,
    pub template_ref: Option<TemplateRef>,
    pub phase: String,
    #[serde(rename = "boundaryID")]
    pub boundary_id: String,
    pub message: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    #[serde(deserialize_with = "null_as_empty")]
    pub children: Vec<String>,
    pub outputs: Option<NodeOutputs>,
    pub host_node_name: String,
    /// Argo >= 3.5.1: `hooked` for exit handlers and lifecycle hooks, `retried` for attempts of
    /// a retry strategy.
    pub node_flag: Option<NodeFlag>,
    /// A daemoned step's pod, still running (Argo clears it when it kills the daemon).
    pub daemoned: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct NodeFlag {
    pub hooked: bool,
    pub retried: bool,
}

impl Node {
    /// `templateRef.template` when the node runs a referenced template, else `templateName`.
    pub fn template(&self) -> &str {
        match &self.template_ref {
            Some(r) if !r.template.is_empty() => &r.template,
            _ => &self.template_name,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TemplateRef {
    pub name: String,
    pub template: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct NodeOutputs {
    /// A string in Argo's API (`"137"`), though YAML-born fixtures sometimes carry a number.
    pub exit_code: Option<serde_json::Value>,
}

/// A Kubernetes Event, read through either API: core `v1` (`involvedObject`, `message`, `source`,
/// `count`, `firstTimestamp`/`lastTimestamp`) or `events.k8s.io/v1` (`regarding`, `note`,
/// `deprecatedSource`, `deprecatedCount`, `eventTime`, `series`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ClusterEvent {
    pub metadata: ObjectMeta,
    #[serde(alias = "regarding")]
    pub involved_object: ObjectReference,
    pub reason: String,
    #[serde(alias = "note")]
    pub message: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub source: EventSource,
    pub deprecated_source: EventSource,
    pub reporting_controller: String,
    pub reporting_component: String,
    pub count: Option<i64>,
    pub deprecated_count: Option<i64>,
    pub first_timestamp: Option<String>,
    pub last_timestamp: Option<String>,
    pub deprecated_first_timestamp: Option<String>,
    pub deprecated_last_timestamp: Option<String>,
    pub event_time: Option<String>,
    pub series: Option<EventSeries>,
}

impl ClusterEvent {
    /// The component that reported the event, whichever field the API version put it in.
    pub fn component(&self) -> &str {
        [
            self.source.component.as_str(),
            self.deprecated_source.component.as_str(),
            self.reporting_controller.as_str(),
            self.reporting_component.as_str(),
        ]
        .into_iter()
        .find(|c| !c.is_empty())
        .unwrap_or("")
    }

    /// The latest moment the event was observed, in the order the APIs define it.
    pub fn last_seen(&self) -> Option<&str> {
        self.series
            .as_ref()
            .and_then(|s| s.last_observed_time.as_deref())
            .or(self.last_timestamp.as_deref())
            .or(self.deprecated_last_timestamp.as_deref())
            .or(self.event_time.as_deref())
            .or(self.first_timestamp.as_deref())
            .or(self.deprecated_first_timestamp.as_deref())
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ObjectReference {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub resource_version: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct EventSource {
    pub component: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EventSeries {
    pub count: Option<i64>,
    pub last_observed_time: Option<String>,
}
