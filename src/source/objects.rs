//! The parts of Kubernetes objects the bridge reads, as serde shapes that tolerate anything else.
//!
//! Only the fields used are declared; every one has a default, so an object that lacks a field
//! (or that a newer Argo extends) still decodes. Argo's `Workflow` is not in k8s-openapi, and one
//! lenient [`ClusterEvent`] covers both `v1` and `events.k8s.io/v1` Events.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeMap;

/// An object read field by field: a field of an unexpected type is dropped (it reads as absent)
/// unless the bridge cannot do without it, then the object is rejected.
pub trait Lenient: DeserializeOwned {
    const KIND: &'static str;
    /// Paths (`*`: any key) of the fields the derivation needs. A wrong type at one of them, or
    /// at an object on the way to one (`status: 5`), rejects the object.
    const REQUIRED: &'static [&'static [&'static str]];
}

impl Lenient for Workflow {
    const KIND: &'static str = "Workflow";
    const REQUIRED: &'static [&'static [&'static str]] = &[
        &["metadata", "name"],
        &["metadata", "namespace"],
        &["metadata", "uid"],
        &["status", "phase"],
        &["status", "compressedNodes"],
        &["status", "nodes", "*", "id"],
        &["status", "nodes", "*", "name"],
        &["status", "nodes", "*", "type"],
        &["status", "nodes", "*", "phase"],
    ];
}

impl Lenient for ClusterEvent {
    const KIND: &'static str = "Event";
    const REQUIRED: &'static [&'static [&'static str]] = &[
        &["metadata", "name"],
        &["metadata", "uid"],
        &["reason"],
        &["message"],
        &["note"],
        &["involvedObject", "kind"],
        &["involvedObject", "name"],
        &["involvedObject", "uid"],
        &["regarding", "kind"],
        &["regarding", "name"],
        &["regarding", "uid"],
    ];
}

/// At most this many fields are dropped from one object; past that it is rejected.
const MAX_DROPPED: usize = 32;

/// Why an object could not be read: the field (`status.phase`) and serde's reason.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {source}")]
pub struct Unreadable {
    pub field: String,
    #[source]
    pub source: serde_json::Error,
}

/// Reads `value` as a `T`, dropping each field of an unexpected type the bridge can do without
/// (named in the second member, e.g. `metadata.labels.x`); a wrong type where it cannot rejects
/// the object. The happy path is one pass; each dropped field costs one more.
pub fn decode_lenient<T: Lenient>(mut value: Value) -> Result<(T, Vec<String>), Unreadable> {
    let mut dropped = Vec::new();
    loop {
        let err = match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(object) => return Ok((object, dropped)),
            Err(err) => err,
        };
        let field = err.path().to_string();
        let keys: Option<Vec<Key>> = err
            .path()
            .iter()
            .map(|segment| match segment {
                serde_path_to_error::Segment::Map { key } => Some(Key::Name(key.clone())),
                serde_path_to_error::Segment::Seq { index } => Some(Key::Index(*index)),
                _ => None,
            })
            .collect();
        let droppable = keys.filter(|keys| {
            dropped.len() < MAX_DROPPED
                && !keys.is_empty()
                && !T::REQUIRED.iter().any(|required| needed(keys, required))
        });
        match droppable {
            Some(keys) if remove(&mut value, &keys) => dropped.push(field),
            _ => {
                return Err(Unreadable {
                    field,
                    source: err.into_inner(),
                });
            }
        }
    }
}

/// Says which fields of an object were dropped, once per object and set of fields (an object
/// is decoded on every change; a label written wrong stays wrong).
pub fn warn_dropped(kind: &str, object: &str, dropped: &[String]) {
    static SAID: std::sync::Mutex<Option<std::collections::HashSet<String>>> =
        std::sync::Mutex::new(None);
    let key = format!("{kind} {object} {dropped:?}");
    {
        let mut said = SAID
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let said = said.get_or_insert_with(Default::default);
        // Bounded: past this many, a warning may repeat.
        if said.len() >= 4096 {
            said.clear();
        }
        if !said.insert(key) {
            return;
        }
    }
    tracing::warn!(
        kind,
        object,
        fields = ?dropped,
        "fields of an unexpected type dropped; the rest of the object is used"
    );
}

enum Key {
    Name(String),
    Index(usize),
}

/// Whether the field at `keys` is `required` or an object on the way to it.
fn needed(keys: &[Key], required: &[&str]) -> bool {
    keys.len() <= required.len()
        && keys.iter().zip(required).all(|(key, want)| match key {
            Key::Name(name) => *want == "*" || name == want,
            Key::Index(_) => *want == "*",
        })
}

/// Removes the member at `keys`; false if there is none (nothing would change).
fn remove(value: &mut Value, keys: &[Key]) -> bool {
    let Some((last, parents)) = keys.split_last() else {
        return false;
    };
    let mut at = value;
    for key in parents {
        let next = match (key, at) {
            (Key::Name(name), Value::Object(map)) => map.get_mut(name),
            (Key::Index(i), Value::Array(items)) => items.get_mut(*i),
            _ => None,
        };
        match next {
            Some(next) => at = next,
            None => return false,
        }
    }
    match (last, at) {
        (Key::Name(name), Value::Object(map)) => map.remove(name).is_some(),
        (Key::Index(i), Value::Array(items)) if *i < items.len() => {
            items.remove(*i);
            true
        }
        _ => false,
    }
}

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

#[cfg(test)]
mod tests {
    use super::{ClusterEvent, Workflow, decode_lenient};
    use serde_json::json;

    fn workflow(status: serde_json::Value) -> serde_json::Value {
        json!({"metadata": {"name": "w", "namespace": "ns", "uid": "u",
                            "labels": {"workflows.argoproj.io/completed": true, "team": "ml"}},
               "spec": {"templates": [{"name": 5}, {"name": "main"}]},
               "status": status})
    }

    #[test]
    fn a_field_of_an_unexpected_type_is_dropped_where_the_bridge_can_do_without_it() {
        let value = workflow(json!({"phase": "Running", "progress": 5, "nodes": {
            "w": {"id": "w", "name": "w", "type": "Pod", "phase": "Running", "hostNodeName": 7,
                  "startedAt": 1_700_000_000, "children": "x", "message": "ok"}}}));
        let (wf, dropped) = decode_lenient::<Workflow>(value).expect("tolerated");
        assert_eq!(
            dropped,
            [
                "metadata.labels.workflows.argoproj.io/completed",
                "spec.templates[0].name",
                "status.nodes.w.children",
                "status.nodes.w.hostNodeName",
                "status.nodes.w.startedAt",
                "status.progress",
            ]
        );
        assert_eq!(
            wf.metadata.labels.get("team").map(String::as_str),
            Some("ml")
        );
        assert_eq!(
            wf.spec.templates.len(),
            2,
            "the template stays, without its name"
        );
        let status = wf.status.expect("status");
        assert_eq!(status.phase, "Running");
        let node = &status.nodes["w"];
        assert_eq!(
            (node.message.as_str(), node.started_at.as_deref()),
            ("ok", None)
        );
    }

    #[test]
    fn a_wrong_type_where_the_bridge_cannot_do_without_it_rejects_the_object() {
        let cases = [
            (workflow(json!({"phase": 123})), "status.phase"),
            (workflow(json!(5)), "status"),
            (
                workflow(json!({"phase": "Running", "nodes": []})),
                "status.nodes",
            ),
            (
                workflow(json!({"phase": "Running", "nodes": {"w": {"id": "w", "phase": 1}}})),
                "status.nodes.w.phase",
            ),
            (json!({"metadata": {"name": "w", "uid": 1}}), "metadata.uid"),
            (json!({"metadata": "w"}), "metadata"),
        ];
        for (value, field) in cases {
            let err = decode_lenient::<Workflow>(value).expect_err(field);
            assert_eq!(err.field, field);
            assert!(err.to_string().contains("invalid type"), "{err}");
        }
        let event = json!({"metadata": {"name": "e", "uid": "u"}, "reason": 3});
        assert_eq!(
            decode_lenient::<ClusterEvent>(event)
                .expect_err("reason")
                .field,
            "reason"
        );
        let event = json!({"metadata": {"name": "e", "uid": "u"}, "reason": "WorkflowRunning",
                           "count": "two", "involvedObject": {"kind": "Workflow", "name": "w"}});
        let (ev, dropped) = decode_lenient::<ClusterEvent>(event).expect("tolerated");
        assert_eq!((ev.count, dropped), (None, vec!["count".to_owned()]));
    }
}
