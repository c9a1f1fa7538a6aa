//! Garbage in never panics: property tests over the line decoder, the derivation and the encoder
//! with random bytes, mutated real recordings and random node trees (dangling children, cycles,
//! unknown types and phases, broken timestamps, compressedNodes that are not gzip).

use crate::support;

use kfp_event_bridge::derive::{DeriveConfig, Deriver, NodeEvents};
use kfp_event_bridge::encode::{self, EncodeConfig};
use kfp_event_bridge::source::recording;
use proptest::prelude::*;
use serde_json::json;

fn feed(deriver: &mut Deriver, line: &[u8]) {
    if let Ok(Some(observed)) = recording::decode(line) {
        for fact in deriver.observe(&observed) {
            let event =
                encode::encode(&fact, &EncodeConfig::default()).expect("facts always encode");
            let bytes = sink_core::structured::to_vec(&event);
            serde_json::from_slice::<serde_json::Value>(&bytes).expect("events are valid JSON");
        }
    }
}

fn real_lines() -> Vec<Vec<u8>> {
    support::recordings()
        .iter()
        .flat_map(|p| {
            std::fs::read(p)
                .expect("recording")
                .split(|b| *b == b'\n')
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>()
        })
        .filter(|l| !l.is_empty())
        .collect()
}

fn phase() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("Pending"),
        Just("Running"),
        Just("Succeeded"),
        Just("Failed"),
        Just("Error"),
        Just("Skipped"),
        Just("Omitted"),
        Just(""),
        Just("Weird")
    ]
    .prop_map(str::to_owned)
}

fn node_type() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("Pod"),
        Just("DAG"),
        Just("Retry"),
        Just("Skipped"),
        Just("Steps"),
        Just("StepGroup"),
        Just("")
    ]
    .prop_map(str::to_owned)
}

fn template() -> impl Strategy<Value = String> {
    let known = prop::sample::select(vec![
        "system-container-executor",
        "retry-system-container-executor",
        "system-container-impl",
        "system-container-driver",
        "system-dag-driver",
        "root",
        "echo",
    ]);
    prop_oneof![known.prop_map(str::to_owned), ".{0,12}"]
}

fn message() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("ImagePullBackOff: Back-off pulling image \"x\"".to_owned()),
        Just("Unschedulable: 0/1 nodes".to_owned()),
        Just("PodInitializing".to_owned()),
        Just(String::new()),
        ".{0,40}"
    ]
}

fn timestamp() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(json!("2026-03-14T09:00:00Z")),
        Just(json!("2026-03-14T08:59:59Z")),
        Just(json!("not a time")),
        Just(json!(null)),
        Just(json!("9999-12-31T23:59:59Z"))
    ]
}

/// A random workflow: `n` nodes whose children point anywhere (including themselves and ids that
/// do not exist).
fn workflow() -> impl Strategy<Value = serde_json::Value> {
    let node = (
        node_type(),
        phase(),
        template(),
        message(),
        timestamp(),
        timestamp(),
        prop::collection::vec(0usize..12, 0..4),
        ".{0,8}",
    );
    (prop::collection::vec(node, 0..12), phase(), any::<bool>(), any::<bool>(), ".{0,20}").prop_map(
        |(nodes, wf_phase, kfp, offloaded, compressed)| {
            let mut map = serde_json::Map::new();
            for (i, (typ, phase, template, message, started, finished, children, display)) in nodes.iter().enumerate() {
                let id = format!("wf-{i}");
                map.insert(
                    id.clone(),
                    json!({
                        "id": if i % 5 == 4 { String::new() } else { id.clone() },
                        "name": format!("wf.root.{display}.executor"),
                        "displayName": format!("{display}({i})"),
                        "type": typ, "phase": phase, "templateName": template, "message": message,
                        "startedAt": started, "finishedAt": finished,
                        "children": children.iter().map(|c| format!("wf-{c}")).collect::<Vec<_>>(),
                        "boundaryID": "wf-1",
                        "outputs": {"exitCode": if i % 2 == 0 { json!("137") } else { json!("x") }},
                    }),
                );
            }
            let mut status = json!({"phase": wf_phase, "startedAt": "2026-03-14T09:00:00Z", "nodes": map});
            if offloaded {
                status["nodes"] = json!({});
                status["offloadNodeStatusVersion"] = json!("fnv:1");
                status["compressedNodes"] = json!(compressed);
            }
            let labels = if kfp { json!({"pipeline/runid": "r"}) } else { json!({}) };
            json!({"type": "MODIFIED", "object": {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
                "metadata": {"name": "wf", "namespace": "ns", "uid": "u1", "labels": labels},
                "spec": {"templates": [{"name": "echo", "container": {}}, {"name": "root", "dag": {"tasks": [{"name": "root-driver", "arguments": {"parameters": [{"name": "runtime-config", "value": "{\"parameterValues\":[1]}"}]}}]}}]},
                "status": status}})
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(lines in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..8)) {
        let mut deriver = Deriver::new(DeriveConfig::default());
        for line in &lines {
            feed(&mut deriver, line);
        }
    }

    #[test]
    fn mutated_recordings_never_panic(picks in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..10)) {
        let lines = real_lines();
        let mut deriver = Deriver::new(DeriveConfig { node_events: NodeEvents::All, kfp_only: false, ..DeriveConfig::default() });
        for (line, at, byte, how) in picks {
            let mut line = line.get(&lines).clone();
            let at = at.index(line.len().max(1)).min(line.len());
            match how {
                0 => line.truncate(at),
                1 => { if at < line.len() { line[at] = byte; } }
                2 => line.splice(at..at, [b'"', byte, b'}']).for_each(drop),
                _ => line.drain(at..line.len().min(at + 40)).for_each(drop),
            }
            feed(&mut deriver, &line);
        }
    }

    #[test]
    fn random_node_trees_never_panic_and_never_repeat_a_fact(wfs in prop::collection::vec(workflow(), 1..5), all in any::<bool>()) {
        let mode = if all { NodeEvents::All } else { NodeEvents::Tasks };
        let mut deriver = Deriver::new(DeriveConfig { node_events: mode, kfp_only: false, ..DeriveConfig::default() });
        let mut ids = std::collections::HashSet::new();
        for wf in &wfs {
            let line = serde_json::to_vec(wf).expect("json");
            let observed = recording::decode(&line).expect("decodes").expect("a workflow");
            for fact in deriver.observe(&observed) {
                let event = encode::encode(&fact, &EncodeConfig::default()).expect("encodes");
                prop_assert!(ids.insert(event.id().to_owned()), "fact derived twice: {:?}", fact.key());
            }
        }
    }
}

use cloudevents::AttributesReader;

#[test]
fn absurd_sizes_are_refused_not_buffered() {
    let huge = vec![b'{'; recording::MAX_LINE_BYTES + 1];
    assert!(matches!(
        recording::decode(&huge),
        Err(recording::DecodeError::TooLong)
    ));
}
