//! Run links and trace context, through the binary as a user runs it: `--kfp-ui-url` gives every
//! event of a KFP run `RunUrl`, the run's details page in KFP's UI; `--argo-ui-url` gives other
//! workflows theirs in Argo's UI and task events `TaskUrl`, the node's page; without the flags
//! neither appears. A Workflow carrying Argo's `workflows.argoproj.io/trace-id` gives every event
//! of its run a W3C `traceparent`; without it (or with a malformed one) there is none.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_kfp-event-bridge");
const KFP: &str = "https://kubeflow.example.com/pipeline";
const ARGO: &str = "https://argo.example.com";

fn recording(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/examples/recordings/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("recording")
}

/// `replay -` of `input` with `args`, as parsed events.
fn replay(input: &[u8], args: &[&str]) -> Vec<Value> {
    let mut all = vec!["--log", "warn", "replay", "-"];
    all.extend(args);
    crate::support::bridge::json_lines(&all, Some(input))
}

fn is_task(event: &Value) -> bool {
    event["type"].as_str().unwrap().contains(".task.")
}

#[test]
fn kfp_runs_link_to_their_page_in_kfps_ui() {
    for name in [
        "kfp-v2-success.jsonl",
        "kfp-v1-success.jsonl",
        "kfp-v2-recurring-run.jsonl",
    ] {
        let events = replay(&recording(name), &["--kfp-ui-url", &format!("{KFP}/")]);
        assert!(!events.is_empty());
        for event in &events {
            let run_id = event["data"]["KfpRunId"].as_str().unwrap();
            assert!(!run_id.is_empty(), "{name}: a KFP run");
            assert_eq!(
                event["data"]["RunUrl"],
                format!("{KFP}/#/runs/details/{run_id}"),
                "{name}: {event}"
            );
            assert!(event["data"].get("TaskUrl").is_none(), "{name}: {event}");
        }
        // Without the flag, no link at all: the events are today's, byte for byte.
        for event in replay(&recording(name), &[]) {
            assert!(event["data"].get("RunUrl").is_none());
            assert!(event["data"].get("TaskUrl").is_none());
        }
    }
}

#[test]
fn argo_workflows_link_to_argos_ui_and_tasks_to_their_node() {
    let input = recording("argo-steps-retry-skip.jsonl");
    // A plain Argo workflow has no page in KFP's UI.
    for event in replay(&input, &["--kfp-ui-url", KFP]) {
        assert!(event["data"].get("RunUrl").is_none(), "{event}");
    }
    let events = replay(&input, &["--kfp-ui-url", KFP, "--argo-ui-url", ARGO]);
    let mut tasks = 0;
    for event in &events {
        let data = &event["data"];
        let page = format!(
            "{ARGO}/workflows/{}/{}",
            data["Namespace"].as_str().unwrap(),
            data["WorkflowName"].as_str().unwrap()
        );
        assert_eq!(data["RunUrl"], page.as_str(), "{event}");
        if is_task(event) {
            tasks += 1;
            assert_eq!(
                data["TaskUrl"],
                format!("{page}?nodeId={}", data["NodeId"].as_str().unwrap()),
                "{event}"
            );
        } else {
            assert!(data.get("TaskUrl").is_none());
        }
    }
    assert!(tasks > 0);
    // With both UIs, a KFP run links to KFP's page and its tasks to Argo's node pages.
    for event in replay(
        &recording("kfp-v2-success.jsonl"),
        &["--kfp-ui-url", KFP, "--argo-ui-url", ARGO],
    ) {
        let data = &event["data"];
        assert!(data["RunUrl"].as_str().unwrap().starts_with(KFP));
        assert_eq!(data.get("TaskUrl").is_some(), is_task(&event), "{event}");
    }
}

#[test]
fn ui_addresses_that_are_not_absolute_http_urls_are_refused() {
    for (flag, value) in [
        ("--kfp-ui-url", "kubeflow.example.com/pipeline"),
        ("--kfp-ui-url", "ftp://kubeflow.example.com"),
        ("--argo-ui-url", "/argo"),
    ] {
        let out = Command::new(BIN)
            .args(["replay", "x.jsonl", flag, value])
            .env_clear()
            .output()
            .expect("binary runs");
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(flag) && stderr.contains("absolute http or https URL"),
            "{stderr}"
        );
    }
}

/// The recording with `annotation` set on every Workflow object it holds.
fn with_trace_annotation(input: &[u8], annotation: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for line in String::from_utf8(input.to_vec()).unwrap().lines() {
        let mut value: Value = serde_json::from_str(line).unwrap();
        if value["object"]["kind"] == "Workflow" {
            let metadata = value["object"]["metadata"].as_object_mut().unwrap();
            let annotations = metadata
                .entry("annotations")
                .or_insert_with(|| Value::Object(Default::default()));
            annotations.as_object_mut().unwrap().insert(
                "workflows.argoproj.io/trace-id".into(),
                Value::String(annotation.into()),
            );
        }
        out.extend(serde_json::to_vec(&value).unwrap());
        out.push(b'\n');
    }
    out
}

#[test]
fn a_traced_workflows_events_carry_a_w3c_traceparent() {
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    for name in ["kfp-v2-success.jsonl", "argo-steps-retry-skip.jsonl"] {
        let input = with_trace_annotation(&recording(name), trace);
        let events = replay(&input, &[]);
        assert!(!events.is_empty());
        let mut spans = BTreeMap::new();
        for event in &events {
            let parent = event["traceparent"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: no traceparent: {event}"));
            let parts: Vec<&str> = parent.split('-').collect();
            assert_eq!(parts.len(), 4, "{parent}");
            assert_eq!(parts[0], "00", "version");
            assert_eq!(parts[1], trace, "Argo's trace id");
            assert_eq!(parts[2].len(), 16, "span id: 8 bytes");
            assert!(
                parts[2]
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
            assert_ne!(
                parts[2], "0000000000000000",
                "an all-zero span id is invalid"
            );
            assert_eq!(parts[3], "01", "sampled");
            spans.insert(
                event["id"].as_str().unwrap().to_owned(),
                parts[2].to_owned(),
            );
        }
        // One span per event, the same on every replay (a re-send names the same span).
        let distinct: BTreeSet<_> = spans.values().collect();
        assert_eq!(distinct.len(), spans.len(), "{name}: span ids repeat");
        for event in replay(&input, &[]) {
            let id = event["id"].as_str().unwrap();
            assert!(event["traceparent"].as_str().unwrap().contains(&spans[id]));
        }
        // The annotation adds nothing else: without the extension, the events are today's.
        let plain = replay(&recording(name), &[]);
        let stripped: Vec<Value> = events
            .iter()
            .cloned()
            .map(|mut e| {
                e.as_object_mut().unwrap().remove("traceparent");
                e
            })
            .collect();
        assert_eq!(stripped, plain, "{name}");
        assert!(plain.iter().all(|e| e.get("traceparent").is_none()));
    }
    // A malformed trace id (not 32 lower-case hex digits, or all zero) gives none.
    for bad in [
        "00000000000000000000000000000000",
        "4BF92F3577B34DA6A3CE929D0E0E4736",
        "4bf92f3577b34da6",
        "not-a-trace-id",
    ] {
        let input = with_trace_annotation(&recording("kfp-v2-success.jsonl"), bad);
        for event in replay(&input, &[]) {
            assert!(event.get("traceparent").is_none(), "{bad}: {event}");
        }
    }
}

#[test]
fn ui_addresses_keep_their_path_and_query_and_links_are_urls() {
    let input = recording("kfp-v2-success.jsonl");
    let first = |args: &[&str]| replay(&input, args).remove(0);
    // The central dashboard's form: the namespace query stays before KFP's route.
    let e = first(&["--kfp-ui-url", "https://h/_/pipeline/?ns=kubeflow-user"]);
    let id = e["data"]["KfpRunId"].as_str().unwrap().to_owned();
    assert_eq!(
        e["data"]["RunUrl"],
        format!("https://h/_/pipeline/?ns=kubeflow-user#/runs/details/{id}")
    );
    // Normalized as URLs: scheme and host lower-case, a space percent-encoded, a bare "#/" kept
    // as the route's place.
    for (given, want) in [
        ("HTTPS://KF.Example.com", "https://kf.example.com/"),
        ("https://h/pipe line", "https://h/pipe%20line/"),
        ("https://h/#/", "https://h/"),
    ] {
        let e = first(&["--kfp-ui-url", given]);
        assert_eq!(
            e["data"]["RunUrl"],
            format!("{want}#/runs/details/{id}"),
            "{given}"
        );
    }
    // Argo's page under a base path, its query kept, the node added to it.
    let argo = replay(
        &recording("argo-steps-retry-skip.jsonl"),
        &["--argo-ui-url", "https://argo.example.com/base/?x=1"],
    );
    let task = argo.iter().find(|e| is_task(e)).unwrap();
    let page = format!(
        "https://argo.example.com/base/workflows/{}/{}?x=1",
        task["data"]["Namespace"].as_str().unwrap(),
        task["data"]["WorkflowName"].as_str().unwrap()
    );
    assert_eq!(task["data"]["RunUrl"], page.as_str());
    assert_eq!(
        task["data"]["TaskUrl"],
        format!("{page}&nodeId={}", task["data"]["NodeId"].as_str().unwrap())
    );
    // Credentials would be in every event, a fragment is KFP's route: refused, the password not
    // echoed.
    for (value, why) in [
        ("https://user:hunter2@h/", "holds credentials"),
        ("https://h/#/runs", "has a fragment"),
    ] {
        let out = Command::new(BIN)
            .args(["replay", "x.jsonl", "--kfp-ui-url", value])
            .env_clear()
            .output()
            .expect("binary runs");
        assert_eq!(out.status.code(), Some(2), "{value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(why), "{stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
}
