//! Properties every bundled recording must have, checked on the events themselves (independent of
//! the golden files): one terminal per run and attempt, causal order, stable unique ids, no
//! re-emission on a second pass, and the KEP-12843 warnings where they belong.

use crate::support;

use kfp_event_bridge::derive::{DeriveConfig, Deriver};
use serde_json::Value;
use std::collections::{HashMap, HashSet};

fn events(path: &std::path::Path) -> Vec<Value> {
    support::replay_file(path)
        .iter()
        .map(|l| serde_json::from_str(l).expect("valid JSON"))
        .collect()
}

fn kind(ev: &Value) -> &str {
    ev["type"]
        .as_str()
        .and_then(|t| t.strip_prefix("org.kubeflow.pipelines."))
        .expect("type with default prefix")
}

#[test]
fn one_terminal_per_run_and_attempt_in_causal_order() {
    for path in support::all_recording_files() {
        let name = path.display();
        let events = events(&path);
        assert!(!events.is_empty(), "{name}: no events");
        // Per run attempt (source + RunAttempt): started first, terminal exactly once and last.
        let mut runs: HashMap<String, Vec<&str>> = HashMap::new();
        // Per task attempt (run attempt + NodeId): the sequence of task kinds.
        let mut attempts: HashMap<(String, String), Vec<&str>> = HashMap::new();
        // Per run, the run attempts in the order their events come: one after the other.
        let mut order: HashMap<String, Vec<u64>> = HashMap::new();
        for ev in &events {
            let run_attempt = ev["data"]["RunAttempt"].as_u64().unwrap_or(1);
            let run = ev["source"].as_str().expect("source").to_owned();
            let seen = order.entry(run.clone()).or_default();
            if seen.last() != Some(&run_attempt) {
                seen.push(run_attempt);
            }
            let source = format!("{run}#{run_attempt}");
            let k = kind(ev);
            runs.entry(source.clone()).or_default().push(k);
            if k.starts_with("task.") {
                let node = ev["data"]["NodeId"]
                    .as_str()
                    .expect("task events carry NodeId")
                    .to_owned();
                attempts.entry((source, node)).or_default().push(k);
            }
        }
        for (run, seen) in &order {
            let expected: Vec<u64> = (1..=seen.len() as u64).collect();
            assert_eq!(
                seen, &expected,
                "{name}: {run}'s attempts interleave or skip"
            );
        }
        for (run, kinds) in &runs {
            let terminals = kinds
                .iter()
                .filter(|k| matches!(**k, "run.succeeded" | "run.failed"))
                .count();
            assert_eq!(
                terminals, 1,
                "{name}: {run} has {terminals} run-terminal events: {kinds:?}"
            );
            // The first attempt is queued first (once; a run known only from its Events is
            // not), then started; later attempts start.
            let queued = kinds.iter().filter(|k| **k == "run.queued").count();
            let first_attempt = run.ends_with("#1");
            assert!(
                queued <= usize::from(first_attempt),
                "{name}: {run} queued {queued} times: {kinds:?}"
            );
            let start = queued;
            if queued == 1 {
                assert_eq!(kinds.first(), Some(&"run.queued"), "{name}: {run}");
            }
            assert_eq!(
                kinds.get(start),
                Some(&"run.started"),
                "{name}: {run} does not start with run.started"
            );
            assert!(
                kinds
                    .last()
                    .is_some_and(|k| k.starts_with("run.") && *k != "run.started"),
                "{name}: {run} does not end with its terminal"
            );
        }
        for (attempt, kinds) in &attempts {
            let started = kinds.iter().filter(|k| **k == "task.started").count();
            let terminal: Vec<_> = kinds
                .iter()
                .filter(|k| matches!(**k, "task.succeeded" | "task.failed" | "task.skipped"))
                .collect();
            assert!(started <= 1, "{name}: {attempt:?} started {started} times");
            // Every bundled run ends, so every attempt ended.
            assert_eq!(
                terminal.len(),
                1,
                "{name}: {attempt:?} has terminals {terminal:?}"
            );
            let rank = |k: &str| match k {
                "task.started" => 0,
                "task.warning" => 1,
                _ => 2,
            };
            assert!(
                kinds.windows(2).all(|w| rank(w[0]) <= rank(w[1])),
                "{name}: {attempt:?} out of order: {kinds:?}"
            );
            if *terminal[0] == "task.skipped" {
                assert_eq!(started, 0, "{name}: skipped {attempt:?} never started");
            } else {
                assert_eq!(
                    kinds[0], "task.started",
                    "{name}: {attempt:?} does not start with task.started"
                );
            }
        }
    }
}

#[test]
fn ids_are_unique_and_identical_across_runs() {
    let mut all = HashSet::new();
    for path in support::all_recording_files() {
        let first = events(&path);
        let second = events(&path);
        assert_eq!(
            first,
            second,
            "{}: output differs between two replays",
            path.display()
        );
        for ev in &first {
            let key = (
                ev["source"].as_str().expect("source").to_owned(),
                ev["id"].as_str().expect("id").to_owned(),
            );
            assert!(all.insert(key.clone()), "duplicate source+id {key:?}");
        }
    }
}

#[test]
fn replaying_twice_in_one_process_emits_nothing_new() {
    for path in support::all_recording_files() {
        let input = std::fs::read(&path).expect("recording");
        let mut deriver = Deriver::new(DeriveConfig::default());
        let (_, first) = support::replay_bytes(&input, &mut deriver);
        let (counts, second) = support::replay_bytes(&input, &mut deriver);
        assert!(!first.is_empty());
        assert!(
            second.is_empty(),
            "{}: second pass emitted {second:?}",
            path.display()
        );
        assert!(counts.lines > 0);
    }
}

#[test]
fn lifecycle_warnings_where_they_belong() {
    let mut seen = HashMap::new();
    for path in support::recordings() {
        for ev in events(&path) {
            if kind(&ev) != "task.warning" {
                continue;
            }
            let lifecycle = &ev["data"]["Lifecycle"];
            let message = lifecycle["Message"].as_str().expect("Lifecycle.Message");
            assert!(
                !["PodInitializing", "ContainerCreating"].contains(&message),
                "warning for {message}"
            );
            let file = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            seen.insert(
                file,
                (lifecycle["Category"].clone(), lifecycle["Terminal"].clone()),
            );
        }
    }
    let pull = &seen["kfp-v2-imagepull-terminated.jsonl"];
    assert_eq!(
        (pull.0.as_str(), pull.1.as_bool()),
        (Some("ImagePull"), Some(true))
    );
    let sched = &seen["kfp-v2-unschedulable-then-scheduled.jsonl"];
    assert_eq!(
        (sched.0.as_str(), sched.1.as_bool()),
        (Some("Scheduling"), Some(false))
    );
    assert_eq!(seen.len(), 2, "unexpected warnings in {seen:?}");
}

#[test]
fn kfp_only_skips_plain_argo_workflows_and_their_events() {
    let config = DeriveConfig {
        kfp_only: true,
        ..DeriveConfig::default()
    };
    let plain = support::recordings_dir().join("argo-steps-retry-skip.jsonl");
    let input = std::fs::read(&plain).expect("recording");
    let (counts, lines) = support::replay_bytes(&input, &mut Deriver::new(config.clone()));
    assert!(counts.lines > 0);
    assert!(
        lines.is_empty(),
        "plain Argo facts with --kfp-only: {lines:?}"
    );
    let kfp = support::recordings_dir().join("kfp-v2-success.jsonl");
    let input = std::fs::read(&kfp).expect("recording");
    let (_, lines) = support::replay_bytes(&input, &mut Deriver::new(config));
    assert_eq!(lines, support::replay_file(&kfp), "KFP runs unaffected");
}

/// A retried run's first attempt gives the ids it gave before retries were known: those of the
/// recording cut at the first attempt's end, replayed alone.
#[test]
fn a_first_attempt_keeps_the_ids_of_a_run_never_retried() {
    for path in support::retry_recordings() {
        let text = std::fs::read_to_string(&path).expect("recording");
        let lines: Vec<&str> = text.lines().collect();
        let end = lines
            .iter()
            .position(|l| {
                let v: Value = serde_json::from_str(l).expect("json");
                v["object"]["kind"] == "Workflow"
                    && matches!(
                        v["object"]["status"]["phase"].as_str(),
                        Some("Succeeded" | "Failed" | "Error")
                    )
            })
            .expect("the first attempt ends");
        let cut = lines[..=end].join("\n") + "\n";
        let mut deriver = Deriver::new(DeriveConfig::default());
        let (_, alone) = support::replay_bytes(cut.as_bytes(), &mut deriver);
        let alone: Vec<String> = alone
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).expect("event")["id"].to_string())
            .collect();
        let first: Vec<String> = events(&path)
            .iter()
            .filter(|e| e["data"].get("RunAttempt").is_none())
            .map(|e| e["id"].to_string())
            .collect();
        assert!(!alone.is_empty());
        assert_eq!(first, alone, "{}", path.display());
    }
}

/// Live, an offloaded workflow's task facts come from its Events, held until its status is seen.
/// When the Event watch lists first (a restart), they still go out with what the status says of
/// the run (the KFP run id, pipeline), as they do when the status comes first: a fact re-sent
/// after a restart is the same event.
#[test]
fn held_event_facts_carry_the_status_run_whichever_watch_came_first() {
    let path = support::recordings_dir().join("offloaded-and-deleted-workflows.jsonl");
    let text = std::fs::read_to_string(path).expect("recording");
    let lines: Vec<&str> = text.lines().collect();
    let is_event_of = |l: &str, name: &str| {
        let v: Value = serde_json::from_str(l).expect("json");
        v["object"]["kind"] == "Event" && v["object"]["involvedObject"]["name"] == name
    };
    let offloaded = "big-sweep-9f3kd";
    let (events, rest): (Vec<&str>, Vec<&str>) =
        lines.iter().partition(|l| is_event_of(l, offloaded));
    let config = DeriveConfig {
        defer_event_facts: true,
        ..DeriveConfig::default()
    };
    let run = |order: Vec<&str>| -> Vec<Value> {
        let input = order.join("\n") + "\n";
        let mut deriver = Deriver::new(config.clone());
        support::replay_bytes(input.as_bytes(), &mut deriver)
            .1
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).expect("event"))
            .filter(|e| e["data"]["WorkflowName"] == offloaded)
            .collect()
    };
    let events_first = run(events.iter().chain(&rest).copied().collect());
    assert!(events_first.iter().any(|e| {
        e["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("task.succeeded"))
    }));
    for e in &events_first {
        assert_eq!(
            e["data"]["KfpRunId"], "b1a2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
            "{e}"
        );
    }
}

#[test]
fn a_subject_names_one_task_instance() {
    // Loop iterations, tasks of nested pipelines and sub-DAGs, and tasks of the same key in
    // different groups share names; their subjects must not: within one run attempt, one
    // subject and task attempt number belong to one node.
    let mut nested = 0;
    for path in support::all_recording_files() {
        let name = path.display();
        let mut nodes: HashMap<(String, u64, u64), HashSet<String>> = HashMap::new();
        for ev in events(&path) {
            let Some(node) = ev["data"]["NodeId"].as_str() else {
                continue;
            };
            let subject = ev["subject"].as_str().expect("subject").to_owned();
            let task = subject.rsplit('/').next().unwrap_or_default();
            if task.contains('.') && !task.ends_with(".onExit") && !task.contains(".hooks.") {
                nested += 1;
            }
            let run_attempt = ev["data"]["RunAttempt"].as_u64().unwrap_or(1);
            let attempt = ev["data"]["Attempt"].as_u64().unwrap_or(0);
            nodes
                .entry((subject, run_attempt, attempt))
                .or_default()
                .insert(node.to_owned());
        }
        for ((subject, run_attempt, attempt), ids) in nodes {
            assert_eq!(
                ids.len(),
                1,
                "{name}: {subject} (run attempt {run_attempt}, attempt {attempt}) names {ids:?}"
            );
        }
    }
    assert!(nested > 0, "some recording has tasks inside groups");
}

/// `run.queued`: once per run that has a Workflow object, for its first attempt only, at the
/// Workflow's `creationTimestamp`, Pending and not started — and the same event whether the watch
/// saw the Workflow first or its Kubernetes Events (live, the two watches race; a replay of the
/// final states after a restart lists the Events first), so neither order loses or adds one.
#[test]
fn a_run_is_queued_once_at_its_creation_whichever_object_came_first() {
    let (mut checked, mut reordered) = (0, 0);
    for path in support::all_recording_files() {
        let name = path.display();
        let text = std::fs::read_to_string(&path).expect("recording");
        let lines: Vec<&str> = text.lines().collect();
        let parsed: Vec<Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        // Each Workflow's creation time, by namespace/name.
        let mut created: HashMap<String, String> = HashMap::new();
        for v in &parsed {
            let o = &v["object"];
            if o["kind"] == "Workflow"
                && let Some(t) = o["metadata"]["creationTimestamp"].as_str()
            {
                let key = format!(
                    "{}/{}",
                    o["metadata"]["namespace"].as_str().unwrap_or(""),
                    o["metadata"]["name"].as_str().unwrap_or("")
                );
                created.insert(key, t.to_owned());
            }
        }
        let queued = |order: Vec<&str>| -> Vec<Value> {
            let input = order.join("\n") + "\n";
            let mut deriver = Deriver::new(DeriveConfig::default());
            support::replay_bytes(input.as_bytes(), &mut deriver)
                .1
                .iter()
                .map(|l| serde_json::from_str::<Value>(l).expect("event"))
                .filter(|e| kind(e) == "run.queued")
                .collect()
        };
        let as_recorded = queued(lines.clone());
        let is_event = |v: &Value| v["object"]["kind"] == "Event";
        let pick = |event: bool| -> Vec<&str> {
            lines
                .iter()
                .zip(&parsed)
                .filter(|(_, v)| is_event(v) == event)
                .map(|(l, _)| *l)
                .collect()
        };
        let (events, rest) = (pick(true), pick(false));
        reordered += usize::from(!events.is_empty());
        let events_first = queued(events.iter().chain(&rest).copied().collect());
        let mut subjects = HashSet::new();
        for e in &as_recorded {
            let subject = e["subject"].as_str().expect("subject");
            assert!(subjects.insert(subject), "{name}: {subject} queued twice");
            assert_eq!(
                e["time"].as_str(),
                created.get(subject).map(|t| t.as_str()),
                "{name}: {subject} queued at its creation"
            );
            assert_eq!(e["data"]["Phase"], "Pending", "{name}: {e}");
            assert_eq!(e["data"]["EventType"], "WorkflowPending", "{name}: {e}");
            assert!(e["data"].get("StartedAt").is_none(), "{name}: {e}");
            assert!(e["data"].get("RunAttempt").is_none(), "{name}: {e}");
        }
        // Every Workflow is queued (a run known only from its Events has no creation time).
        let mut workflows: Vec<&String> = created.keys().collect();
        workflows.sort();
        let mut got: Vec<&str> = subjects.iter().copied().collect();
        got.sort();
        assert_eq!(
            got,
            workflows.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "{name}"
        );
        assert_eq!(as_recorded, events_first, "{name}: Events first");
        checked += as_recorded.len();
    }
    assert!(checked >= 30, "{checked} queued runs");
    assert!(reordered >= 10, "{reordered} recordings with Events");
}

/// A bridge started again with its checkpoint missing a fact (a stop timed out before every sink
/// acknowledged it) derives it from a later state of the workflow. It may carry more detail
/// then (a pod name that appeared since), but it must say the same thing: the same attributes,
/// and the same task, attempt, phase, failure and whether a retry follows. Each workflow line of
/// each recording is read alone by a fresh deriver (a restart listing the cluster at that
/// moment); every event it shares an id with the full replay must agree with it.
/// What an event says, without the detail a later state may add.
fn meaning(ev: &Value) -> Value {
    let mut out = ev.clone();
    let data = out
        .as_object_mut()
        .and_then(|o| {
            // A KFP v2 task's start may be read from its driver first, its executor later.
            o.remove("time");
            o.remove("data")
        })
        .unwrap_or_default();
    for key in [
        "TaskName",
        "NodeId",
        "Attempt",
        "RunAttempt",
        "Phase",
        "FailureReason",
        "ExitCode",
        "RetryFollows",
    ] {
        out[key] = data.get(key).cloned().unwrap_or_default();
    }
    out
}

#[test]
fn an_event_derived_again_from_a_later_state_is_the_same_event() {
    let mut compared = 0;
    for path in support::all_recording_files() {
        let name = path.display();
        let full: HashMap<String, String> = support::replay_file(&path)
            .into_iter()
            .map(|l| {
                let ev: Value = serde_json::from_str(&l).expect("valid JSON");
                (ev["id"].as_str().expect("id").to_owned(), l)
            })
            .collect();
        let text = std::fs::read_to_string(&path).expect("recording");
        for (n, line) in text.lines().enumerate() {
            let value: Value = serde_json::from_str(line).expect("line");
            let object = value.get("object").unwrap_or(&value);
            if object["kind"] != "Workflow" {
                continue;
            }
            let mut deriver = Deriver::new(DeriveConfig::default());
            let (_, again) = support::replay_bytes(format!("{line}\n").as_bytes(), &mut deriver);
            for l in again {
                let ev: Value = serde_json::from_str(&l).expect("valid JSON");
                let id = ev["id"].as_str().expect("id");
                if let Some(first) = full.get(id) {
                    compared += 1;
                    let first: Value = serde_json::from_str(first).expect("valid JSON");
                    assert_eq!(
                        meaning(&ev),
                        meaning(&first),
                        "{name} line {}: {id} derived again says something else",
                        n + 1
                    );
                }
            }
        }
    }
    assert!(compared > 100, "only {compared} events compared");
}
