//! One line of a recording: a Kubernetes watch event, `{"type":…,"object":{…}}`, exactly as a
//! watch stream carries it, holding an Argo Workflow or a Kubernetes Event.

use super::objects::{ClusterEvent, Lenient, Unreadable, Workflow, decode_lenient, warn_dropped};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Longest line accepted: Kubernetes refuses objects over ~1.5 MiB (etcd's request limit), so
/// anything near this bound is not a watch event.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// What the watch said happened to the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    Modified,
    Deleted,
}

/// A decoded watch event the bridge acts on.
#[derive(Debug, Clone)]
pub enum Observed {
    Workflow(Change, Box<Workflow>),
    Event(Change, Box<ClusterEvent>),
}

/// Why a line was skipped.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("line is not valid UTF-8 (byte {0})")]
    NotUtf8(usize),
    #[error("line is longer than {MAX_LINE_BYTES} bytes")]
    TooLong,
    #[error("not a watch event: {0}")]
    Json(#[source] serde_json::Error),
    #[error("unknown watch event type {0:?} (want ADDED, MODIFIED, DELETED, BOOKMARK or ERROR)")]
    UnknownType(String),
    #[error("watch stream reported an error: {0}")]
    WatchError(String),
    #[error(
        "unsupported object {api_version:?}/{kind:?} (want argoproj.io/v1alpha1 Workflow, v1 or events.k8s.io/v1 Event)"
    )]
    UnsupportedKind { api_version: String, kind: String },
    #[error("malformed {kind}: {source}")]
    Malformed {
        kind: &'static str,
        #[source]
        source: Unreadable,
    },
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    change: String,
    #[serde(borrow)]
    object: &'a RawValue,
}

#[derive(Deserialize)]
struct TypeMeta {
    #[serde(default, rename = "apiVersion")]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    message: String,
}

/// Decodes one line. `Ok(None)` for lines that carry nothing to act on (bookmarks, blank lines).
pub fn decode(line: &[u8]) -> Result<Option<Observed>, DecodeError> {
    if line.len() > MAX_LINE_BYTES {
        return Err(DecodeError::TooLong);
    }
    let text = std::str::from_utf8(line).map_err(|e| DecodeError::NotUtf8(e.valid_up_to()))?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    let envelope: Envelope = serde_json::from_str(text).map_err(DecodeError::Json)?;
    let meta: TypeMeta = serde_json::from_str(envelope.object.get()).map_err(DecodeError::Json)?;
    let change = match envelope.change.as_str() {
        "ADDED" => Change::Added,
        "MODIFIED" => Change::Modified,
        "DELETED" => Change::Deleted,
        "BOOKMARK" => return Ok(None),
        "ERROR" => return Err(DecodeError::WatchError(meta.message)),
        other => return Err(DecodeError::UnknownType(other.chars().take(40).collect())),
    };
    let raw = envelope.object.get();
    match (meta.api_version.as_str(), meta.kind.as_str()) {
        ("argoproj.io/v1alpha1", "Workflow") => {
            object(raw).map(|wf| Some(Observed::Workflow(change, Box::new(wf))))
        }
        ("v1" | "events.k8s.io/v1" | "events.k8s.io/v1beta1", "Event") => {
            object(raw).map(|ev| Some(Observed::Event(change, Box::new(ev))))
        }
        _ => Err(DecodeError::UnsupportedKind {
            api_version: meta.api_version.chars().take(80).collect(),
            kind: meta.kind.chars().take(80).collect(),
        }),
    }
}

/// Reads one object: in one pass when it is well-formed, else field by field, dropping (and
/// saying) what has an unexpected type where the bridge can do without it.
fn object<T: Lenient>(raw: &str) -> Result<T, DecodeError> {
    if let Ok(object) = serde_json::from_str(raw) {
        return Ok(object);
    }
    let malformed = |source| DecodeError::Malformed {
        kind: T::KIND,
        source,
    };
    let value = serde_json::from_str(raw).map_err(|source| {
        malformed(Unreadable {
            field: ".".to_owned(),
            source,
        })
    })?;
    let (object, dropped) = decode_lenient::<T>(value).map_err(malformed)?;
    if !dropped.is_empty() {
        warn_dropped(T::KIND, &object_name(raw), &dropped);
    }
    Ok(object)
}

/// `namespace/name` of a raw object, as far as readable.
fn object_name(raw: &str) -> String {
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Named {
        metadata: Name,
    }
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Name {
        namespace: String,
        name: String,
    }
    let named: Named = serde_json::from_str(raw).unwrap_or_default();
    format!("{}/{}", named.metadata.namespace, named.metadata.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_workflows_and_both_event_apis() {
        let wf = br#"{"type":"ADDED","object":{"apiVersion":"argoproj.io/v1alpha1","kind":"Workflow","metadata":{"name":"w","uid":"u"},"status":{"phase":"Running"}}}"#;
        assert!(matches!(
            decode(wf),
            Ok(Some(Observed::Workflow(Change::Added, _)))
        ));
        let core = br#"{"type":"MODIFIED","object":{"apiVersion":"v1","kind":"Event","involvedObject":{"kind":"Workflow","name":"w"},"reason":"WorkflowRunning","count":2}}"#;
        let Ok(Some(Observed::Event(Change::Modified, ev))) = decode(core) else {
            panic!("core event not decoded")
        };
        assert_eq!(ev.involved_object.name, "w");
        let new = br#"{"type":"ADDED","object":{"apiVersion":"events.k8s.io/v1","kind":"Event","regarding":{"kind":"Workflow","name":"w"},"note":"Workflow Running","deprecatedSource":{"component":"workflow-controller"}}}"#;
        let Ok(Some(Observed::Event(_, ev))) = decode(new) else {
            panic!("events.k8s.io not decoded")
        };
        assert_eq!(
            (ev.message.as_str(), ev.component()),
            ("Workflow Running", "workflow-controller")
        );
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        let cases: [(&[u8], &str); 6] = [
            (b"{\"type\":\"ADDED\"", "not a watch event"),
            (b"{\"type\":\"ADDED\",\"object\":{\"apiVersion\":\"v1\",\"kind\":\"Pod\"}}", "unsupported object"),
            (b"{\"type\":\"GONE\",\"object\":{}}", "unknown watch event type"),
            (b"{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"message\":\"too old resource version\"}}", "too old"),
            (b"{\"type\":\"ADDED\",\"object\":{\"apiVersion\":\"argoproj.io/v1alpha1\",\"kind\":\"Workflow\",\"status\":{\"phase\":7}}}", "malformed Workflow"),
            (b"\xff\xfe", "not valid UTF-8"),
        ];
        for (line, want) in cases {
            let err = decode(line).expect_err("must fail").to_string();
            assert!(err.contains(want), "{err:?} should mention {want:?}");
        }
        assert!(matches!(decode(b"  "), Ok(None)));
        assert!(matches!(
            decode(br#"{"type":"BOOKMARK","object":{"kind":"Workflow"}}"#),
            Ok(None)
        ));
    }
}
