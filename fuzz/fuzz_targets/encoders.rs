//! The encoders: arbitrary text in every field an event carries (names, messages, the run and
//! pipeline names, labels, annotations) and arbitrary encoder settings (type and source
//! prefixes, data size limit, UI links, `K_CE_OVERRIDES`), a run that fails with a retried task,
//! each fact's event through every binding, checked against each other
//! (`kfp_event_bridge_fuzz::check_bindings`). A setting the bridge refuses at start is skipped,
//! as the bridge would not start with it.
#![no_main]
use arbitrary::Arbitrary;
use kfp_event_bridge::derive::{DeriveConfig, Deriver};
use kfp_event_bridge::encode::{self, EncodeConfig, Links};
use kfp_event_bridge::source::recording;
use libfuzzer_sys::fuzz_target;
use serde_json::json;

#[derive(Arbitrary, Debug)]
struct Input {
    workflow: String,
    namespace: String,
    task: String,
    message: String,
    run_name: String,
    pipeline: String,
    run_id: String,
    trace_id: Option<String>,
    type_prefix: Option<String>,
    source_prefix: Option<String>,
    max_data_bytes: Option<u16>,
    kfp_ui: Option<String>,
    argo_ui: Option<String>,
    overrides: Option<String>,
}

fuzz_target!(|input: Input| {
    let mut config = EncodeConfig::default();
    if let Some(prefix) = input.type_prefix {
        config.type_prefix = prefix;
    }
    if let Some(prefix) = input.source_prefix {
        config.source_prefix = prefix;
    }
    if let Some(max) = input.max_data_bytes {
        config.max_data_bytes = usize::from(max);
    }
    let Ok(links) = Links::new(input.kfp_ui.as_deref(), input.argo_ui.as_deref()) else {
        return;
    };
    config.links = links;
    if let Some(overrides) = &input.overrides {
        let Ok(with) = config.clone().with_ce_overrides(overrides) else {
            return;
        };
        config = with;
    }
    if config.validate().is_err() {
        return;
    }
    let wf = &input.workflow;
    let task = &input.task;
    let mut annotations = json!({
        "pipelines.kubeflow.org/run_name": input.run_name,
        "pipelines.kubeflow.org/pipeline_spec": json!({"name": input.pipeline}).to_string(),
    });
    if let Some(trace) = &input.trace_id {
        annotations["workflows.argoproj.io/trace-id"] = json!(trace);
    }
    let nodes = json!({
        wf.clone(): {"id": wf, "name": wf, "displayName": wf, "type": "DAG", "phase": "Failed",
                     "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:03:00Z",
                     "children": [format!("{wf}-1")]},
        format!("{wf}-1"): {"id": format!("{wf}-1"), "name": format!("{wf}.{task}"), "displayName": task,
                            "type": "Retry", "phase": "Failed", "boundaryID": wf,
                            "startedAt": "2026-01-01T00:00:01Z", "finishedAt": "2026-01-01T00:02:59Z",
                            "children": [format!("{wf}-2"), format!("{wf}-3")]},
        format!("{wf}-2"): {"id": format!("{wf}-2"), "name": format!("{wf}.{task}(0)"), "displayName": format!("{task}(0)"),
                            "type": "Pod", "phase": "Failed", "boundaryID": wf, "message": input.message,
                            "startedAt": "2026-01-01T00:00:01Z", "finishedAt": "2026-01-01T00:01:00Z"},
        format!("{wf}-3"): {"id": format!("{wf}-3"), "name": format!("{wf}.{task}(1)"), "displayName": format!("{task}(1)"),
                            "type": "Pod", "phase": "Pending", "boundaryID": wf, "message": format!("ImagePullBackOff: {}", input.message),
                            "startedAt": "2026-01-01T00:01:01Z"},
    });
    let line = json!({
        "type": "ADDED",
        "object": {
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
            "metadata": {"name": wf, "namespace": input.namespace, "uid": "00000000-0000-4000-8000-0000000e0c0d",
                         "creationTimestamp": "2026-01-01T00:00:00Z",
                         "labels": {"pipeline/runid": input.run_id}, "annotations": annotations},
            "status": {"phase": "Running", "startedAt": "2026-01-01T00:00:00Z", "message": input.message, "nodes": nodes},
        },
    });
    let mut ended = line.clone();
    ended["type"] = json!("MODIFIED");
    ended["object"]["status"]["phase"] = json!("Failed");
    ended["object"]["status"]["finishedAt"] = json!("2026-01-01T00:03:00Z");
    let mut deriver = Deriver::new(DeriveConfig::default());
    for line in [line, ended] {
        let bytes = serde_json::to_vec(&line).expect("JSON");
        let Ok(Some(observed)) = recording::decode(&bytes) else {
            continue;
        };
        for fact in deriver.observe(&observed) {
            if let Ok(event) = encode::encode(&fact, &config) {
                kfp_event_bridge_fuzz::check_bindings(&event);
            }
        }
    }
});
