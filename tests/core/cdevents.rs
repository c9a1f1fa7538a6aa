//! CDEvents output (`format=cdevents`), through the binary as a user runs it: every event of
//! every bundled recording is read back strictly by the `cdevents-sdk` types (unknown fields
//! rejected; what it reads serializes back to the same JSON) or, for the custom events, has
//! exactly the members of the shipped schema; the CloudEvents binding's attributes; the mapping
//! per fact kind (types, outcomes, errors, names, each run and task attempt its own subject);
//! deterministic ids; the format chosen per sink, in the config file and by the global default.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_kfp-event-bridge");

fn recordings() -> Vec<std::path::PathBuf> {
    crate::support::all_recording_files()
}

/// `replay FILE ARGS…`, as parsed events.
fn replay(file: &std::path::Path, args: &[&str]) -> Vec<Value> {
    let file = file.to_str().expect("utf-8 path");
    let mut all = vec!["--log", "error", "replay", file];
    all.extend(args);
    crate::support::bridge::json_lines(&all, None)
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

fn schema(name: &str) -> Value {
    let path = format!(
        "{}/schemas/cdevents/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("schema")).expect("JSON")
}

/// The members a custom event's schema allows, object by object, must be the members it has;
/// `const`s and `required`s hold.
fn assert_fits(value: &Value, schema: &Value, at: &str) {
    if let Some(props) = schema["properties"].as_object() {
        let allowed: BTreeSet<&str> = props.keys().map(String::as_str).collect();
        let required: BTreeSet<&str> = schema["required"]
            .as_array()
            .map(|r| r.iter().map(|k| k.as_str().unwrap()).collect())
            .unwrap_or_default();
        let have = keys(value);
        assert!(
            have.is_subset(&allowed),
            "{at}: members beyond the schema: {:?}",
            have.difference(&allowed).collect::<Vec<_>>()
        );
        assert!(
            required.is_subset(&have),
            "{at}: required members missing: {:?}",
            required.difference(&have).collect::<Vec<_>>()
        );
        for (key, sub) in props {
            if let Some(v) = value.get(key) {
                assert_fits(v, sub, &format!("{at}.{key}"));
            }
        }
    }
    if let Some(c) = schema.get("const") {
        assert_eq!(value, c, "{at}");
    }
    if let Some(e) = schema["enum"].as_array() {
        assert!(e.contains(value), "{at}: {value} not in {e:?}");
    }
    match schema["type"].as_str() {
        Some("string") => assert!(value.is_string(), "{at}: not a string"),
        Some("boolean") => assert!(value.is_boolean(), "{at}: not a boolean"),
        _ => {}
    }
}

fn is_absolute_uri(text: &str) -> bool {
    text.split_once(':').is_some_and(|(scheme, rest)| {
        !rest.is_empty()
            && scheme
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    }) && !text.contains(['[', ']', ' '])
}

#[test]
fn every_cdevent_reads_back_strictly_and_carries_the_binding() {
    let mut types = BTreeSet::new();
    let mut count = 0;
    for file in recordings() {
        let ours = replay(&file, &[]);
        let cd = replay(&file, &["--format", "cdevents"]);
        assert_eq!(ours.len(), cd.len(), "{file:?}: one CDEvent per event");
        for (event, source_event) in cd.iter().zip(&ours) {
            count += 1;
            let ty = event["type"].as_str().unwrap();
            types.insert(ty.to_owned());
            let data = &event["data"];
            let context = &data["context"];
            // The binding: the CloudEvent's attributes are the CDEvent's.
            assert_eq!(event["specversion"], "1.0");
            assert_eq!(event["id"], context["id"]);
            assert_eq!(event["source"], context["source"]);
            assert_eq!(event["type"], context["type"]);
            assert_eq!(event["time"], context["timestamp"]);
            assert_eq!(event["subject"], data["subject"]["id"]);
            assert_eq!(event["datacontenttype"], "application/json");
            assert_eq!(context["specversion"], "0.5.1");
            // Routing keeps working: the bridge's extensions ride along.
            for ext in ["namespace", "workflow", "partitionkey"] {
                assert_eq!(event[ext], source_event[ext], "{ext}");
            }
            assert_ne!(
                event["id"], source_event["id"],
                "a CDEvent is an event of its own"
            );
            let content = &data["subject"]["content"];
            assert!(
                is_absolute_uri(content["uri"].as_str().unwrap()),
                "{file:?}: uri {}",
                content["uri"]
            );
            if ty.starts_with("dev.cdevents.") {
                let schema = event["dataschema"].as_str().unwrap();
                assert!(schema.starts_with("https://cdevents.dev/0.5.1/schema/"));
                // Strictly typed: the SDK refuses unknown members, and what it read writes back
                // the same (the SDK writes 0.5.x contexts as "0.5.0": its own default).
                let sdk: cdevents_sdk::CDEvent = serde_json::from_value(data.clone())
                    .unwrap_or_else(|e| panic!("{file:?}: the SDK refuses {ty}: {e}\n{data}"));
                let mut back = serde_json::to_value(&sdk).expect("serializes");
                back["context"]["specversion"] = Value::from("0.5.1");
                assert_eq!(&back, data, "{file:?}: {ty} changed through the SDK");
                assert_eq!(sdk.ty(), ty);
                assert_eq!(sdk.id().to_string(), event["id"].as_str().unwrap());
                // And through the SDK's CloudEvents conversion.
                let ce: cloudevents::Event =
                    serde_json::from_value(event.clone()).expect("a CloudEvent");
                let from_ce = cdevents_sdk::CDEvent::try_from(ce).expect("SDK reads the event");
                assert_eq!(from_ce, sdk);
            } else {
                let name = ty
                    .strip_prefix("dev.cdeventsx.")
                    .and_then(|t| t.strip_suffix(".0.1.0"))
                    .unwrap()
                    .replace('.', "-");
                let schema = schema(&name);
                assert_eq!(event["dataschema"], schema["$id"]);
                assert_eq!(context["schemaUri"], schema["$id"]);
                assert_fits(data, &schema, &name);
            }
        }
    }
    assert!(count > 200, "{count} events");
    let want: BTreeSet<String> = [
        "dev.cdevents.pipelinerun.queued.0.3.0",
        "dev.cdevents.pipelinerun.started.0.3.0",
        "dev.cdevents.pipelinerun.finished.0.3.0",
        "dev.cdevents.taskrun.started.0.3.0",
        "dev.cdevents.taskrun.finished.0.3.0",
        "dev.cdeventsx.kfp-taskrun.skipped.0.1.0",
        "dev.cdeventsx.kfp-taskrun.warned.0.1.0",
    ]
    .map(String::from)
    .into();
    assert_eq!(types, want, "the recordings exercise every type");
}

#[test]
fn facts_map_to_cdevents_field_by_field() {
    let mut outcomes = BTreeMap::new();
    for file in recordings() {
        let ours = replay(&file, &["--kfp-ui-url", "https://kfp.example.com/pipeline"]);
        let cd = replay(
            &file,
            &[
                "--kfp-ui-url",
                "https://kfp.example.com/pipeline",
                "--format",
                "cdevents",
            ],
        );
        for (ce, source) in cd.iter().zip(&ours) {
            let short = source["type"]
                .as_str()
                .unwrap()
                .rsplitn(3, '.')
                .take(2)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join(".");
            let d = &source["data"];
            let content = &ce["data"]["subject"]["content"];
            let expected_type = match short.as_str() {
                "run.queued" => "dev.cdevents.pipelinerun.queued.0.3.0",
                "run.started" => "dev.cdevents.pipelinerun.started.0.3.0",
                "run.succeeded" | "run.failed" => "dev.cdevents.pipelinerun.finished.0.3.0",
                "task.started" => "dev.cdevents.taskrun.started.0.3.0",
                "task.succeeded" | "task.failed" => "dev.cdevents.taskrun.finished.0.3.0",
                "task.skipped" => "dev.cdeventsx.kfp-taskrun.skipped.0.1.0",
                "task.warning" => "dev.cdeventsx.kfp-taskrun.warned.0.1.0",
                other => panic!("unexpected {other}"),
            };
            assert_eq!(ce["type"], expected_type);
            assert_eq!(ce["time"], source["time"], "the cluster's time");
            // Each run attempt is its own pipelineRun.
            let mut run_id = format!(
                "{}/{}",
                d["Namespace"].as_str().unwrap(),
                d["WorkflowName"].as_str().unwrap()
            );
            if let Some(n) = d["RunAttempt"].as_u64() {
                run_id.push_str(&format!("#{n}"));
            }
            if short.starts_with("run.") {
                assert_eq!(ce["subject"], run_id.as_str());
                let name = d["PipelineName"].as_str().or(d["WorkflowName"].as_str());
                assert_eq!(content["pipelineName"].as_str(), name);
                if !d["KfpRunId"].as_str().unwrap().is_empty() {
                    assert_eq!(content["uri"], d["RunUrl"], "the run's page");
                }
            } else {
                assert_eq!(content["pipelineRun"]["id"], run_id.as_str());
                assert_eq!(content["pipelineRun"]["source"], source["source"]);
                let subject = ce["subject"].as_str().unwrap();
                assert!(subject.starts_with(&format!("{run_id}/")), "{subject}");
                match d["Attempt"].as_u64() {
                    Some(n) if n > 0 => assert!(subject.ends_with(&format!("({n})"))),
                    _ => assert!(!subject.ends_with(')') || subject.contains("[")),
                }
                let name = d["TaskName"].as_str().or(d["NodeName"].as_str());
                assert_eq!(content["taskName"].as_str(), name);
            }
            if short.ends_with("succeeded") || short.ends_with("failed") {
                let outcome = content["outcome"].as_str().unwrap();
                let reason = d["FailureReason"].as_str().unwrap_or("");
                let expected = if short.ends_with("succeeded") {
                    "success"
                } else if matches!(reason, "Terminated" | "Stopped") {
                    "cancel"
                } else if d["Phase"] == "Error" {
                    "error"
                } else {
                    "failure"
                };
                assert_eq!(outcome, expected, "{short} {d}");
                *outcomes.entry(outcome.to_owned()).or_insert(0) += 1;
                if outcome == "success" {
                    assert!(content.get("errors").is_none());
                } else {
                    let errors = content["errors"].as_str().unwrap();
                    assert!(!errors.is_empty());
                    if let Some(m) = d["Message"].as_str().filter(|m| !m.is_empty()) {
                        assert_eq!(errors, m, "errors is the failure message");
                    }
                }
            }
        }
    }
    for outcome in ["success", "failure", "cancel"] {
        assert!(
            outcomes.contains_key(outcome),
            "no {outcome} in the recordings: {outcomes:?}"
        );
    }
}

#[test]
fn cdevent_ids_are_deterministic_and_one_per_event() {
    // The bridge's event id → the CDEvent's, over every recording: a function (the same fact,
    // the same CDEvent id) and one-to-one (distinct facts, distinct CDEvents).
    let mut by_source: BTreeMap<String, String> = BTreeMap::new();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for file in recordings() {
        let ours = replay(&file, &[]);
        let first = replay(&file, &["--format", "cdevents"]);
        let again = replay(&file, &["--format", "cdevents"]);
        assert_eq!(first, again, "{file:?}: the same CDEvents, byte for byte");
        for (source, cd) in ours.iter().zip(&first) {
            let (from, to) = (
                source["id"].as_str().unwrap().to_owned(),
                cd["id"].as_str().unwrap().to_owned(),
            );
            assert_eq!(
                by_source.entry(from.clone()).or_insert_with(|| to.clone()),
                &to
            );
            assert_eq!(seen.entry(to).or_insert_with(|| from.clone()), &from);
        }
    }
}

#[test]
fn the_format_is_chosen_per_sink_in_the_config_file_and_by_default() {
    let dir = std::env::temp_dir().join(format!("kfp-cdevents-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = &recordings()[0];
    let read = |name: &str| -> Vec<Value> {
        std::fs::read_to_string(dir.join(name))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let is_cd = |events: &[Value]| {
        !events.is_empty()
            && events
                .iter()
                .all(|e| e["type"].as_str().unwrap().starts_with("dev.cdevents"))
    };
    let is_ours = |events: &[Value]| {
        !events.is_empty()
            && events.iter().all(|e| {
                e["type"]
                    .as_str()
                    .unwrap()
                    .starts_with("org.kubeflow.pipelines.")
            })
    };
    let sink = |name: &str, query: &str| format!("file:{}{query}", dir.join(name).display());
    let config = dir.join("bridge.yaml");
    std::fs::write(
        &config,
        format!(
            "sinks:\n  - uri: {}\n    format: cdevents\n    types: [\"task.failed\"]\n",
            sink("file-cd.jsonl", "")
        ),
    )
    .unwrap();
    let config_arg = config.display().to_string();
    replay(
        file,
        &[
            "--sink",
            &sink("plain.jsonl", ""),
            "--sink",
            &sink("cd.jsonl", "?format=cdevents"),
            "--config",
            &config_arg,
        ],
    );
    assert!(is_ours(&read("plain.jsonl")));
    assert!(is_cd(&read("cd.jsonl")));
    // The filter selects on the bridge's types, before the CDEvent is made.
    let failed = read("file-cd.jsonl");
    assert!(!failed.is_empty(), "the recording has failed tasks");
    assert!(
        failed
            .iter()
            .all(|e| e["type"] == "dev.cdevents.taskrun.finished.0.3.0"
                && e["data"]["subject"]["content"]["outcome"] != "success")
    );
    // The global default, with a sink that keeps the bridge's events.
    replay(
        file,
        &[
            "--format",
            "cdevents",
            "--sink",
            &sink("default-cd.jsonl", ""),
            "--sink",
            &sink("kept.jsonl", "?format=cloudevents"),
        ],
    );
    assert!(is_cd(&read("default-cd.jsonl")));
    assert!(is_ours(&read("kept.jsonl")));
    // An unknown format is refused, naming it.
    for args in [
        vec!["--sink", "stdout?format=cdevent"],
        vec!["--format", "xml"],
    ] {
        let out = Command::new(BIN)
            .args(["replay", "x.jsonl"])
            .args(&args)
            .env_clear()
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("cloudevents, cdevents"), "{stderr}");
    }
    // The dead-letter sink keeps refused events as they were refused: no format of its own.
    let out = Command::new(BIN)
        .args([
            "replay",
            "x.jsonl",
            "--dead-letter",
            "file:/tmp/dead.jsonl?format=cdevents",
        ])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dead-letter: takes no format"));
    std::fs::remove_dir_all(&dir).ok();
}

/// A bridge event nothing dates (a run known only from its Kubernetes Events, its start never
/// seen) cannot be a CDEvent: never sent as the bridge's own to a CDEvents sink, said in the log,
/// counted as not delivered (replay's exit code 4).
#[test]
fn an_undatable_event_is_not_sent_to_a_cdevents_sink_and_is_said() {
    let recording = crate::support::recordings_dir().join("offloaded-and-deleted-workflows.jsonl");
    let text = std::fs::read_to_string(&recording).unwrap();
    // The deleted workflow's Events only (lines 18 to 23: no Workflow object, no WorkflowRunning).
    let lines: Vec<&str> = text.lines().skip(17).take(6).collect();
    assert!(
        lines.iter().all(|l| l.contains("\"kind\":\"Event\"")),
        "{lines:?}"
    );
    let input = lines.join("\n") + "\n";
    let mut child = Command::new(BIN)
        .args(["--log", "warn", "replay", "-", "--format", "cdevents"])
        .env_clear()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(!stdout.is_empty());
    for line in stdout.lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        assert!(
            e["type"].as_str().unwrap().starts_with("dev.cdevents."),
            "a non-CDEvent reached the CDEvents sink: {e}"
        );
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("event not sent as a CDEvent"), "{stderr}");
    assert_eq!(out.status.code(), Some(4), "not delivered: {stderr}");
}

/// A CDEvent is an event of its own: in a traced run, it names a span of its own in Argo's trace.
#[test]
fn a_cdevent_names_its_own_span_in_the_runs_trace() {
    let recording = crate::support::recordings_dir().join("kfp-v2-success.jsonl");
    let mut input = String::new();
    for line in std::fs::read_to_string(&recording).unwrap().lines() {
        let mut v: Value = serde_json::from_str(line).unwrap();
        if v["object"]["kind"] == "Workflow" {
            v["object"]["metadata"]["annotations"]["workflows.argoproj.io/trace-id"] =
                "4bf92f3577b34da6a3ce929d0e0e4736".into();
        }
        input.push_str(&v.to_string());
        input.push('\n');
    }
    let traced = std::env::temp_dir().join(format!("kfp-traced-{}.jsonl", std::process::id()));
    std::fs::write(&traced, input).unwrap();
    let ours = replay(&traced, &[]);
    let cd = replay(&traced, &["--format", "cdevents"]);
    for (a, b) in ours.iter().zip(&cd) {
        let (pa, pb) = (
            a["traceparent"].as_str().unwrap(),
            b["traceparent"].as_str().unwrap(),
        );
        assert_eq!(pa.split('-').nth(1), pb.split('-').nth(1), "the same trace");
        assert_ne!(
            pa.split('-').nth(2),
            pb.split('-').nth(2),
            "a span of its own"
        );
        let id = b["id"].as_str().unwrap().replace('-', "");
        assert_eq!(pb.split('-').nth(2).unwrap(), &id[..16]);
    }
    std::fs::remove_file(&traced).ok();
}
